"""Single-pass forward_and_log_det vs TFP's forward + forward_log_det_jacobian.

Training needs y = f(x) and log|det df/dx| together. Calling TFP's two public methods
runs every coupling net twice; FeatureFlow.forward_and_log_det runs them once. This
times one training step (loss and gradients) both ways on the same batch, in the same
run, and prints the ratio.

    python benchmarks/bench_flow_single_pass.py [--batch 32] [--repeats 10]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from tfp_models import flows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    flow = flows.build_feature_flow((28, 28, 1), num_scales=2, hidden_channels=args.hidden,
                                    num_res_blocks=1)
    x = tf.random.uniform((args.batch, 28, 28, 1))
    flow.data_init(x)
    variables = flow.trainable_variables

    def loss_of(y, ldj):
        return tf.reduce_mean(0.5 * tf.reduce_sum(y ** 2, [1, 2, 3]) - ldj)

    @tf.function
    def single_pass(x):
        with tf.GradientTape() as tape:
            loss = loss_of(*flow.forward_and_log_det(x))
        return tape.gradient(loss, variables)

    @tf.function
    def two_calls(x):
        with tf.GradientTape() as tape:
            loss = loss_of(flow.forward(x), flow.forward_log_det_jacobian(x, event_ndims=3))
        return tape.gradient(loss, variables)

    timings = {}
    for name, fn in (("single_pass", single_pass), ("forward + fldj", two_calls)):
        fn(x)  # trace
        start = time.perf_counter()
        for _ in range(args.repeats):
            tf.nest.map_structure(lambda t: t.numpy(), fn(x))
        timings[name] = (time.perf_counter() - start) / args.repeats
        print(f"{name:>16}: {timings[name] * 1000:.1f} ms/step (batch {args.batch})")
    print(f"ratio (forward + fldj) / single_pass = "
          f"{timings['forward + fldj'] / timings['single_pass']:.2f}x")


if __name__ == "__main__":
    main()
