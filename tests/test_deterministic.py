"""``--deterministic``: TensorFlow op determinism for a run, and runs that repeat bit for bit.

Two trainings with the same seed and ``--deterministic`` must end with bit-identical
checkpoints (every variable, optimizer slots included): in one process (the trainer called
twice, as a library user would) and as two processes of the real CLI.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient
from tensorflow.python.framework import config as tf_config

from pipeline import trainer
from tfp_models.hybrid import HybridConfig

from conftest import TINY, TINY_SHAPE, tiny_train_config

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkpoint_tensors(model_dir) -> dict[str, bytes]:
    """{variable name: raw bytes} of the latest checkpoint in ``model_dir`` (every saved
    tensor: weights, optimizer slots and iterations, the step; not the object graph, whose
    Keras layer names are numbered per process: ``dense_1`` in a second model)."""
    path = tf.train.latest_checkpoint(str(model_dir))
    assert path, f"no checkpoint in {model_dir}"
    reader = tf.train.load_checkpoint(path)
    out = {}
    for name in sorted(reader.get_variable_to_shape_map()):
        if name == "_CHECKPOINTABLE_OBJECT_GRAPH":
            continue
        value = np.asarray(reader.get_tensor(name))
        out[name] = value.dtype.str.encode() + value.tobytes()
    return out


def assert_bit_identical(dir_a, dir_b) -> int:
    """Asserts the latest checkpoints of two model directories hold the same tensors, bit
    for bit; returns how many there are."""
    a, b = checkpoint_tensors(dir_a), checkpoint_tensors(dir_b)
    assert a.keys() == b.keys()
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:5]}"
    return len(a)


def test_deterministic_runs_in_one_process_are_bit_identical(digits16, tmp_path, tracking_uri):
    seen = []

    def on_step(step, values):
        seen.append(tf_config.is_op_determinism_enabled())

    model_cfg = HybridConfig(variant="cqf", image_shape=TINY_SHAPE, **TINY)
    summaries = []
    for name in ("a", "b"):
        cfg = tiny_train_config(digits16, tmp_path / name, tracking_uri, train_steps=4,
                                deterministic=True)
        summaries.append(trainer.train(model_cfg, cfg, on_step=on_step))
    assert seen == [True] * 8  # on during every step of both runs
    assert not tf_config.is_op_determinism_enabled()  # and off again after each run
    assert assert_bit_identical(tmp_path / "a", tmp_path / "b") > 20
    params = MlflowClient().get_run(summaries[0]["mlflow_run_id"]).data.params
    assert params["deterministic"] == "True"
    assert params["machine.op_determinism"] == "True"


def test_without_the_flag_op_determinism_stays_off(digits16, tmp_path, tracking_uri):
    seen = []
    cfg = tiny_train_config(digits16, tmp_path / "m", tracking_uri, train_steps=2)
    summary = trainer.train(HybridConfig(variant="vae_f", image_shape=TINY_SHAPE, **TINY), cfg,
                            on_step=lambda step, values: seen.append(
                                tf_config.is_op_determinism_enabled()))
    assert seen == [False, False]
    params = MlflowClient().get_run(summary["mlflow_run_id"]).data.params
    assert params["deterministic"] == "False" and params["machine.op_determinism"] == "False"


def _cli_train(data_dir, model_dir, uri) -> None:
    cmd = [sys.executable, "-m", "pipeline.train", f"--data_dir={data_dir}",
           f"--model_dir={model_dir}", f"--mlflow_tracking_uri={uri}", "--variant=cqf",
           "--train_steps=4", "--batch_size=8", "--checkpoint_every=2", "--log_every=1",
           "--sample_every=100", "--seed=3", "--latent_dim=4", "--enc_dec_channels=4",
           "--flow_hidden=4", "--flow_scales=1", "--flow_res_blocks=1", "--disc_channels=4",
           "--posterior_hidden=8", "--num_grid_samples=4", "--data_init_batch=32",
           "--noshow_progress", "--deterministic"]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow  # two CLI processes: ~25 s each of start-up and training on 2 cores
def test_deterministic_cli_runs_are_bit_identical(digits16, tmp_path, tracking_uri):
    for name in ("a", "b"):
        _cli_train(digits16, tmp_path / name, tracking_uri)
    assert assert_bit_identical(tmp_path / "a", tmp_path / "b") > 20
