"""Train a hybrid generative model: ``python -m pipeline.train --flagfile=configs/X.cfg``.

Every flag can be given on the command line too (later flags override the flagfile).
A second run with the same ``--model_dir`` resumes from its latest checkpoint.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from absl import app, flags

from artifacts import memory_errors
from artifacts.cli import setup_logging
from pipeline import config_flags
from pipeline.train_config import TrainConfig

FLAGS = flags.FLAGS
WORKER_LOST_EXIT_CODE = 3  # a multi-worker job lost a worker; restart all workers to resume


def define_flags() -> None:
    """One flag per HybridConfig field (but image_shape) and per TrainConfig field, with the
    fields' defaults and help texts; --data_dir and --model_dir are required. Defined only
    when run as a program, like every absl CLI of the project."""
    config_flags.define_train_flags(FLAGS)


def configs_from_flags() -> tuple[dict[str, Any], TrainConfig]:
    """(HybridConfig fields except image_shape, TrainConfig) from the parsed flags; the
    image shape comes from the data set. Flags are named after the dataclass fields."""
    return config_flags.train_configs_from_flags(FLAGS)


def set_thread_pools(train_cfg: TrainConfig) -> tuple[int, int] | None:
    """Sets TensorFlow's (intra-op, inter-op) thread pools for this run on a machine without
    GPUs (:func:`pipeline.train_step.cpu_thread_pools`, for the XLA choice the run will
    make) and returns them; None, changing nothing, with a GPU, when the user set
    ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``, or when TensorFlow has
    started already (the pools are fixed then). Call before any op runs."""
    import tensorflow as tf

    from pipeline import train_step

    if any(os.environ.get(name) for name in train_step.THREAD_ENV_VARS):
        return None
    if tf.config.list_physical_devices("GPU"):  # lists devices without starting TF
        return None
    intra, inter = train_step.cpu_thread_pools(train_step.cpu_jit_compile(train_cfg),
                                               len(os.sched_getaffinity(0)))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow is initialized already (a caller ran ops)
        return None
    return intra, inter


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    setup_logging()
    from pipeline.trainer import TrainingInterrupted, WorkerLost, train

    model_values, train_cfg = configs_from_flags()
    set_thread_pools(train_cfg)
    params = {"flagfile": ",".join(a.split("=", 1)[1] for a in sys.argv if a.startswith("--flagfile="))}
    sizes = memory_errors.size_settings(train_cfg, model_values)
    try:  # the trainer builds the HybridConfig on the data set's image shape
        with memory_errors.out_of_memory("training", sizes):
            summary = train(model_values, train_cfg, params_to_log=params)
    except TrainingInterrupted as stop:  # checkpointed; the MLflow run is marked KILLED
        print(f"pipeline.train: {stop}; resume with the same --model_dir", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except WorkerLost as lost:  # not a user error, but one clear line, not a traceback
        if os.environ.get("AD_TRACEBACK"):
            raise
        print(f"pipeline.train: error: {lost}", file=sys.stderr)
        # The checkpoint, the MLflow run's status and the model-dir lock are settled by now.
        # An aborted collective leaves TF's cross-device thread pool with closed pipes, and
        # a normal interpreter shutdown then prints its finalizer's traceback ("Exception
        # ignored in Pool.__del__ ... Bad file descriptor"); exit at once after flushing.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(WORKER_LOST_EXIT_CODE)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    from artifacts.cli import user_errors
    from pipeline.model_lock import ModelDirInUse
    from pipeline.trainer import TrainingDiverged

    define_flags()
    app.run(user_errors("python -m pipeline.train", (ModelDirInUse, TrainingDiverged))(main))
