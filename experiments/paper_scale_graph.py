"""The paper-scale training step of experiments/paper_scale_flops.py and its count: the step
built like ``benchmarks/bench_train_step.py``'s baseline, its graph's FLOPs from TF's op
statistics by network, direction and flow pass, the coupling nets' FLOPs by hand, and
parameter counts.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys

_BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)  # its shared helpers (never the reverse)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402
from bench_train_step import minimal_step_fn  # noqa: E402
from tensorflow.python.framework import ops as tf_ops  # noqa: E402

from pipeline import config_flags  # noqa: E402
from pipeline import data as data_lib  # noqa: E402
from pipeline.trainer import make_train_dataset, model_config_for_data  # noqa: E402
from tfp_models.hybrid import HybridModel  # noqa: E402

NETWORKS = ("flow", "encoder", "decoder", "discriminator", "other")


def network_of(op_name: str) -> str:
    """The network an op belongs to, from its (Keras name-scoped) TF op name."""
    if "coupling_net_" in op_name or "actnorm" in op_name or "feature_flow" in op_name:
        return "flow"
    if "discriminator" in op_name or "spectral_normalization" in op_name:
        return "discriminator"
    if "decoder" in op_name:
        return "decoder"
    if ("encoder" in op_name or "made_" in op_name or "masked_autoregressive" in op_name
            or "posterior" in op_name):
        return "encoder"
    return "other"


def flow_pass_of(op_name: str) -> str:
    return "f^-1(mu(z)) of the fakes" if "inverse" in op_name else "f(x) of L_MLE"


def build_step(flagfile: str, data_dir: str, batch_size: int, model_dir: str):
    """(model, model config, train config, the batch's TensorSpecs, make_step):
    ``make_step(jit_compile)`` is the minimal step as a tf.function (traced with
    ``jit_compile=True``, control flow such as spectral normalisation's cond gets
    XLA-compatible gradients; without it, TF's Optional ops that XLA cannot lower)."""
    info = data_lib.read_dataset_info(data_dir)
    fv = flags.FlagValues()
    config_flags.define_train_flags(fv)
    fv(["paper_scale_flops", f"--flagfile={flagfile}", f"--data_dir={data_dir}",
        f"--model_dir={model_dir}", f"--batch_size={batch_size}"])
    model_values, cfg = config_flags.train_configs_from_flags(fv)
    model_config = model_config_for_data(model_values, cfg, info)
    keras.utils.set_random_seed(cfg.seed)
    model = HybridModel(model_config)
    g_opt = keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.adam_beta1)
    d_opt = keras.optimizers.Adam(cfg.disc_learning_rate, beta_1=cfg.disc_adam_beta1,
                                  beta_2=cfg.disc_adam_beta2)
    g_opt.build(model.generator_variables)
    d_opt.build(model.discriminator_variables)
    element_spec = make_train_dataset(info, cfg, 0, model.noise_shapes()).element_spec
    spec = {k: tf.TensorSpec((batch_size,) + tuple(s.shape[1:]), s.dtype)
            for k, s in element_spec.items()}
    def make_step(jit_compile: bool):  # ActNorm's data init is not needed to count
        return minimal_step_fn(model, dataclasses.replace(cfg, jit_compile=jit_compile),
                               g_opt, d_opt)

    return model, model_config, cfg, spec, make_step


def graph_flops(graph: tf.Graph):
    """Per (network, 'forward'/'backward') FLOPs of ``graph``'s ops from the registered op
    statistics; flow FLOPs by pass; FLOPs by op type; ops with unknown shapes; the
    function-call and control-flow ops whose bodies the count does not enter."""
    by_net = collections.Counter()
    by_flow_pass = collections.Counter()
    by_type = collections.Counter()
    unknown, calls = collections.Counter(), collections.Counter()
    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf",
                       "While", "StatelessWhile", "Case"):
            calls[(network_of(op.name), op.type)] += 1
        try:
            flops = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except ValueError:  # a shape the statistic needs is not fully defined
            unknown[op.type] += 1
            continue
        if not flops:
            continue
        net = network_of(op.name)
        direction = "backward" if op.name.startswith("gradient_tape/") else "forward"
        by_net[(net, direction)] += flops
        by_type[op.type] += flops
        if net == "flow":
            by_flow_pass[(flow_pass_of(op.name), direction)] += flops
    return by_net, by_flow_pass, by_type, unknown, calls


def coupling_flops_by_hand(model_config) -> tuple[float, list[str]]:
    """Forward FLOPs per image of every coupling net of the multi-scale Real NVP
    (tfp_models.flows.feature_flow.build_feature_flow: per scale 3 checkerboard couplings,
    squeeze, 3 channel couplings, factor out half; 4 checkerboard couplings at the last
    scale), counting 2 H W k^2 C_in C_out per convolution (no biases); and the lines."""
    h, w, c = model_config.image_shape
    hid, blocks, k = (model_config.flow_hidden, model_config.flow_res_blocks,
                      model_config.flow_kernel_size)

    def net(hh, ww, c_in, c_out):  # in_conv, 2 convs per residual block, out_conv (s and t)
        return 2 * hh * ww * k * k * (c_in * hid + 2 * blocks * hid * hid + hid * 2 * c_out)

    total, lines = 0.0, []
    for level in range(model_config.flow_scales):
        last = level == model_config.flow_scales - 1
        n_check = 4 if last else 3
        f = n_check * net(h, w, c + 1, c)  # checkerboard: x * mask and the mask in
        lines.append(f"scale {level}: {n_check} checkerboard couplings at {h}x{w}, net "
                     f"{c + 1}->{hid}x{2 * blocks + 1}->{2 * c}: {f / 1e9:.3f} GFLOP/image")
        total += f
        if last:
            break
        h, w, c4 = h // 2, w // 2, 4 * c
        f = 3 * net(h, w, c4 // 2, c4 - c4 // 2)  # channel couplings on half the channels
        lines.append(f"scale {level}: 3 channel couplings at {h}x{w}, net {c4 // 2}->"
                     f"{hid}x{2 * blocks + 1}->{2 * (c4 - c4 // 2)}: {f / 1e9:.3f} GFLOP/image")
        total += f
        c = c4 - c4 // 2
    return total, lines


def count_params(variables) -> int:
    return int(sum(math.prod(v.shape) for v in variables))
