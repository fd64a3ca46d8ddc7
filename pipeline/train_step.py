"""The compiled, distributed training step: one MLE and/or adversarial update of a
:class:`~tfp_models.hybrid.HybridModel` per global batch.

Losses are per-example sums (nats per image) divided by the global batch size, so the
replicas' gradients add up to those of the whole batch; the returned metrics are summed
over replicas the same way (per-image means of the global batch).

The losses of every variant come from the model's objective
(:class:`~tfp_models.objective.Objective`, separate network calls: see
:data:`FUSED_CALLS`); this module adds the
optimizers, the distribution strategy, the flow's own learning rate and warm-up, and metrics.
"""
from __future__ import annotations

import logging

import keras
import tensorflow as tf

from artifacts import machine_info
from pipeline.train_config import TrainConfig
from tfp_models import flows
from tfp_models.hybrid import HybridModel
from tfp_models.objective import Objective

log = logging.getLogger(__name__)


# Whether XLA compiles the training step when --jit_compile is not given, by the type of
# the strategy's devices (default_jit_compile). GPU: on, Keras' own default for fit() there
# (not measured here: no GPU on the development machine). CPU: by the CPU's vector ISA and
# the run's length, as measured on the training step (minimal step, interleaved, medians):
# - AVX-512 (the idle 2-core AMD Zen 4): oneDNN without XLA 1.12x faster for the
#   quickstart step at batch 32, 1.22x at batch 64, 1.30x for the 3x3 CIFAR step: off.
#   Re-measured on a 2-core AVX-512 BF16 AMD EPYC (benchmarks/bench_step_speed.py, nothing
#   else running, results/bench_step_speed_avx512_bf16.txt): 1.23x (quickstart) and 1.34x
#   (3x3 CIFAR step) in float32; XLA's first call 7-10 s longer; XLA never pays.
# - AVX2 only (the 2-core AMD EPYC development VM, benchmarks/bench_step_speed.py, two
#   runs with nothing else running, results/bench_step_speed.txt the second): XLA 1.13x /
#   1.03x faster for configs/cifar10_cpu.cfg and 1.24x / 1.30x for the 3x3 CIFAR step;
#   for the quickstart oneDNN 1.03x / 1.17x faster, so its config pins --nojit_compile.
#   XLA's first call (trace + compile + one step) takes 15-19 s longer (second run:
#   65.7 vs 46.7 s for cifar10_cpu.cfg, 54.2 vs 38.5 s for the 3x3 step), repaid after 556
#   and 40 steps: on, for runs of at least JIT_MIN_TRAIN_STEPS steps (tests' tiny
#   trainings stay off: 8 of them took 121 s with XLA vs 67 s without). A third run
#   (results/bench_step_speed_original_default.txt): XLA 1.27x faster for cifar10_cpu.cfg,
#   1.03x for the quickstart but 24 s longer to compile, repaid after 2,806 of its 3,000
#   steps, so the quickstart's pin stays.
DEFAULT_JIT_BY_DEVICE = {"CPU": None, "GPU": True}  # None: cpu_default_jit_compile
CPU_ISA_WITHOUT_XLA = "avx512f"  # a CPU with this extension trains faster on oneDNN alone
JIT_MIN_TRAIN_STEPS = 1000


def cpu_default_jit_compile(train_steps: int | None = None,
                            isa: list[str] | None = None) -> bool:
    """XLA on this CPU by default: only without AVX-512 (:data:`CPU_ISA_WITHOUT_XLA`, from
    /proc/cpuinfo unless ``isa`` is given) and for runs of at least
    :data:`JIT_MIN_TRAIN_STEPS` steps (``train_steps`` None: a run of unknown length, taken
    as long)."""
    isa = machine_info.cpu_isa() if isa is None else isa
    long_run = train_steps is None or train_steps >= JIT_MIN_TRAIN_STEPS
    return CPU_ISA_WITHOUT_XLA not in isa and long_run


def cpu_jit_compile(cfg: TrainConfig) -> bool:
    """Whether a run of ``cfg`` on CPUs compiles its step with XLA: its ``--jit_compile``,
    else :func:`cpu_default_jit_compile` for its length."""
    return cpu_default_jit_compile(cfg.train_steps) if cfg.jit_compile is None else cfg.jit_compile


# One decoder call for the posterior's and the prior's latents and one discriminator call
# for real and fake (Objective(fused=True)) or separate calls: the same values, measured
# (benchmarks/bench_step_speed.py, the two runs above) without XLA: fused/separate 0.99x /
# 0.90x (quickstart), 0.99x / 1.00x (cifar10_cpu.cfg), 0.91x / 1.05x (3x3 CIFAR step);
# with XLA 0.97x / 0.91x / 0.93x in the first run, 0.91x / 0.94x / 0.94x in the second:
# no consistent gain anywhere on this CPU, a loss with XLA. Separate.
FUSED_CALLS = False


# TensorFlow's thread pools for a training run on CPUs (set by pipeline.train before
# TensorFlow starts; tf.config.threading). Without XLA: one thread per op (intra-op 1) and
# as many ops at once as there are CPUs (inter-op = CPUs); the step's many small ops then
# run side by side instead of each being split across the cores. Measured with
# benchmarks/bench_threads.py (one worker process per setting, interleaved blocks, nothing
# else running) against TF's defaults (one thread per CPU in each pool): on a 2-core
# AVX-512 BF16 EPYC 1.16x for the quickstart step and 1.14x for the 3x3 CIFAR step in
# bfloat16 (results/bench_threads_avx512.txt); on the AVX2 VM 1.07x and 1.34x for the
# quickstart in two runs. With XLA TF's defaults stay: a compiled cluster is one op, which
# intra-op 1 confines to one core (0.59x for configs/cifar10_cpu.cfg on the AVX2 VM).
# TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS set by the user win.
THREAD_ENV_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def cpu_thread_pools(jit_compile: bool, cpus: int) -> tuple[int, int]:
    """(intra-op, inter-op) threads for a CPU training step on ``cpus`` CPUs: (1, cpus)
    without XLA, (0, 0) (TensorFlow's defaults) with it."""
    return (0, 0) if jit_compile else (1, max(1, cpus))


def default_jit_compile(strategy: tf.distribute.Strategy,
                        train_steps: int | None = None) -> bool:
    """:data:`DEFAULT_JIT_BY_DEVICE` for the type of the strategy's worker devices (GPU if
    any device is a GPU; unknown types: no XLA; :func:`device_kind`); CPUs:
    :func:`cpu_default_jit_compile` for a run of ``train_steps``."""
    choice = DEFAULT_JIT_BY_DEVICE.get(device_kind(strategy), False)
    return cpu_default_jit_compile(train_steps) if choice is None else choice


def device_kind(strategy: tf.distribute.Strategy) -> str:
    """'GPU' if any of the strategy's worker devices is a GPU, 'CPU' if all are CPUs, else
    the first other type. The default strategy, which names no devices, places ops on the
    first GPU if one is visible."""
    try:
        devices = list(strategy.extended.worker_devices)
    except (RuntimeError, NotImplementedError, AttributeError):  # the default strategy
        devices = []
    if not devices:
        devices = ["/device:GPU:0" if tf.config.list_logical_devices("GPU") else "/device:CPU:0"]
    kinds = {tf.DeviceSpec.from_string(d).device_type or "CPU" for d in devices}
    return "GPU" if "GPU" in kinds else ("CPU" if kinds <= {"CPU"} else sorted(kinds)[0])


def discriminator_updates(model: HybridModel, d_opt: keras.optimizers.Optimizer | None,
                          steps: int, scale: float):
    """The discriminator's side of a step, for :meth:`Objective.losses
    <tfp_models.objective.Objective.losses>`: a function that takes the per-example
    discriminator loss (a function of no arguments) and makes ``steps`` updates of D with
    ``d_opt`` on its sum times ``scale``; it returns the last loss (before its update)."""
    def update(d_losses) -> tf.Tensor:
        d_vars = model.discriminator_variables
        for _ in range(steps):
            with tf.GradientTape() as d_tape:
                d_loss = tf.reduce_sum(d_losses()) * scale
            d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
        return d_loss
    return update


class StepFunctions:
    """The compiled distributed training step of one model.

    ``step_fn(batch)`` takes a distributed batch of :func:`pipeline.train_input.make_train_dataset`
    and returns scalar metrics: 'loss' (the generator's, nats per image), 'd_loss' and
    'adv' (adversarial variants), 'nll', 'recon', 'kl', 'log_det' (variants with a
    likelihood) and 'grad_norm_<network>' (one replica only)."""

    def __init__(self, model: HybridModel, strategy: tf.distribute.Strategy, cfg: TrainConfig,
                 g_opt: keras.optimizers.Optimizer, d_opt: keras.optimizers.Optimizer | None,
                 flow_opt: keras.optimizers.Optimizer | None = None):
        self.model, self.strategy, self.cfg = model, strategy, cfg
        self.g_opt, self.d_opt, self.flow_opt = g_opt, d_opt, flow_opt
        # One replica only: XLA cannot reach a mirrored variable's copy on another device
        # from inside the compiled cluster (seen with 2 logical CPUs).
        wanted = (default_jit_compile(strategy, cfg.train_steps) if cfg.jit_compile is None
                  else cfg.jit_compile)
        jit = wanted and strategy.num_replicas_in_sync == 1
        if wanted and not jit:
            log.info("jit_compile is off with %d replicas", strategy.num_replicas_in_sync)
        self.jit_compile = jit
        self.objective = Objective(model, fused=FUSED_CALLS)
        self.update_discriminator = discriminator_updates(
            model, d_opt, cfg.disc_steps, 1.0 / cfg.batch_size)
        self.replica_fn = tf.function(self._replica_step, jit_compile=jit)
        self.step_fn = tf.function(self._distributed_step)

    def _replica_step(self, batch: dict) -> dict[str, tf.Tensor]:
        model = self.model
        scale = 1.0 / self.cfg.batch_size  # per-example sums / global batch: Keras sums replicas
        x = flows.dequantize_images(batch["images"], batch["dequant"])
        g_vars = model.generator_variables
        with tf.GradientTape() as tape:
            losses = self.objective.losses(x, batch, self.update_discriminator)
            loss = tf.reduce_sum(losses.generator) * scale
        grads = tape.gradient(loss, g_vars)
        if self.cfg.flow_warmup_steps:  # the flow's nets stay fixed while flow_on is 0
            flow_ids = {id(v) for v in model.flow.trainable_variables}
            flow_on = tf.reduce_max(batch["flow_on"])
            grads = [g * flow_on if g is not None and id(v) in flow_ids else g
                     for v, g in zip(g_vars, grads)]
        if self.flow_opt is None:
            self.g_opt.apply_gradients(zip(grads, g_vars))
        else:  # the flow's own learning rate (--flow_learning_rate)
            flow_ids = {id(v) for v in model.flow.trainable_variables}
            pairs = list(zip(grads, g_vars))
            self.g_opt.apply_gradients([p for p in pairs if id(p[1]) not in flow_ids])
            self.flow_opt.apply_gradients([p for p in pairs if id(p[1]) in flow_ids])
        out = {"loss": loss}
        if losses.discriminator is not None:
            out["d_loss"] = losses.discriminator
        if self.strategy.num_replicas_in_sync == 1:  # per-replica norms would not add up
            for group, variables in model.generator_variable_groups().items():
                ids = {id(v) for v in variables}
                chosen = [g for v, g in zip(g_vars, grads) if id(v) in ids and g is not None]
                if chosen:
                    out[f"grad_norm_{group}"] = tf.linalg.global_norm(chosen)
        for name, values in self.objective.monitored(x, losses).items():
            out[name] = tf.reduce_sum(values) * scale
        return out

    def _distributed_step(self, batch: dict) -> dict[str, tf.Tensor]:
        per_replica = self.strategy.run(self.replica_fn, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}
