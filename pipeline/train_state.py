"""The state of a training run (:class:`TrainState`): strategy, model, optimizers, step
counter and checkpoint manager, built or restored by :func:`build_state`.

Multi-worker roles (``--strategy=multi_worker``, TensorFlow's rules for
MultiWorkerMirroredStrategy): every worker builds the same state, restores the newest of
the chief's checkpoints in ``model_dir`` that loads (:func:`restore_checkpoint`: a missing
or damaged newer one is skipped) and calls every checkpoint save (saving is part of
the synchronous program all workers run), but only the chief
(``strategy.extended.should_checkpoint``: task 'chief', or worker 0 without one) writes to
``model_dir``. Other workers' checkpoint managers write to a private temporary directory
whose files are deleted after each save (:func:`save_checkpoint`) and which is removed at
the end of the run (:func:`remove_worker_copies`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from artifacts import fs_errors, model_io
from pipeline import data as data_lib
from pipeline import precision
from pipeline.train_config import TrainConfig
from pipeline.train_input import make_train_dataset
from pipeline.train_optimizers import make_optimizers
from tfp_models import flows
from tfp_models.hybrid import HybridConfig, HybridModel

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainState:
    """What a run trains and checkpoints. ``step_var`` (int64) holds the last completed
    step; ``start_step`` is its value when the run started (0, or the restored step).
    ``is_chief``: this process writes the model directory (always True on one machine);
    ``task`` names it ('chief:0', 'worker:1'; 'local' outside a multi-worker cluster).
    A non-chief's ``manager`` writes to a temporary directory, never ``model_dir``."""
    strategy: tf.distribute.Strategy
    model: HybridModel
    g_opt: keras.optimizers.Optimizer
    flow_opt: keras.optimizers.Optimizer | None
    d_opt: keras.optimizers.Optimizer | None
    step_var: tf.Variable
    manager: tf.train.CheckpointManager
    start_step: int
    noise_shapes: dict[str, tuple]
    is_chief: bool = True
    task: str = "local"
    model_dir: str = ""
    float32_twin: HybridModel | None = None  # of a bfloat16 model: pipeline.precision

    def float32_model(self) -> HybridModel:
        """The model to validate and sample with, float32 (:func:`pipeline.precision.
        float32_view`): ``model``, or its float32 twin holding ``model``'s weights."""
        return precision.float32_view(self.model, self.float32_twin)


class WorkerLost(RuntimeError):
    """A multi-worker job lost a worker, or its cluster never came up; the chief's last
    checkpoint is kept and a restart of every worker resumes from it."""


# What a collective raises when a peer is gone (aborted by the coordination service's
# heartbeats or the strategy's health check, or a dropped connection).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
               tf.errors.DeadlineExceededError, tf.errors.CancelledError)


_TRACE_LINES = ("Graph execution error", "Detected at node", "File ", "[[", "Additional GRPC",
                ":UNKNOWN", "Traceback")


def _cause_line(err: BaseException) -> str:
    """A TensorFlow error's cause on one line: the first line of its message that is not
    part of the graph-node trace TF adds (at most 300 characters)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    causes = [ln for ln in lines if not ln.startswith(_TRACE_LINES)
              and not ln.endswith("(most recent call last):")]
    return (causes or lines or [type(err).__name__])[0][:300]


def worker_lost(task: str, step: int, err: BaseException, model_dir: str) -> WorkerLost:
    """The :class:`WorkerLost` of worker ``task`` after step ``step``, when a collective
    raised ``err`` (one of :data:`PEER_ERRORS`); names the chief's last checkpoint."""
    last_good = tf.train.latest_checkpoint(model_dir)  # what the chief did write
    return WorkerLost(
        f"{task}: a worker of the multi-worker job is gone, stopped after step "
        f"{step} ({type(err).__name__}: {_cause_line(err)}); "
        f"restart every worker with the same flags to resume from the chief's "
        f"checkpoint ({last_good or 'none written yet'})")


def _bound_cluster_start(timeout_s: int) -> None:
    """Configures TensorFlow's coordination service as MultiWorkerMirroredStrategy would
    (leader: the chief, or worker 0; the 'chief' and 'worker' jobs of TF_CONFIG) plus a
    cluster registration timeout, so a task whose peers never start fails after
    ``timeout_s`` seconds instead of waiting forever (TF's default; a waiting task also
    ignores SIGTERM). Its heartbeats then detect a peer that stops responding."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    if (not spec.as_dict() or resolver.task_type not in ("chief", "worker")
            or context.context().coordination_service is not None):
        return
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job,
                                                                 num_tasks=spec.num_tasks(job))
                          for job in ("chief", "worker") if job in spec.jobs],
        cluster_register_timeout_in_ms=int(timeout_s * 1000))


def make_strategy(name: str, devices: tuple = (), cluster_start_timeout_s: int = 0
                  ) -> tf.distribute.Strategy:
    """'auto': MirroredStrategy over the visible GPUs if any, else the default strategy;
    'mirrored': MirroredStrategy over ``devices`` (default: all GPUs, else the CPU);
    'multi_worker': MultiWorkerMirroredStrategy (hosts from TF_CONFIG), failing with
    :class:`WorkerLost` if the cluster has not started within ``cluster_start_timeout_s``
    seconds (0 = no limit)."""
    if name == "multi_worker":  # a dead peer aborts collectives (coordination heartbeats)
        if cluster_start_timeout_s:
            _bound_cluster_start(cluster_start_timeout_s)
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as err:
            raise WorkerLost(
                f"the multi-worker cluster of TF_CONFIG did not start within "
                f"{cluster_start_timeout_s} s ({type(err).__name__}); start every worker "
                "listed in TF_CONFIG (or raise --cluster_start_timeout_s)") from err
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and gpus):
        return tf.distribute.MirroredStrategy(devices=list(devices) or None)
    return tf.distribute.get_strategy()


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, str]:
    """(whether this process is the chief, its task name). The chief is TensorFlow's:
    ``strategy.extended.should_checkpoint`` (task 'chief', or worker 0 of a cluster without
    one); every process is the chief outside a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task = f"{task_type}:{resolver.task_id}" if task_type else "local"
    return bool(strategy.extended.should_checkpoint), task


def save_checkpoint(state: TrainState, step: int) -> str:
    """Checkpoints step ``step``: every worker must call this at the same step. Returns the
    chief's checkpoint path in ``model_dir`` (on a non-chief, whose copy in its temporary
    directory is deleted right away, the path the chief writes)."""
    try:
        path = state.manager.save(checkpoint_number=step)
    except Exception as err:
        reason = fs_errors.disk_error_reason(err)
        if reason is None:
            raise
        _remove_partial_save(state.manager.directory, step)
        latest = state.manager.latest_checkpoint
        raise fs_errors.DiskError(
            f"cannot write checkpoint ckpt-{step} in {state.manager.directory!r}: {reason}; "
            f"the last checkpoint, {os.path.basename(latest) if latest else 'none'}, is kept: "
            "make room and run again to resume from it") from err
    if state.is_chief:
        return path
    for name in glob.glob(glob.escape(path) + ".*"):
        os.remove(name)
    return os.path.join(state.model_dir, os.path.basename(path))


def _remove_partial_save(directory: str, step: int) -> None:
    """Removes what a failed save of ckpt-``step`` left: its ``ckpt-<step>_temp`` files
    (the checkpoints written before are not touched)."""
    for temp in glob.glob(os.path.join(glob.escape(directory), f"ckpt-{step}_temp*")):
        if os.path.isdir(temp):
            shutil.rmtree(temp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(temp)


def remove_worker_copies(state: TrainState) -> None:
    """Removes a non-chief's temporary checkpoint directory (nothing on the chief)."""
    if not state.is_chief:
        shutil.rmtree(state.manager.directory, ignore_errors=True)


def check_compatible(model_dir: str, config: HybridConfig) -> None:
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


def restore_checkpoint(checkpoint: tf.train.Checkpoint, model_dir: str, task: str = "local",
                       is_chief: bool = True) -> str | None:
    """Restores the newest checkpoint of ``model_dir`` that loads into ``checkpoint``
    (:func:`artifacts.model_io.restore_newest`) and returns its path (None: nothing to
    resume, the run starts at step 0). A newer checkpoint whose files are missing,
    truncated or corrupt is skipped, never the reason to start over: one warning line names
    the checkpoint resumed from and those skipped, and the chief rewrites the checkpoint
    state file to list the resumed one as the latest, so no later save or resume mistakes
    the skipped ones for progress (their files are replaced when training reaches their
    steps; valid older checkpoints are kept). Raises
    :class:`~artifacts.model_io.CheckpointUnreadable` if checkpoint files exist but none
    loads: nothing is overwritten then."""
    step_var = checkpoint.step

    def load(path: str) -> None:
        checkpoint.restore(path).assert_existing_objects_matched()

    restored = model_io.restore_newest(model_dir, load)
    if restored.path is None:
        if restored.skipped:
            log.warning("%s: the checkpoint(s) listed in %s are missing (%s) and no other "
                        "checkpoint is there: starting at step 0", task, model_dir,
                        restored.describe_skipped())
        if is_chief:
            model_io.forget_unloadable(model_dir, restored)
        return None
    if restored.skipped:
        log.warning("%s resumed from %s at step %d, the newest checkpoint that loads; skipped "
                    "the newer %s", task, restored.path, int(step_var.numpy()),
                    restored.describe_skipped())
    else:
        log.info("%s resumed from %s at step %d", task, restored.path, int(step_var.numpy()))
    if is_chief:
        model_io.forget_unloadable(model_dir, restored)
    return restored.path


def build_state(model_config: HybridConfig, cfg: TrainConfig,
                info: data_lib.DatasetInfo) -> TrainState:
    """Checks the run against the model directory and the data set, then builds the
    strategy, the model (seeded by ``cfg.seed``), its optimizers and the checkpoint
    manager and restores the newest checkpoint of ``cfg.model_dir`` that loads
    (:func:`restore_checkpoint`); a new run gets the
    data-dependent init from one batch. The chief writes the model directory's
    model_config.json; in a multi-worker job every worker restores the chief's checkpoint
    from ``cfg.model_dir`` and non-chiefs save to a temporary directory (module docstring).
    ``model_config.image_shape`` must already be the data's."""
    check_compatible(cfg.model_dir, model_config)
    if cfg.batch_size > info.split_counts["train"]:
        raise ValueError(f"--batch_size={cfg.batch_size} exceeds the {info.split_counts['train']}"
                         f" training images of {cfg.data_dir!r}")
    strategy = make_strategy(cfg.strategy, cfg.devices, cfg.cluster_start_timeout_s)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch_size={cfg.batch_size} must be divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")

    compute_dtype = precision.resolve_compute_dtype(cfg.compute_dtype, strategy)
    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
        model = HybridModel(model_config, compute_dtype=compute_dtype)
        g_opt, flow_opt, d_opt = make_optimizers(model, cfg)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    optimizers = {"generator_optimizer": g_opt}
    if flow_opt is not None:
        optimizers["flow_optimizer"] = flow_opt
    if d_opt is not None:
        optimizers["discriminator_optimizer"] = d_opt
    checkpoint = model_io.make_checkpoint(model, step_var, **optimizers)
    is_chief, task = worker_role(strategy)
    restore_checkpoint(checkpoint, cfg.model_dir, task, is_chief)  # every worker: the chief's
    write_dir = (cfg.model_dir if is_chief else
                 tempfile.mkdtemp(prefix=f"ade-{task.replace(':', '')}-checkpoints-"))
    manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=cfg.keep_checkpoints)
    state = TrainState(strategy, model, g_opt, flow_opt, d_opt, step_var, manager,
                       start_step=int(step_var.numpy()), noise_shapes=model.noise_shapes(),
                       is_chief=is_chief, task=task, model_dir=cfg.model_dir)
    try:
        if state.start_step == 0:
            _data_init(state, cfg, info)
        if compute_dtype != "float32":  # built last: the float32 run's random draws unchanged
            with strategy.scope():
                state.float32_twin = HybridModel(model_config)
    except BaseException:
        remove_worker_copies(state)
        raise
    if is_chief:
        model_io.save_model_config(cfg.model_dir, model_config, {
            "data_dir": os.path.abspath(cfg.data_dir), "dataset": info.raw.get("source"),
            "label_names": info.label_names})
    return state


def _data_init(state: TrainState, cfg: TrainConfig, info: data_lib.DatasetInfo) -> None:
    """Data-dependent init (ActNorm, the decoder's) from the first batch of at most
    ``cfg.data_init_batch`` training images, with prior noise seeded by ``cfg.seed``."""
    init_ds = make_train_dataset(info, dataclasses.replace(
        cfg, batch_size=min(cfg.data_init_batch, info.split_counts["train"])), 0,
        state.noise_shapes)
    first = next(iter(init_ds))
    n_init = int(first["images"].shape[0])
    prior = tf.random.stateless_normal((n_init,) + state.model.prior_noise_shape(),
                                       seed=(cfg.seed, 7))
    with state.strategy.scope():
        state.model.data_init(flows.dequantize_images(first["images"], first["dequant"]), prior)
