"""The training loop: MLE and adversarial updates under a tf.distribute strategy, with
checkpoints, resumption, MLflow tracking, progress and sample grids.

`python -m pipeline.train` parses flags into a :class:`TrainConfig` and a
:class:`HybridConfig` and calls :func:`train`; tests call :func:`train` directly.

Randomness: every noise tensor a step uses (dequantization u, posterior eps, prior z,
WGAN-GP mixing weights) is drawn in the input pipeline with stateless ops keyed on
(seed, step), one row per example. A batch split across replicas therefore sees the same
noise as on one device, and a resumed run replays exactly the data and noise it would
have seen.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
from typing import Any, Callable

import keras
import tensorflow as tf
from tqdm import tqdm

from pipeline import data as data_lib
from artifacts import images as images_lib
from artifacts import model_io
from pipeline import model_lock
from tfp_models import flows, metrics
from tfp_models.hybrid import HybridConfig, HybridModel

log = logging.getLogger(__name__)
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
LR_SCHEDULES = ("constant", "cosine")


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGINT arrived; a checkpoint of the last completed step was written.

    ``signum`` is the signal's number (the CLI exits with 128 + signum), ``step`` the
    last completed step (the one the checkpoint holds)."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"received signal {signum}; stopped after step {step}")
        self.signum, self.step = signum, step


@dataclasses.dataclass
class TrainConfig:
    """Everything about a training run that is not the model's architecture."""
    data_dir: str
    model_dir: str
    train_steps: int = 1000
    batch_size: int = 64
    checkpoint_every: int = 200
    seed: int = 0
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    lr_decay_steps: int = 0
    flow_learning_rate: float = 0.0
    disc_learning_rate: float = 2e-4
    adam_beta1: float = 0.9
    disc_adam_beta1: float = 0.5
    disc_adam_beta2: float = 0.999
    disc_steps: int = 1
    kl_warmup_steps: int = 0
    flow_warmup_steps: int = 0
    random_flip: bool = False
    resize_with_crop_or_pad: int = 0
    log_every: int = 50
    sample_every: int = 500
    num_grid_samples: int = 64
    sample_temperature: float = 1.0
    data_init_batch: int = 256
    validation_every: int = 0
    validation_examples: int = 500
    keep_checkpoints: int = 3
    strategy: str = "auto"
    devices: tuple = ()
    mlflow_tracking_uri: str = ""
    experiment: str = "adaptive-density"
    run_name: str = ""
    show_progress: bool = True
    jit_compile: bool = True

    def __post_init__(self):
        for name in ("train_steps", "batch_size", "checkpoint_every", "log_every",
                     "sample_every", "disc_steps", "data_init_batch", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name}={getattr(self, name)}: expected a positive integer")
        if self.flow_learning_rate < 0:
            raise ValueError(f"--flow_learning_rate={self.flow_learning_rate}: expected >= 0 "
                             "(0 = --learning_rate)")
        for name in ("kl_warmup_steps", "flow_warmup_steps", "lr_decay_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"--{name}={getattr(self, name)}: expected >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr_schedule={self.lr_schedule!r}: expected one of {LR_SCHEDULES}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy={self.strategy!r}: expected one of {STRATEGIES}")


def generator_learning_rate(cfg: TrainConfig, base: float):
    """The learning rate of a generator-side Adam (encoder/decoder/flow, and the flow's own
    optimizer): ``base`` for 'constant'; for 'cosine', Keras' CosineDecay from ``base`` to 0
    at step ``cfg.lr_decay_steps`` (0 = ``cfg.train_steps``) over the optimizer's own
    iteration count, which is checkpointed: a resume continues the same curve as long as the
    horizon is unchanged. The discriminator keeps its constant rate."""
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            base, decay_steps=cfg.lr_decay_steps or cfg.train_steps)
    return base


def make_strategy(name: str, devices: tuple = ()) -> tf.distribute.Strategy:
    """'auto': MirroredStrategy over the visible GPUs if any, else the default strategy;
    'mirrored': MirroredStrategy over ``devices`` (default: all GPUs, else the CPU);
    'multi_worker': MultiWorkerMirroredStrategy (hosts from TF_CONFIG)."""
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and gpus):
        return tf.distribute.MirroredStrategy(devices=list(devices) or None)
    return tf.distribute.get_strategy()


def add_step_noise(batch: dict, step: tf.Tensor, seed: int, shapes: dict[str, tuple]) -> dict:
    """Adds one row of noise per example, keyed on (seed, step): uniform [0, 1) for
    'dequant' and 'mix', standard normal otherwise."""
    n = tf.shape(batch["images"])[0]
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64) * 16 + i])
        full = tf.concat([[n], tf.constant(shape, tf.int32)], 0)
        draw = tf.random.stateless_uniform if name in ("dequant", "mix") else tf.random.stateless_normal
        batch[name] = draw(full, seed=key)
    return batch


def kl_weight(step: tf.Tensor, warmup_steps: int) -> tf.Tensor:
    """The KL term's weight in step ``step`` (0-based): min(1, (step + 1) / warmup_steps),
    1 without warm-up (a deviation from the paper's objective when warmup_steps > 0)."""
    if warmup_steps <= 0:
        return tf.constant(1.0)
    return tf.minimum(1.0, tf.cast(step + 1, tf.float32) / float(warmup_steps))


def make_train_dataset(info: data_lib.DatasetInfo, cfg: TrainConfig, start_step: int,
                       noise_shapes: dict[str, tuple]) -> tf.data.Dataset:
    """Batches {'images': uint8 [B, H, W, C], <noise>: [B, ...], 'kl_weight': [B],
    'flow_on': [B] (0 during the flow warm-up, else 1)} from step ``start_step``."""
    ds = data_lib.make_image_dataset(info, "train", cfg.batch_size, shuffle=True, repeat=True,
                                     seed=cfg.seed, random_flip=cfg.random_flip)
    if cfg.resize_with_crop_or_pad:
        size = cfg.resize_with_crop_or_pad
        ds = ds.map(lambda x: tf.image.resize_with_crop_or_pad(x, size, size))
    ds = ds.skip(start_step).enumerate(start=start_step)

    def add_noise(step, images):
        batch = add_step_noise({"images": images}, step, cfg.seed, noise_shapes)
        batch["kl_weight"] = tf.fill(tf.shape(images)[:1], kl_weight(step, cfg.kl_warmup_steps))
        batch["flow_on"] = tf.fill(tf.shape(images)[:1],
                                   tf.cast(step >= cfg.flow_warmup_steps, tf.float32))
        return batch

    return ds.map(add_noise, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class ValidationBound:
    """The ELBO bound in bits/dim (exact for flows) of the first ``num_examples`` images
    of the validation split, with dequantization and posterior noise fixed by ``seed``,
    so successive calls during training are comparable (the curves of a run)."""

    def __init__(self, model: HybridModel, info: data_lib.DatasetInfo, num_examples: int,
                 seed: int, batch_size: int = 100):
        self.model = model
        count = min(num_examples, info.split_counts.get("validation", 0))
        if count == 0:
            raise ValueError(f"--validation_every needs a 'validation' split in {info.data_dir!r}")
        ds = data_lib.make_image_dataset(info, "validation", batch_size, shuffle=False,
                                         repeat=False, drop_remainder=False)
        self.batches = list(ds.unbatch().take(count).batch(batch_size))
        self.num_examples, self.seed = count, seed
        self._bound = tf.function(self._batch_bound)

    def _batch_bound(self, images, index):
        key = tf.stack([tf.constant(self.seed, tf.int32), -1000 - index])
        x = flows.dequantize_images(images, tf.random.stateless_uniform(tf.shape(images), seed=key))
        eps = None
        if self.model.encoder is not None:
            eps = tf.random.stateless_normal(
                [tf.shape(images)[0], 1, self.model.config.latent_dim], seed=key + 1)
        return self.model.log_prob_bound(x, 1, eps)

    def bits_per_dim(self) -> float:
        total = 0.0
        for i, images in enumerate(self.batches):
            log_p = self._bound(images, tf.constant(i, tf.int32))
            total += float(tf.reduce_sum(metrics.bits_per_dim(log_p, self.model.config.image_shape)))
        return total / self.num_examples


def data_image_shape(info: data_lib.DatasetInfo, cfg: TrainConfig) -> tuple[int, int, int]:
    h, w, c = info.image_shape
    if cfg.resize_with_crop_or_pad:
        h = w = cfg.resize_with_crop_or_pad
    return (h, w, c)


class StepFunctions:
    """The compiled distributed training step of one model."""

    def __init__(self, model: HybridModel, strategy: tf.distribute.Strategy, cfg: TrainConfig,
                 g_opt: keras.optimizers.Optimizer, d_opt: keras.optimizers.Optimizer | None,
                 flow_opt: keras.optimizers.Optimizer | None = None):
        self.model, self.strategy, self.cfg = model, strategy, cfg
        self.g_opt, self.d_opt, self.flow_opt = g_opt, d_opt, flow_opt
        # XLA-compile the per-replica step (as Keras' own fit does): ~2x faster on CPU.
        # One replica only: XLA cannot reach a mirrored variable's copy on another device
        # from inside the compiled cluster (seen with 2 logical CPUs).
        jit = cfg.jit_compile and strategy.num_replicas_in_sync == 1
        if cfg.jit_compile and not jit:
            log.info("jit_compile is off with %d replicas", strategy.num_replicas_in_sync)
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
            if spec.mle:
                terms = model.mle_training_loss(x, batch.get("posterior"), batch["kl_weight"])
                total += terms["loss"]
            if spec.adversarial:
                # One batch of samples x_s serves both updates: D learns on it first (no
                # gradient to G), then G's loss uses the updated D (alternating updates).
                fake = model.adversarial_samples(batch["prior"])
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


def _check_finite(values: dict[str, float], step: int, last_checkpoint: str | None) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss {name!r} is {value} at step {step}; stopping. The last good checkpoint "
                f"is kept: {last_checkpoint or 'none written yet'}")


def _check_compatible(model_dir: str, config: HybridConfig) -> None:
    """A model directory can only resume the same architecture on the same image shape."""
    if not os.path.isfile(os.path.join(model_dir, model_io.CONFIG_FILE)):
        return
    saved, _ = model_io.load_model_config(model_dir)
    if saved.image_shape != config.image_shape:
        raise ValueError(
            f"the data set's images are {config.image_shape} (H, W, C) but the model in "
            f"{model_dir!r} was built for {saved.image_shape}; use a new --model_dir, the "
            "matching data set, or --resize_with_crop_or_pad")
    differ = {k: (v, getattr(config, k)) for k, v in dataclasses.asdict(saved).items()
              if getattr(config, k) != v and k != "image_shape"}
    if differ:
        raise ValueError(
            f"--model_dir={model_dir!r} holds a model with different settings "
            f"(saved vs requested: {differ}); use a new --model_dir to train another model")


class _SignalGuard:
    """Records SIGTERM and SIGINT in ``signum`` while training runs (the handlers only set
    the flag). The loop checks it at step boundaries, so a signal that arrives inside a
    step lets that step finish and be counted before the checkpoint is written."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

        def handler(signum, frame):
            if self.signum is None:
                log.warning("received signal %d: stopping after the current step", signum)
            self.signum = signum

        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


def _save_interrupted(manager: tf.train.CheckpointManager, step: int, start_step: int) -> None:
    """Checkpoints the last completed step ``step`` after a signal, unless that step's
    checkpoint was already written (a periodic one: same contents, not rewritten) or no
    step ran in this process (the restored checkpoint is that state)."""
    latest = manager.latest_checkpoint
    if step == start_step or (latest and latest.endswith(f"ckpt-{step}")):
        return
    manager.save(checkpoint_number=step)


def train(model_config: HybridConfig, cfg: TrainConfig,
          params_to_log: dict[str, Any] | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Trains (or resumes) the model in ``cfg.model_dir``; returns a summary dict with the
    final step, last metrics, checkpoint path, MLflow run id and sample grid path.

    ``model_config.image_shape`` is replaced by the data set's (from dataset.json).
    Every input is checked before any training starts. The chief holds the model
    directory's lock (pipeline.model_lock) throughout: a second trainer on the same
    directory raises :class:`~pipeline.model_lock.ModelDirInUse`.
    """
    if not model_lock.is_chief():  # multi-worker non-chiefs do not own the directory
        return _train(model_config, cfg, params_to_log, on_step)
    with model_lock.ModelDirLock(cfg.model_dir):
        return _train(model_config, cfg, params_to_log, on_step)


def _train(model_config: HybridConfig, cfg: TrainConfig, params_to_log: dict[str, Any] | None,
           on_step: Callable[[int, dict], None] | None) -> dict[str, Any]:
    """:func:`train` without the model directory lock."""
    from artifacts import tracking  # mlflow import is slow; keep it off tfp_models' path

    info = data_lib.read_dataset_info(cfg.data_dir)
    if "train" not in info.split_counts:
        raise ValueError(f"data set {cfg.data_dir!r} has no 'train' split "
                         f"(splits: {sorted(info.split_counts)})")
    model_config = dataclasses.replace(model_config, image_shape=data_image_shape(info, cfg))
    _check_compatible(cfg.model_dir, model_config)
    if cfg.batch_size > info.split_counts["train"]:
        raise ValueError(f"--batch_size={cfg.batch_size} exceeds the {info.split_counts['train']}"
                         f" training images of {cfg.data_dir!r}")
    strategy = make_strategy(cfg.strategy, cfg.devices)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size={cfg.batch_size} must be divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")

    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
        model = HybridModel(model_config)
        g_opt = keras.optimizers.Adam(generator_learning_rate(cfg, cfg.learning_rate),
                                      beta_1=cfg.adam_beta1)
        flow_vars = list(model.flow.trainable_variables)
        flow_opt = None
        if cfg.flow_learning_rate and flow_vars:
            flow_opt = keras.optimizers.Adam(generator_learning_rate(cfg, cfg.flow_learning_rate),
                                             beta_1=cfg.adam_beta1)
            flow_opt.build(flow_vars)
            flow_ids = {id(v) for v in flow_vars}
            g_opt.build([v for v in model.generator_variables if id(v) not in flow_ids])
        else:
            g_opt.build(model.generator_variables)
        d_opt = None
        if model.spec.adversarial:
            d_opt = keras.optimizers.Adam(cfg.disc_learning_rate, beta_1=cfg.disc_adam_beta1,
                                          beta_2=cfg.disc_adam_beta2)
            d_opt.build(model.discriminator_variables)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    optimizers = {"generator_optimizer": g_opt}
    if flow_opt is not None:
        optimizers["flow_optimizer"] = flow_opt
    if d_opt is not None:
        optimizers["discriminator_optimizer"] = d_opt
    checkpoint = model_io.make_checkpoint(model, step_var, **optimizers)
    manager = tf.train.CheckpointManager(checkpoint, cfg.model_dir, max_to_keep=cfg.keep_checkpoints)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log.info("resumed from %s at step %d", manager.latest_checkpoint, int(step_var.numpy()))
    start_step = int(step_var.numpy())
    noise_shapes = model.noise_shapes()

    if start_step == 0:  # data-dependent init (ActNorm) from one batch
        init_ds = make_train_dataset(info, dataclasses.replace(
            cfg, batch_size=min(cfg.data_init_batch, info.split_counts["train"])), 0, noise_shapes)
        first = next(iter(init_ds))
        n_init = int(first["images"].shape[0])
        prior = tf.random.stateless_normal((n_init,) + model.prior_noise_shape(),
                                          seed=(cfg.seed, 7))
        with strategy.scope():
            model.data_init(flows.dequantize_images(first["images"], first["dequant"]), prior)
    model_io.save_model_config(cfg.model_dir, model_config, {
        "data_dir": os.path.abspath(cfg.data_dir), "dataset": info.raw.get("source"),
        "label_names": info.label_names})

    steps = StepFunctions(model, strategy, cfg, g_opt, d_opt, flow_opt)
    dataset = strategy.experimental_distribute_dataset(
        make_train_dataset(info, cfg, start_step, noise_shapes))
    tracking.configure(cfg.mlflow_tracking_uri or None, cfg.model_dir)
    track = tracking.call_with_retries  # tracking failures inside the loop are warnings
    grid_dir = os.path.join(cfg.model_dir, "samples")
    summary: dict[str, Any] = {"start_step": start_step}

    def write_grid(step: int) -> str:
        images = model.sample(cfg.num_grid_samples, cfg.sample_temperature, seed=cfg.seed).numpy()
        path = images_lib.save_grid(images, os.path.join(grid_dir, f"step_{step:07d}.png"))
        track(tracking.mlflow.log_artifact, path, artifact_path="samples")
        return path

    with tracking.tracked_run(cfg.model_dir, cfg.experiment, cfg.run_name or None,
                              tags={"variant": model_config.variant}) as run_id, _SignalGuard() as guard:
        summary["mlflow_run_id"] = run_id
        tracking.log_params_once(run_id, {**dataclasses.asdict(model_config),
                                          **dataclasses.asdict(cfg), **(params_to_log or {})})
        last_good = manager.latest_checkpoint
        step = start_step
        values: dict[str, float] = {}
        bar = tqdm(total=cfg.train_steps, initial=start_step, desc=f"train {model_config.variant}",
                   unit="step", disable=not cfg.show_progress, dynamic_ncols=True)
        iterator = iter(dataset)
        validation = None
        if cfg.validation_every and model.spec.has_likelihood:
            validation = ValidationBound(model, info, cfg.validation_examples, cfg.seed)
        try:
            while step < cfg.train_steps and guard.signum is None:  # a step boundary
                out = steps.step_fn(next(iterator))
                step += 1
                step_var.assign(step)
                values = {k: float(v.numpy()) for k, v in out.items()}
                _check_finite(values, step, last_good)
                if "nll" in values:
                    values["bpd"] = float(metrics.bits_per_dim(-values["nll"], model_config.image_shape))
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()
                                 if k in ("loss", "bpd", "d_loss", "adv")}, refresh=False)
                if on_step is not None:
                    on_step(step, values)
                if step % cfg.log_every == 0 or step == cfg.train_steps:
                    track(tracking.mlflow.log_metrics,
                          {f"train/{k}": v for k, v in values.items()}, step)
                if validation is not None and (step % cfg.validation_every == 0
                                               or step == cfg.train_steps):
                    track(tracking.mlflow.log_metric, "validation/bpd",
                          validation.bits_per_dim(), step)
                if step % cfg.checkpoint_every == 0 or step == cfg.train_steps:
                    last_good = manager.save(checkpoint_number=step)
                if step % cfg.sample_every == 0 and step != cfg.train_steps:
                    write_grid(step)
            if guard.signum is not None:
                _save_interrupted(manager, step, start_step)
                raise TrainingInterrupted(guard.signum, step)
        finally:
            bar.close()
        summary.update(step=step, metrics=values, checkpoint=manager.latest_checkpoint,
                       grid=write_grid(step), model_dir=os.path.abspath(cfg.model_dir))
        track(tracking.mlflow.log_artifact, os.path.join(cfg.model_dir, model_io.CONFIG_FILE))
        ckpt = manager.latest_checkpoint
        if ckpt:
            for name in os.listdir(cfg.model_dir):
                if name.startswith(os.path.basename(ckpt) + ".") or name == "checkpoint":
                    track(tracking.mlflow.log_artifact, os.path.join(cfg.model_dir, name),
                          artifact_path="checkpoint")
    return summary
