"""The training loop: MLE and adversarial updates under a tf.distribute strategy, with
checkpoints, resumption, MLflow tracking, progress and sample grids.

`python -m pipeline.train` parses flags into a :class:`TrainConfig` and the
:class:`HybridConfig` fields and calls :func:`train`; tests call :func:`train` directly.

The duties of a TF Model Garden ``Task`` live where their math does: the model and its
objective (generator and discriminator losses of every variant) in
:class:`tfp_models.objective.Objective`, the inputs in :mod:`pipeline.train_input`,
the compiled step in :mod:`pipeline.train_step`. This module is the runner (Model Garden's
trainer/controller): a :class:`TrainRunner` builds the state (strategy, model, optimizers,
checkpoint manager, restore: :mod:`pipeline.train_state`), runs the loop
(:meth:`~TrainRunner.run_loop`, until ``train_steps`` or a signal:
:mod:`pipeline.preemption`) and finalizes (sample grid, MLflow artifacts, summary). The
settings are in :mod:`pipeline.train_config`.

Multi-worker (``--strategy=multi_worker``): every worker runs the same program (steps,
validation, samples, checkpoint saves: all that may hold collectives); only the chief writes
to ``model_dir`` (checkpoints, model_config.json, sample grids, the lock, the MLflow run id)
and tracks in MLflow, with exactly one run (:mod:`pipeline.train_state`). Each global batch
is split across the workers' replicas by rows (tf.data auto-sharding by DATA), so the
workers together train on exactly the batches of a one-process run. A worker that dies
aborts the others' collectives; they stop with :class:`WorkerLost`, and a restart of every
worker resumes from the chief's last checkpoint.

Randomness: every noise tensor a step uses is drawn in the input pipeline with stateless
ops keyed on (seed, step), one row per example (:mod:`pipeline.train_input`), so a batch
split across replicas sees the same noise as on one device, and a resumed run replays
exactly the data and noise it would have seen. ``--deterministic`` adds TensorFlow's op
determinism (:func:`op_determinism`): bit-identical runs on one machine and software stack.
Every run logs the machine it ran on as ``machine.*`` params (:mod:`artifacts.machine_info`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any, Callable, Mapping

import tensorflow as tf
from tqdm import tqdm

from artifacts import fs_errors, machine_info, model_io
from artifacts import images as images_lib
from pipeline import data as data_lib
from pipeline import model_lock
from pipeline.preemption import SignalGuard, StopAgreement, TrainingInterrupted, save_interrupted
from pipeline.train_config import LR_SCHEDULES, STRATEGIES, TrainConfig
from pipeline.train_input import (
    ValidationBound,
    add_step_noise,
    data_image_shape,
    kl_weight,
    make_train_dataset,
    split_by_rows,
)
from pipeline.train_optimizers import generator_learning_rate
from pipeline.train_state import (
    PEER_ERRORS,
    TrainState,
    WorkerLost,
    build_state,
    make_strategy,
    remove_worker_copies,
    save_checkpoint,
    worker_lost,
)
from pipeline.train_step import StepFunctions
from tfp_models import metrics
from tfp_models.hybrid import HybridConfig

__all__ = [  # the trainer's public names, wherever they are defined
    "LR_SCHEDULES", "STRATEGIES", "StepFunctions", "TrainConfig", "TrainState", "TrainRunner",
    "TrainingDiverged", "TrainingInterrupted", "ValidationBound", "WorkerLost", "add_step_noise",
    "data_image_shape", "generator_learning_rate", "kl_weight", "make_strategy",
    "make_train_dataset", "model_config_for_data", "op_determinism", "train"]


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


def _check_finite(values: dict[str, float], step: int, last_checkpoint: str | None) -> None:
    """Raises :class:`TrainingDiverged` if a metric of step ``step`` is NaN or Inf."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss {name!r} is {value} at step {step}; stopping. The last good checkpoint "
                f"is kept: {last_checkpoint or 'none written yet'}")


def model_config_for_data(model_config: HybridConfig | Mapping[str, Any], cfg: TrainConfig,
                          info: data_lib.DatasetInfo) -> HybridConfig:
    """The HybridConfig trained on the data set ``info``: ``model_config`` (a HybridConfig,
    or its fields but image_shape) with the image shape of :func:`data_image_shape`."""
    shape = data_image_shape(info, cfg)
    if isinstance(model_config, HybridConfig):
        return dataclasses.replace(model_config, image_shape=shape)
    return HybridConfig(image_shape=shape, **model_config)


@contextlib.contextmanager
def op_determinism(enabled: bool):
    """TensorFlow op determinism on inside the block if ``enabled`` (``--deterministic``),
    and back off after it if it was off before (a caller that trains in-process, as the
    tests do, keeps its own setting). The CLI enters this before any op has run; in a
    process that already ran ops, kernels TensorFlow has cached keep the algorithm they
    were built with. Seeds are the run's own: :func:`pipeline.train_state.build_state` calls
    ``keras.utils.set_random_seed(cfg.seed)`` (Python, NumPy, TF), and every noise tensor
    of a step is drawn by stateless ops keyed on (seed, step) (module docstring)."""
    from tensorflow.python.framework import config as tf_config

    switch = enabled and not tf_config.is_op_determinism_enabled()
    if switch:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if switch:
            tf_config.disable_op_determinism()


def train(model_config: HybridConfig | Mapping[str, Any], cfg: TrainConfig,
          params_to_log: dict[str, Any] | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Trains (or resumes) the model in ``cfg.model_dir``; returns a summary dict with the
    final step, last metrics, checkpoint path, MLflow run id and sample grid path.

    ``model_config.image_shape`` is replaced by the data set's (from dataset.json);
    ``model_config`` may also be the HybridConfig fields without image_shape (a mapping,
    as :func:`pipeline.train.configs_from_flags` gives them). Every input is checked
    before any training starts; the data set and the model settings before the model
    directory is touched. The chief holds the model directory's lock (pipeline.model_lock)
    throughout: a second trainer on the same directory raises
    :class:`~pipeline.model_lock.ModelDirInUse`. With ``cfg.strategy='multi_worker'`` the
    process's role comes from ``TF_CONFIG``; a non-chief neither locks nor writes
    ``model_dir`` and returns a summary without run id or grid.

    Faults are one-line errors (ValueError subclasses): shards that do not match
    dataset.json, at start or when a corrupt record is met
    (:class:`~artifacts.dataset_format.DataSetDamaged`), a full or read-only disk
    (:class:`~artifacts.fs_errors.DiskError`); an unusable MLflow store only turns
    tracking off (:mod:`artifacts.run_tracker`; ``cfg.strict_tracking``: an error first).

    ``cfg.deterministic`` turns TensorFlow's op determinism on first, before any op of the
    run (:func:`op_determinism`), and off again at the end if it was off.
    """
    with op_determinism(cfg.deterministic):
        return _train(model_config, cfg, params_to_log, on_step)


def _train(model_config: HybridConfig | Mapping[str, Any], cfg: TrainConfig,
           params_to_log: dict[str, Any] | None,
           on_step: Callable[[int, dict], None] | None) -> dict[str, Any]:
    info = data_lib.read_checked_dataset_info(cfg.data_dir, full=cfg.verify_data)
    if "train" not in info.split_counts:
        raise ValueError(f"data set {cfg.data_dir!r} has no 'train' split "
                         f"(splits: {sorted(info.split_counts)})")
    task = TrainRunner(model_config_for_data(model_config, cfg, info), cfg, info, params_to_log,
                     on_step)
    with data_lib.damaged_data_errors(info), \
            fs_errors.disk_errors(f"training in {cfg.model_dir!r}"):  # one line, not traces
        if cfg.strategy == "multi_worker" and not model_lock.is_chief():
            return task.run()  # multi-worker non-chiefs do not own the directory
        with model_lock.ModelDirLock(cfg.model_dir):
            return task.run()


class TrainRunner:
    """One training run of ``model_config`` (on the data's image shape) under ``cfg``.

    :meth:`run` = :meth:`build_state`, then, inside the MLflow run (which ends FINISHED,
    FAILED on an exception or KILLED on a signal), :meth:`run_loop` and :meth:`finalize`.
    ``on_step(step, metrics)`` is called after every step."""

    def __init__(self, model_config: HybridConfig, cfg: TrainConfig, info: data_lib.DatasetInfo,
                 params_to_log: dict[str, Any] | None = None,
                 on_step: Callable[[int, dict], None] | None = None):
        self.model_config, self.cfg, self.info = model_config, cfg, info
        self.params_to_log, self.on_step = params_to_log, on_step
        self.grid_dir = os.path.join(cfg.model_dir, "samples")
        # mlflow import is slow; keep it off tfp_models' path
        from artifacts import run_tracker, tracking
        self.tracking, self.run_tracker = tracking, run_tracker
        self.tracker = run_tracker.NO_TRACKING  # the chief's RunTracker while the run is on

    def build_state(self) -> TrainState:
        """Strategy, model, optimizers, checkpoint manager; restored or data-initialized."""
        return build_state(self.model_config, self.cfg, self.info)

    def run(self) -> dict[str, Any]:
        """Trains to ``cfg.train_steps``; returns the summary of :meth:`finalize`."""
        cfg, tracking, run_tracker = self.cfg, self.tracking, self.run_tracker
        chief = cfg.strategy != "multi_worker" or model_lock.is_chief()
        store_error = None
        if chief:  # before any work: a broken store is one warning (or, strict, one error)
            tracking.configure(cfg.mlflow_tracking_uri or None, cfg.model_dir)
            store_error = run_tracker.check_store(cfg.experiment, strict=cfg.strict_tracking)
        state = self.build_state()
        try:
            steps = StepFunctions(state.model, state.strategy, cfg, state.g_opt, state.d_opt,
                                  state.flow_opt)
            dataset = state.strategy.experimental_distribute_dataset(
                split_by_rows(make_train_dataset(self.info, cfg, state.start_step,
                                                 state.noise_shapes)))
            if state.is_chief:  # calls are sent in the background, never fatal
                run = run_tracker.background_run(cfg.model_dir, cfg.experiment,
                                                 cfg.run_name or None,
                                                 tags={"variant": self.model_config.variant},
                                                 store_error=store_error)
            else:  # one MLflow run per job: the chief's
                run = contextlib.nullcontext(run_tracker.NO_TRACKING)
            with run as tracker, SignalGuard() as guard:
                self.tracker, run_id = tracker, tracker.run_id
                tracker.log_params({**dataclasses.asdict(self.model_config),
                                    **dataclasses.asdict(cfg), **(self.params_to_log or {}),
                                    "jit_compile_used": steps.jit_compile,  # the choice made
                                    "compute_dtype_used": state.model.network_dtype,
                                    **machine_info.as_params()})  # machine.*: what ran it
                step, values = self.run_loop(state, steps, dataset, guard)
                return self.finalize(state, run_id, step, values)
        finally:
            remove_worker_copies(state)

    def run_loop(self, state: TrainState, steps: StepFunctions, dataset: Any,
                 guard: SignalGuard) -> tuple[int, dict[str, float]]:
        """Steps from ``state.start_step`` to ``cfg.train_steps``, or to the step boundary
        after a signal (then checkpoints that step and raises :class:`TrainingInterrupted`).
        Raises :class:`TrainingDiverged` on a NaN/Inf metric and, in a multi-worker job,
        :class:`WorkerLost` when a peer is gone. A signal to any worker stops every worker
        after the same step (:class:`~pipeline.preemption.StopAgreement`). Returns (the
        last step, its metrics: the step's outputs plus 'bpd' in bits/dim where there is an
        'nll', except for the Bernoulli decoder, whose 'nll' is -ln P(b) of binarized
        images in nats)."""
        cfg, model = self.cfg, state.model
        last_good = tf.train.latest_checkpoint(cfg.model_dir)  # the chief's, on every worker
        step = state.start_step
        values: dict[str, float] = {}
        bar = tqdm(total=cfg.train_steps, initial=step, desc=f"train {self.model_config.variant}",
                   unit="step", disable=not cfg.show_progress, dynamic_ncols=True)
        iterator = iter(dataset)
        validation = None
        if cfg.validation_every and model.spec.has_likelihood:
            validation = ValidationBound(state.float32_twin or model, self.info,
                                         cfg.validation_examples, cfg.seed,
                                         split=cfg.validation_split)
        stop = StopAgreement(state.strategy, guard)
        try:
            while step < cfg.train_steps and stop.signum() is None:  # a step boundary
                out = steps.step_fn(next(iterator))
                step += 1
                state.step_var.assign(step)
                values = {k: float(v.numpy()) for k, v in out.items()}
                _check_finite(values, step, last_good)
                if "nll" in values and not model.binary:  # binary data: nats only
                    values["bpd"] = float(metrics.bits_per_dim(-values["nll"],
                                                               self.model_config.image_shape))
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()
                                 if k in ("loss", "bpd", "d_loss", "adv")}, refresh=False)
                if self.on_step is not None:
                    self.on_step(step, values)
                last_good = self._after_step(state, step, values, validation) or last_good
            if stop.signum() is not None:
                save_interrupted(state.manager, step, state.start_step,
                                 save=lambda n: save_checkpoint(state, n))
                raise TrainingInterrupted(stop.signum(), step)
        except PEER_ERRORS as err:
            if cfg.strategy != "multi_worker":
                raise
            raise worker_lost(state.task, step, err, cfg.model_dir) from err
        finally:
            bar.close()
        return step, values

    def _after_step(self, state: TrainState, step: int, values: dict[str, float],
                    validation: ValidationBound | None) -> str | None:
        """The schedules after step ``step``: metrics, validation bits/dim, checkpoint,
        sample grid. Returns the checkpoint written, if any."""
        cfg, tracker = self.cfg, self.tracker
        last = step == cfg.train_steps
        if step % cfg.log_every == 0 or last:
            tracker.log_metrics({f"train/{k}": v for k, v in values.items()}, step)
        if validation is not None and (step % cfg.validation_every == 0 or last):
            state.float32_model()  # a bfloat16 run's twin gets the current weights
            bpd = validation.bits_per_dim()
            if state.model.binary:  # -ln P(b) of the binarized digits: nats, not 8-bit bpd
                nll = -metrics.bits_per_dim_to_nats(bpd, self.model_config.image_shape)
                tracker.log_metrics({"validation/nll_nats": nll}, step)
            else:
                tracker.log_metrics({"validation/bpd": bpd}, step)
        saved = None
        if step % cfg.checkpoint_every == 0 or last:  # on every worker (see train_state)
            saved = save_checkpoint(state, step)
        if step % cfg.sample_every == 0 and not last:
            self.write_grid(state, step)
        return saved

    def write_grid(self, state: TrainState, step: int) -> str | None:
        """Saves and logs a PNG grid of ``cfg.num_grid_samples`` samples; returns its path
        (None on a multi-worker non-chief, which draws the samples but writes nothing)."""
        cfg = self.cfg
        images = state.float32_model().sample(cfg.num_grid_samples, cfg.sample_temperature,
                                              seed=cfg.seed).numpy()
        if not state.is_chief:
            return None
        path = images_lib.save_grid(images, os.path.join(self.grid_dir, f"step_{step:07d}.png"))
        self.tracker.log_artifact(path, artifact_path="samples")
        return path

    def finalize(self, state: TrainState, run_id: str, step: int,
                 values: dict[str, float]) -> dict[str, Any]:
        """The final sample grid; the model config and latest checkpoint logged to MLflow.
        Returns the summary: start_step, mlflow_run_id, step, metrics, checkpoint, grid,
        model_dir, task (on a multi-worker non-chief: no run id, no grid, the chief's
        checkpoint path)."""
        cfg, tracker = self.cfg, self.tracker
        ckpt = state.manager.latest_checkpoint
        if ckpt and not state.is_chief:
            ckpt = os.path.join(cfg.model_dir, os.path.basename(ckpt))
        summary: dict[str, Any] = {
            "start_step": state.start_step, "mlflow_run_id": run_id, "step": step,
            "metrics": values, "checkpoint": ckpt, "grid": self.write_grid(state, step),
            "model_dir": os.path.abspath(cfg.model_dir), "task": state.task}
        if not state.is_chief:
            return summary
        tracker.log_artifact(os.path.join(cfg.model_dir, model_io.CONFIG_FILE))
        if ckpt:
            for name in os.listdir(cfg.model_dir):
                if name.startswith(os.path.basename(ckpt) + ".") or name == "checkpoint":
                    tracker.log_artifact(os.path.join(cfg.model_dir, name),
                                         artifact_path="checkpoint")
        return summary
