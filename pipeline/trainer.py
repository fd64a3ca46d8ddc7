"""The training loop: MLE and adversarial updates under a tf.distribute strategy, with
checkpoints, resumption, MLflow tracking, progress and sample grids.

`python -m pipeline.train` parses flags into a :class:`TrainConfig` and the
:class:`HybridConfig` fields and calls :func:`train`; tests call :func:`train` directly.

A run is a :class:`TrainTask` in the manner of a TF Model Garden ``Task``:
:meth:`~TrainTask.build_state` (strategy, model, optimizers, checkpoint manager, restore:
:mod:`pipeline.train_state`), :meth:`~TrainTask.run_loop` (the compiled step of
:mod:`pipeline.train_step` on the batches of :mod:`pipeline.train_input`, until
``train_steps`` or a signal: :mod:`pipeline.preemption`) and :meth:`~TrainTask.finalize`
(final sample grid, MLflow artifacts, summary). The settings are in
:mod:`pipeline.train_config`.

Randomness: every noise tensor a step uses is drawn in the input pipeline with stateless
ops keyed on (seed, step), one row per example (:mod:`pipeline.train_input`), so a batch
split across replicas sees the same noise as on one device, and a resumed run replays
exactly the data and noise it would have seen.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping

from tqdm import tqdm

from artifacts import images as images_lib
from artifacts import model_io
from pipeline import data as data_lib
from pipeline import model_lock
from pipeline.preemption import SignalGuard, TrainingInterrupted, save_interrupted
from pipeline.train_config import LR_SCHEDULES, STRATEGIES, TrainConfig
from pipeline.train_input import (
    ValidationBound,
    add_step_noise,
    data_image_shape,
    kl_weight,
    make_train_dataset,
)
from pipeline.train_state import TrainState, build_state, generator_learning_rate, make_strategy
from pipeline.train_step import StepFunctions
from tfp_models import metrics
from tfp_models.hybrid import HybridConfig

__all__ = [  # the trainer's public names, wherever they are defined
    "LR_SCHEDULES", "STRATEGIES", "StepFunctions", "TrainConfig", "TrainState", "TrainTask",
    "TrainingDiverged", "TrainingInterrupted", "ValidationBound", "add_step_noise",
    "data_image_shape", "generator_learning_rate", "kl_weight", "make_strategy",
    "make_train_dataset", "model_config_for_data", "train"]


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
    :class:`~pipeline.model_lock.ModelDirInUse`.
    """
    info = data_lib.read_dataset_info(cfg.data_dir)
    if "train" not in info.split_counts:
        raise ValueError(f"data set {cfg.data_dir!r} has no 'train' split "
                         f"(splits: {sorted(info.split_counts)})")
    task = TrainTask(model_config_for_data(model_config, cfg, info), cfg, info, params_to_log,
                     on_step)
    if not model_lock.is_chief():  # multi-worker non-chiefs do not own the directory
        return task.run()
    with model_lock.ModelDirLock(cfg.model_dir):
        return task.run()


class TrainTask:
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
        from artifacts import tracking  # mlflow import is slow; keep it off tfp_models' path
        self.tracking = tracking
        self.track = tracking.call_with_retries  # tracking failures in the loop are warnings

    def build_state(self) -> TrainState:
        """Strategy, model, optimizers, checkpoint manager; restored or data-initialized."""
        return build_state(self.model_config, self.cfg, self.info)

    def run(self) -> dict[str, Any]:
        """Trains to ``cfg.train_steps``; returns the summary of :meth:`finalize`."""
        cfg, tracking = self.cfg, self.tracking
        state = self.build_state()
        steps = StepFunctions(state.model, state.strategy, cfg, state.g_opt, state.d_opt,
                              state.flow_opt)
        dataset = state.strategy.experimental_distribute_dataset(
            make_train_dataset(self.info, cfg, state.start_step, state.noise_shapes))
        tracking.configure(cfg.mlflow_tracking_uri or None, cfg.model_dir)
        with (tracking.tracked_run(cfg.model_dir, cfg.experiment, cfg.run_name or None,
                                   tags={"variant": self.model_config.variant}) as run_id,
              SignalGuard() as guard):
            tracking.log_params_once(run_id, {**dataclasses.asdict(self.model_config),
                                              **dataclasses.asdict(cfg),
                                              **(self.params_to_log or {})})
            step, values = self.run_loop(state, steps, dataset, guard)
            return self.finalize(state, run_id, step, values)

    def run_loop(self, state: TrainState, steps: StepFunctions, dataset: Any,
                 guard: SignalGuard) -> tuple[int, dict[str, float]]:
        """Steps from ``state.start_step`` to ``cfg.train_steps``, or to the step boundary
        after a signal (then checkpoints that step and raises :class:`TrainingInterrupted`).
        Raises :class:`TrainingDiverged` on a NaN/Inf metric. Returns (the last step, its
        metrics: the step's outputs plus 'bpd' in bits/dim where there is an 'nll', except
        for the Bernoulli decoder, whose 'nll' is -ln P(b) of binarized images in nats)."""
        cfg, model = self.cfg, state.model
        last_good = state.manager.latest_checkpoint
        step = state.start_step
        values: dict[str, float] = {}
        bar = tqdm(total=cfg.train_steps, initial=step, desc=f"train {self.model_config.variant}",
                   unit="step", disable=not cfg.show_progress, dynamic_ncols=True)
        iterator = iter(dataset)
        validation = None
        if cfg.validation_every and model.spec.has_likelihood:
            validation = ValidationBound(model, self.info, cfg.validation_examples, cfg.seed)
        try:
            while step < cfg.train_steps and guard.signum is None:  # a step boundary
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
            if guard.signum is not None:
                save_interrupted(state.manager, step, state.start_step)
                raise TrainingInterrupted(guard.signum, step)
        finally:
            bar.close()
        return step, values

    def _after_step(self, state: TrainState, step: int, values: dict[str, float],
                    validation: ValidationBound | None) -> str | None:
        """The schedules after step ``step``: metrics, validation bits/dim, checkpoint,
        sample grid. Returns the checkpoint written, if any."""
        cfg, tracking, track = self.cfg, self.tracking, self.track
        last = step == cfg.train_steps
        if step % cfg.log_every == 0 or last:
            track(tracking.mlflow.log_metrics, {f"train/{k}": v for k, v in values.items()}, step)
        if validation is not None and (step % cfg.validation_every == 0 or last):
            bpd = validation.bits_per_dim()
            if state.model.binary:  # -ln P(b) of the binarized digits: nats, not 8-bit bpd
                nll = -metrics.bits_per_dim_to_nats(bpd, self.model_config.image_shape)
                track(tracking.mlflow.log_metric, "validation/nll_nats", nll, step)
            else:
                track(tracking.mlflow.log_metric, "validation/bpd", bpd, step)
        saved = None
        if step % cfg.checkpoint_every == 0 or last:
            saved = state.manager.save(checkpoint_number=step)
        if step % cfg.sample_every == 0 and not last:
            self.write_grid(state, step)
        return saved

    def write_grid(self, state: TrainState, step: int) -> str:
        """Saves and logs a PNG grid of ``cfg.num_grid_samples`` samples; returns its path."""
        cfg = self.cfg
        images = state.model.sample(cfg.num_grid_samples, cfg.sample_temperature,
                                    seed=cfg.seed).numpy()
        path = images_lib.save_grid(images, os.path.join(self.grid_dir, f"step_{step:07d}.png"))
        self.track(self.tracking.mlflow.log_artifact, path, artifact_path="samples")
        return path

    def finalize(self, state: TrainState, run_id: str, step: int,
                 values: dict[str, float]) -> dict[str, Any]:
        """The final sample grid; the model config and latest checkpoint logged to MLflow.
        Returns the summary: start_step, mlflow_run_id, step, metrics, checkpoint, grid,
        model_dir."""
        cfg, tracking, track = self.cfg, self.tracking, self.track
        summary: dict[str, Any] = {
            "start_step": state.start_step, "mlflow_run_id": run_id, "step": step,
            "metrics": values, "checkpoint": state.manager.latest_checkpoint,
            "grid": self.write_grid(state, step), "model_dir": os.path.abspath(cfg.model_dir)}
        track(tracking.mlflow.log_artifact, os.path.join(cfg.model_dir, model_io.CONFIG_FILE))
        ckpt = state.manager.latest_checkpoint
        if ckpt:
            for name in os.listdir(cfg.model_dir):
                if name.startswith(os.path.basename(ckpt) + ".") or name == "checkpoint":
                    track(tracking.mlflow.log_artifact, os.path.join(cfg.model_dir, name),
                          artifact_path="checkpoint")
        return summary
