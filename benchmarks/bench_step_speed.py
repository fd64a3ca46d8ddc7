"""Benchmark: FLOPs, time and utilisation of one training step: XLA vs oneDNN (no XLA),
separate vs fused network calls.

    python benchmarks/bench_step_speed.py [--configs quickstart,cifar10_cpu,cifar10_cpu_k3] \
        [--block_steps 8] [--repeats 4] [--out benchmarks/results/bench_step_speed.txt]

For each configuration the minimal step of ``benchmarks/bench_train_step.py`` (the
trainer's losses and updates, nothing else) is built four times on the same model:

- ``xla_separate``: XLA (``jit_compile=True``) and separate decoder and discriminator calls
  (the default before 2026-12-06: the baseline every ratio is against);
- ``onednn_separate``: no XLA (oneDNN's kernels), separate calls (today's CPU default:
  ``pipeline.train_step.DEFAULT_JIT_BY_DEVICE`` and ``FUSED_CALLS``);
- ``onednn_fused``: no XLA, one decoder call for the posterior's and the prior's latents and
  one discriminator call for real and fake (``tfp_models.objective.Objective`` with
  ``fused=True``);
- ``xla_fused``: XLA with the fused calls;
- with ``--bf16``, ``onednn_separate_bf16`` and ``xla_separate_bf16``: the separate-call
  steps of a model computing in bfloat16 (``--compute_dtype=bfloat16``,
  :mod:`pipeline.precision`) holding the same weights.
- with ``--checkerboard_baseline``, ``onednn_separate_whole1x1`` and
  ``xla_separate_whole1x1``: the separate-call steps traced with
  ``tfp_models.flows.steps.CONSTANT_1X1_CHECKERBOARD = False``, i.e. the 1x1 checkerboard
  couplings' nets evaluated on the whole image instead of on one zero pixel (the same
  values: ``tests/test_flow_checkerboard_1x1.py``). ``xla_separate_whole1x1`` is the
  trainer's default step when the training-speed issue was filed (the original default),
  and every other variant's speed-up over it is printed, today's default for the
  configuration on this CPU marked (``pipeline.train_step.cpu_default_jit_compile`` or the
  config's ``--jit_compile``, separate calls, the shortcut, and bfloat16 where the config's
  ``--compute_dtype`` means it on this CPU: ``pipeline.precision``).

All run on the same pre-made batches (the input pipeline is not timed), in interleaved
blocks of ``--block_steps`` steps (the order rotates every repeat); medians of the per-step
times and of the per-block ratios are printed, so each change is also measured on its own
(XLA: ``onednn_separate`` vs ``xla_separate``; fusion: ``onednn_fused`` vs
``onednn_separate``).

FLOPs per step: TF's registered op statistics over the traced step's graph
(``tf.compat.v1.profiler``, float operations; ops without statistics count 0). Peaks are
measured in the same run: a 2048^2 matmul and a 64->64-channel 3x3 convolution at batch 64
on 32x32 (oneDNN), in float32 and in bfloat16. Utilisation = GFLOP/s of the step / peak.

Configurations: ``quickstart`` (configs/quickstart.cfg on MNIST), ``cifar10_cpu``
(configs/cifar10_cpu.cfg), ``cifar10_cpu_k3`` (the same with 3x3 couplings over two scales:
the CIFAR step the training-speed issue measured). The 1-minute load average at the start
and end is printed: compare ratios only from an idle machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402
from bench_train_step import minimal_step_fn  # noqa: E402
from report import emit_report  # noqa: E402
from step_flops import profiler_total  # noqa: E402

from beam_jobs.preprocess import run_preprocess  # noqa: E402
from pipeline import config_flags, precision, train_step  # noqa: E402
from pipeline import data as data_lib  # noqa: E402
from pipeline.trainer import make_train_dataset, model_config_for_data  # noqa: E402
from tfp_models import flows  # noqa: E402
from tfp_models.flows import steps as flow_steps  # noqa: E402
from tfp_models.hybrid import HybridModel  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
CONFIGS = {
    "quickstart": ("quickstart.cfg", "mnist", []),
    "cifar10_cpu": ("cifar10_cpu.cfg", "cifar", []),
    "cifar10_cpu_k3": ("cifar10_cpu.cfg", "cifar", ["--flow_kernel_size=3", "--flow_scales=2"]),
}


def make_data(kind: str, tmp: str) -> str:
    """A small real data set of the configuration's kind (MNIST digits, CIFAR-10 images)."""
    out = os.path.join(tmp, kind)
    if kind == "mnist":
        run_preprocess("mnist_idx", os.path.join(SHARED, "mnist_test"), out, 28, grayscale=True)
    else:
        run_preprocess("image_zip", os.path.join(SHARED, "cifar10_test_jpg",
                                                 "cifar10_test_jpg.zip"), out, 32)
    return out


def _time(fn, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def peaks() -> dict[str, float]:
    """GFLOP/s of a 2048^2 matmul and a 64->64 3x3 conv (batch 64, 32x32), fp32 and bf16."""
    out = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.cast(tf.random.normal((2048, 2048)), dtype)
        mm = tf.function(lambda: tf.matmul(a, a))
        out[f"matmul {dtype.name}"] = 2 * 2048 ** 3 / _time(lambda: mm().numpy(), 5) / 1e9
        x = tf.cast(tf.random.normal((64, 32, 32, 64)), dtype)
        k = tf.cast(tf.random.normal((3, 3, 64, 64)), dtype)
        conv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
        flops = 2 * 64 * 32 * 32 * 9 * 64 * 64
        out[f"conv {dtype.name}"] = flops / _time(lambda: conv().numpy(), 5) / 1e9
    return out


# name: (jit_compile, one_pass); the first is the baseline of every ratio.
STEP_VARIANTS = {"xla_separate": (True, False), "onednn_separate": (False, False),
                 "onednn_fused": (False, True), "xla_fused": (True, True)}
BASELINE, DEFAULT = "xla_separate", "onednn_fused"
ORIGINAL_DEFAULT = "xla_separate_whole1x1"  # the trainer's step when the speed issue was filed


def todays_default(cfg) -> str:
    """The variant the trainer runs today on this CPU for ``cfg`` (a TrainConfig): XLA as
    the config pins it or :func:`pipeline.train_step.cpu_default_jit_compile` decides,
    separate calls (``FUSED_CALLS``), the 1x1-checkerboard shortcut, and bfloat16 (``_bf16``)
    when the config's ``--compute_dtype`` means it on this CPU
    (:func:`pipeline.precision.resolve_compute_dtype`)."""
    jit = train_step.cpu_jit_compile(cfg)
    assert not train_step.FUSED_CALLS, "today's default would be a fused variant"
    dtype = precision.resolve_compute_dtype(cfg.compute_dtype, tf.distribute.get_strategy())
    return ("xla_separate" if jit else "onednn_separate") + (
        "_bf16" if dtype == "bfloat16" else "")


def build(name: str, data_dir: str, tmp: str, n_batches: int, bf16: bool = False,
          checkerboard_baseline: bool = False, only: str | None = None):
    """(model config, train config, {variant: minimal step}, pre-made batches); with
    ``bf16`` also the separate-call steps of a bfloat16 copy of the model, with
    ``checkerboard_baseline`` the separate-call steps traced with whole-image 1x1
    checkerboard couplings (``*_whole1x1``); ``only``: just that variant (any of these
    names), or ``"default"`` for :func:`todays_default`. The bfloat16 steps are built too
    when today's default is one of them and ``checkerboard_baseline`` or ``only`` asks
    for it."""
    cfg_file, _, extra = CONFIGS[name]
    fv = flags.FlagValues()
    config_flags.define_train_flags(fv)
    fv(["bench", f"--flagfile={os.path.join(ROOT, 'configs', cfg_file)}",
        f"--data_dir={data_dir}", f"--model_dir={os.path.join(tmp, name)}", *extra])
    model_values, cfg = config_flags.train_configs_from_flags(fv)
    info = data_lib.read_dataset_info(data_dir)
    model_config = model_config_for_data(model_values, cfg, info)
    keras.utils.set_random_seed(cfg.seed)
    model = HybridModel(model_config)
    batches = []
    for batch in make_train_dataset(info, cfg, 0, model.noise_shapes()).take(n_batches):
        batches.append(batch)
    model.data_init(flows.dequantize_images(batches[0]["images"], batches[0]["dequant"]),
                    batches[0].get("prior"))
    variants = {v: (model,) + choice for v, choice in STEP_VARIANTS.items()}
    default = todays_default(cfg)
    only = default if only == "default" else only
    if bf16 or "_bf16" in (only or "") or (checkerboard_baseline and "_bf16" in default):
        model_bf16 = HybridModel(model_config, compute_dtype="bfloat16")
        precision.copy_weights(model, model_bf16)
        variants.update({f"{v}_bf16": (model_bf16,) + STEP_VARIANTS[v]
                         for v in ("onednn_separate", "xla_separate")})
    whole1x1 = {"onednn_separate_whole1x1": False, "xla_separate_whole1x1": True}  # jit
    if only is not None:
        variants = {only: variants[only]} if only in variants else {}
        whole1x1 = {only: whole1x1[only]} if only in whole1x1 else {}
        if not variants and not whole1x1:
            raise SystemExit(f"unknown step variant {only!r}")
    elif not checkerboard_baseline:
        whole1x1 = {}

    def new_step(step_model, jit: bool, one_pass: bool):  # fresh optimizers per variant
        g_opt = keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.adam_beta1)
        d_opt = keras.optimizers.Adam(cfg.disc_learning_rate, beta_1=cfg.disc_adam_beta1,
                                      beta_2=cfg.disc_adam_beta2)
        return minimal_step_fn(step_model, dataclasses.replace(cfg, jit_compile=jit), g_opt,
                               d_opt, one_pass=one_pass)

    steps = {variant: new_step(*choice) for variant, choice in variants.items()}
    for variant, jit in whole1x1.items():
        step = new_step(model, jit, False)
        flow_steps.CONSTANT_1X1_CHECKERBOARD = False  # read when the step is traced: now
        try:
            step.get_concrete_function(batches[0])
        finally:
            flow_steps.CONSTANT_1X1_CHECKERBOARD = True
        steps[variant] = step
    return model_config, cfg, steps, batches


def time_block(step, batches: list, n: int) -> list[float]:
    """Seconds of each of ``n`` consecutive calls of ``step`` on the batches in turn (each
    waits for its result)."""
    stamps = [time.perf_counter()]
    for i in range(n):
        float(step(batches[i % len(batches)]))
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def time_interleaved(steps: dict, batches: list, repeats: int, block_steps: int):
    """Per-step times {variant: [s]} and per-repeat block medians {variant: [s]}; the
    variants' blocks alternate and their order rotates every repeat."""
    names = list(steps)
    times = {v: [] for v in names}
    blocks = {v: [] for v in names}
    for r in range(repeats):
        for v in names[r % len(names):] + names[:r % len(names)]:
            block = time_block(steps[v], batches, block_steps)
            times[v].extend(block)
            blocks[v].append(statistics.median(block))
    return times, blocks


def ratio_line(blocks: dict, times: dict, slow: str, fast: str) -> str:
    """Time of ``slow`` / time of ``fast`` (> 1: ``fast`` is faster), by medians and by the
    median of the per-repeat ratios."""
    pairs = [a / b for a, b in zip(blocks[slow], blocks[fast])]
    return (f"  speed-up of {fast} over {slow}: "
            f"{statistics.median(times[slow]) / statistics.median(times[fast]):.3f}x (medians); "
            f"median of per-repeat ratios {statistics.median(pairs):.3f}x")


def break_even_line(first_call: dict, times: dict, plain: str, jit: str) -> str:
    """The first calls (trace, XLA's compile, one step) of ``plain`` and ``jit`` and the
    run length from which ``jit``'s faster steps repay its longer first call (if they do)."""
    extra = first_call[jit] - first_call[plain]
    saving = statistics.median(times[plain]) - statistics.median(times[jit])
    verdict = (f"XLA pays from {extra / saving:.0f} steps on" if saving > 0 and extra > 0
               else "XLA never pays" if saving <= 0 else "XLA pays from the first step")
    return (f"  first call (trace + compile + 1 step): {jit} {first_call[jit]:.1f} s, {plain} "
            f"{first_call[plain]:.1f} s; {verdict}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--block_steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--out", default="")
    p.add_argument("--bf16", action="store_true",
                   help="also time the separate-call steps computing in bfloat16")
    p.add_argument("--checkerboard_baseline", action="store_true",
                   help="also time the default step with whole-image 1x1 checkerboard nets")
    args = p.parse_args()
    names = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; expected some of {sorted(CONFIGS)}")
    tmp = tempfile.mkdtemp(prefix="bench_step_speed_")
    loads = [os.getloadavg()[0]]
    peak = peaks()
    lines = ["peaks (GFLOP/s, median of 5): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())]
    data = {}
    for name in names:
        kind = CONFIGS[name][1]
        if kind not in data:
            data[kind] = make_data(kind, tmp)
        model_config, cfg, steps, batches = build(name, data[kind], tmp, 8, args.bf16,
                                                  args.checkerboard_baseline)
        flops = profiler_total(steps[DEFAULT].get_concrete_function(batches[0]).graph)
        first_call = {}  # trace (+ XLA compile) and one step, seconds
        for v, step in steps.items():  # compile every variant before timing
            start = time.perf_counter()
            float(step(batches[0]))
            first_call[v] = time.perf_counter() - start
            float(step(batches[1]))
        times, blocks = time_interleaved(steps, batches, args.repeats, args.block_steps)
        loads.append(os.getloadavg()[0])
        gflops = flops / 1e9
        first_line = len(lines)
        lines.append(f"{name} ({CONFIGS[name][0]} {' '.join(CONFIGS[name][2])}; "
                     f"{model_config.variant}, batch {cfg.batch_size}): {gflops:.1f} GFLOP per step")
        for v in steps:
            sec = statistics.median(times[v])
            lines.append(
                f"  {v:16s}{sec * 1e3:8.1f} ms/step {gflops / sec:6.1f} GFLOP/s = "
                f"{100 * gflops / sec / peak['matmul float32']:.0f} % of the fp32 matmul peak, "
                f"{100 * gflops / sec / peak['conv float32']:.0f} % of fp32 conv, "
                f"{100 * gflops / sec / peak['conv bfloat16']:.0f} % of bf16 conv")
        lines += [ratio_line(blocks, times, BASELINE, v) for v in steps if v != BASELINE]
        lines += [ratio_line(blocks, times, v[:-len("_bf16")], v)
                  for v in steps if v.endswith("_bf16")]
        if args.checkerboard_baseline:  # the shortcut alone, then today's default over the original
            lines += [ratio_line(blocks, times, f"{v}_whole1x1", v)
                      for v in ("onednn_separate", "xla_separate")]
            lines += [ratio_line(blocks, times, ORIGINAL_DEFAULT, v) + (
                "  <- today's default over the original default" if v == todays_default(cfg)
                else "") for v in steps if not v.endswith("_whole1x1") and v != BASELINE]
        lines += [ratio_line(blocks, times, "onednn_separate", "onednn_fused"),
                  break_even_line(first_call, times, "onednn_separate", BASELINE),
                  f"  ({args.repeats} repeats of {args.block_steps}-step blocks per variant)"]
        print("\n".join(lines[first_line:]), flush=True)
    cpus = os.cpu_count() or 1
    lines.append(f"1-minute load average {min(loads):.2f}-{max(loads):.2f} on {cpus} CPUs: "
                 f"machine {'idle' if max(loads) < 0.25 * cpus else 'NOT idle'}")
    return emit_report(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
