"""The compiled, distributed training step: one MLE and/or adversarial update of a
:class:`~tfp_models.hybrid.HybridModel` per global batch.

Losses are per-example sums (nats per image) divided by the global batch size, so the
replicas' gradients add up to those of the whole batch; the returned metrics are summed
over replicas the same way (per-image means of the global batch).

Variants trained by both objectives decode the posterior's and the prior's latents in one
decoder call, and the discriminator sees real and fake images in one call
(:meth:`~tfp_models.hybrid.HybridModel.mle_loss_and_adversarial_samples`,
:meth:`~tfp_models.hybrid.HybridModel.discriminator_losses`); the networks are per-example,
so values and gradients are those of separate calls (tests/test_hybrid.py).
"""
from __future__ import annotations

import logging

import keras
import tensorflow as tf

from pipeline.train_config import TrainConfig
from tfp_models import flows
from tfp_models.hybrid import HybridModel

log = logging.getLogger(__name__)


# Whether XLA compiles the training step when --jit_compile is not given, by the type of
# the strategy's devices. CPU: off. The idle measurement on a 2-core AMD Zen 4
# (minimal step, interleaved, medians): oneDNN without XLA 1.12x faster for the quickstart
# step at batch 32, 1.22x at batch 64, 1.30x for the CIFAR-10 CPU step with 3x3 couplings.
# On the 2-core AVX2 EPYC development VM (benchmarks/bench_step_speed.py, 2026-12-06, not
# idle: load 4.8-8.2): 1.95x for quickstart and 1.11x for configs/cifar10_cpu.cfg (1x1
# couplings), but 0.78x (XLA faster) for the 3x3 CIFAR step, where the flow's 3x3 convs
# dominate; pass --jit_compile=true for 3x3 flows on such a CPU. GPU: on, Keras' own
# default for fit() there (not measured here: no GPU on the development machine).
DEFAULT_JIT_BY_DEVICE = {"CPU": False, "GPU": True}


def default_jit_compile(strategy: tf.distribute.Strategy) -> bool:
    """:data:`DEFAULT_JIT_BY_DEVICE` for the type of the strategy's worker devices (GPU if
    any device is a GPU; unknown types: no XLA). The default strategy, which names no
    devices, places ops on the first GPU if one is visible."""
    try:
        devices = list(strategy.extended.worker_devices)
    except (RuntimeError, NotImplementedError, AttributeError):  # the default strategy
        devices = []
    if not devices:
        devices = ["/device:GPU:0" if tf.config.list_logical_devices("GPU") else "/device:CPU:0"]
    kinds = {tf.DeviceSpec.from_string(d).device_type or "CPU" for d in devices}
    kind = "GPU" if "GPU" in kinds else ("CPU" if kinds <= {"CPU"} else sorted(kinds)[0])
    return DEFAULT_JIT_BY_DEVICE.get(kind, False)


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
        wanted = default_jit_compile(strategy) if cfg.jit_compile is None else cfg.jit_compile
        jit = wanted and strategy.num_replicas_in_sync == 1
        if wanted and not jit:
            log.info("jit_compile is off with %d replicas", strategy.num_replicas_in_sync)
        self.jit_compile = jit
        self.replica_fn = tf.function(self._replica_step, jit_compile=jit)
        self.step_fn = tf.function(self._distributed_step)

    def _replica_step(self, batch: dict) -> dict[str, tf.Tensor]:
        model, spec = self.model, self.model.spec
        scale = 1.0 / self.cfg.batch_size  # per-example sums / global batch: Keras sums replicas
        x = flows.dequantize_images(batch["images"], batch["dequant"])
        out: dict[str, tf.Tensor] = {}
        g_vars = model.generator_variables
        with tf.GradientTape() as tape:
            total = tf.zeros(tf.shape(x)[:1])
            if spec.mle and spec.adversarial:  # one decoder call for both latent batches
                terms, fake = model.mle_loss_and_adversarial_samples(
                    x, batch.get("posterior"), batch["kl_weight"], batch["prior"])
            elif spec.mle:
                terms = model.mle_training_loss(x, batch.get("posterior"), batch["kl_weight"])
            elif spec.adversarial:
                fake = model.adversarial_samples(batch["prior"])
            if spec.mle:
                total += terms["loss"]
            if spec.adversarial:
                # One batch of samples x_s serves both updates: D learns on it first (no
                # gradient to G), then G's loss uses the updated D (alternating updates).
                real = model.discriminator_real_inputs(batch["images"], x)
                for _ in range(self.cfg.disc_steps):
                    with tf.GradientTape() as d_tape:
                        d_loss = tf.reduce_sum(
                            model.discriminator_losses(real, fake, batch["mix"])) * scale
                    d_grads = d_tape.gradient(d_loss, model.discriminator_variables)
                    self.d_opt.apply_gradients(zip(d_grads, model.discriminator_variables))
                out["d_loss"] = d_loss
                adv = model.generator_adversarial_losses(fake)
                total += (model.config.lambda_adv if spec.mle else 1.0) * adv
                out["adv"] = tf.reduce_sum(adv) * scale
            loss = tf.reduce_sum(total) * scale
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
        out["loss"] = loss
        if self.strategy.num_replicas_in_sync == 1:  # per-replica norms would not add up
            for group, variables in model.generator_variable_groups().items():
                ids = {id(v) for v in variables}
                chosen = [g for v, g in zip(g_vars, grads) if id(v) in ids and g is not None]
                if chosen:
                    out[f"grad_norm_{group}"] = tf.linalg.global_norm(chosen)
        if spec.has_likelihood:
            if not spec.mle:  # monitor the exact likelihood of an adversarially trained flow
                terms = model.mle_terms(x)
            for name in ("nll", "recon", "kl", "log_det"):
                out[name] = tf.reduce_sum(terms[name]) * scale
        return out

    def _distributed_step(self, batch: dict) -> dict[str, tf.Tensor]:
        per_replica = self.strategy.run(self.replica_fn, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}
