"""Benchmark: the exported SavedModel's `score` vs the in-memory tf.function.

    python benchmarks/bench_serving.py [--batch 64] [--repeats 10] [--importance_samples 1]

Builds a 28x28x1 `cqf` model of moderate size (HybridConfig defaults: latent 32, 2 flow
scales, 32 hidden channels), initialises ActNorm on real MNIST digits, writes a model
directory, exports it with serving.export (no MLflow), loads it with tf.saved_model.load
and times `score` on the same batch of real digits both ways (median of the repeats after
warm-up). Also checks that the two agree.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from artifacts import model_io
from beam_jobs.sources.mnist_idx import load_mnist
from serving import export
from serving.signatures import deterministic_score
from tfp_models import flows
from tfp_models.hybrid import HybridConfig, HybridModel


def _time(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--importance_samples", type=int, default=1)
    p.add_argument("--mnist_dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist_test"))
    args = p.parse_args()

    images, _ = load_mnist(args.mnist_dir)
    batch = tf.constant(images[:args.batch, :, :, None].astype(np.uint8))
    config = HybridConfig(variant="cqf", image_shape=(28, 28, 1))
    model = HybridModel(config)
    model.data_init(flows.dequantize_images(batch))
    n_params = sum(int(np.prod(v.shape)) for v in model.generator_variables)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        model_io.save_model_config(model_dir, config, {})
        model_io.make_checkpoint(model, tf.Variable(1, dtype=tf.int64)).write(
            os.path.join(model_dir, "ckpt-1"))
        with open(os.path.join(model_dir, "checkpoint"), "w") as f:
            f.write('model_checkpoint_path: "ckpt-1"\n')
        start = time.perf_counter()
        version_dir = export.export_model(model_dir, os.path.join(tmp, "export"), "bench",
                                          score_importance_samples=args.importance_samples,
                                          log_to_mlflow=False)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = tf.saved_model.load(version_dir)
        load_s = time.perf_counter() - start
        served = loaded.signatures["score"]
        in_memory = tf.function(lambda x: deterministic_score(model, x, args.importance_samples))

        a = served(images=batch)["log_likelihood_nats"].numpy()
        b = in_memory(batch)["log_likelihood_nats"].numpy()
        rel = float(np.max(np.abs(a - b) / np.abs(b)))
        t_saved = _time(lambda: served(images=batch)["bits_per_dim"].numpy(), args.repeats)
        t_mem = _time(lambda: in_memory(batch)["bits_per_dim"].numpy(), args.repeats)

    med_saved, med_mem = statistics.median(t_saved), statistics.median(t_mem)
    print(f"cqf 28x28x1, {n_params:,} generator parameters, batch {args.batch}, "
          f"K={args.importance_samples}, {args.repeats} repeats after 2 warm-up calls")
    print(f"export {export_s:.1f} s, tf.saved_model.load {load_s:.1f} s; "
          f"max relative difference of the scores {rel:.2e}")
    print(f"SavedModel score:        median {med_saved * 1e3:8.1f} ms  "
          f"(min {min(t_saved) * 1e3:.1f}, {args.batch / med_saved:,.0f} images/s)")
    print(f"in-memory tf.function:   median {med_mem * 1e3:8.1f} ms  "
          f"(min {min(t_mem) * 1e3:.1f}, {args.batch / med_mem:,.0f} images/s)")
    print(f"ratio SavedModel / in-memory: {med_saved / med_mem:.2f}x")


if __name__ == "__main__":
    main()
