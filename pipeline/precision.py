"""The training step's arithmetic precision: ``--compute_dtype`` (auto, float32, bfloat16).

With bfloat16 the convolutions and dense layers of the coupling nets, encoder, decoder and
discriminator compute in bfloat16 (Keras's ``mixed_bfloat16`` policy) while variables,
optimizer state, the flow's affine maps and log-determinants and every loss stay float32
(:mod:`tfp_models.networks`). Everything that reports a number is float32: the validation
curve and sample grids of a bfloat16 run use a float32 twin of the model whose weights are
copied from the trained one (:func:`float32_view`), and ``pipeline.evaluate``,
``serving.export`` and ``score`` build float32 models from the same checkpoints (the
variables are float32 either way).

``auto`` picks bfloat16 only on CPUs with bfloat16 instructions (:data:`BF16_ISA` in
/proc/cpuinfo), where oneDNN's bfloat16 matmul and convolution peaks were measured 1.9x and
1.7x the float32 ones (issue #23's AVX-512 BF16 AMD Zen 4: 363 vs 192 and 344 vs 202
GFLOP/s; a 2-core AVX-512 BF16 AMD EPYC, benchmarks/results/bench_step_speed_avx512_bf16.txt:
379 vs 195 and 340 vs 122). On that EPYC the 3x3 CIFAR training step ran 1.37x faster in
bfloat16 and the quickstart step 1.16x; the whole quickstart did not (8.4 vs 7.9 min), so
configs/quickstart.cfg pins float32. Elsewhere float32: on AVX2 CPUs bfloat16 is emulated
(on the development VM benchmarks/bench_step_speed.py measured bf16 peaks of 99 / 121
against fp32 113 / 109 GFLOP/s, no gain), and GPUs are not measured here.

Quality: trained 3,000 steps in bfloat16 on the EPYC, the quickstart model met every
quickstart target (IW 1.684 bits/dim, T=0 FID 3.79; experiments/results/quickstart_bf16.md;
float32 on the same CPU: 1.728, 4.02), and its flow inverts in float32 at float32 accuracy
(experiments/results/bf16_check.md, which also compares three seeds of each dtype).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from artifacts import machine_info
from pipeline.train_config import COMPUTE_DTYPES
from pipeline.train_step import device_kind

BF16_ISA = ("avx512_bf16", "amx_bf16")  # CPU extensions with bfloat16 dot products


def default_compute_dtype(strategy: tf.distribute.Strategy,
                          isa: list[str] | None = None) -> str:
    """'bfloat16' when every device of ``strategy`` is a CPU with one of :data:`BF16_ISA`
    (from /proc/cpuinfo unless ``isa`` is given), else 'float32'."""
    if device_kind(strategy) != "CPU":
        return "float32"
    isa = machine_info.cpu_isa() if isa is None else isa
    return "bfloat16" if any(flag in isa for flag in BF16_ISA) else "float32"


def resolve_compute_dtype(choice: str, strategy: tf.distribute.Strategy) -> str:
    """The compute dtype ``--compute_dtype=choice`` means on ``strategy``'s devices."""
    if choice not in COMPUTE_DTYPES:
        raise ValueError(f"--compute_dtype={choice!r}: expected one of {COMPUTE_DTYPES}")
    return default_compute_dtype(strategy) if choice == "auto" else choice


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Assigns every weight of ``source`` to the same-position weight of ``target`` (two
    models built from one config; their weight lists match in order, shape and dtype)."""
    pairs = list(zip(source.weights, target.weights, strict=True))
    for a, b in pairs:
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
            raise ValueError(f"weights differ: {a.path} {a.shape} {a.dtype} vs "
                             f"{b.path} {b.shape} {b.dtype}")
    for a, b in pairs:
        b.assign(a)


def float32_view(model: keras.Model, twin: keras.Model | None) -> keras.Model:
    """The model to measure or sample with: ``model`` itself when it computes in float32
    (``twin`` None), else ``twin`` (a float32 model of the same config) with ``model``'s
    current weights copied into it."""
    if twin is None:
        return model
    copy_weights(model, twin)
    return twin
