"""Multi-worker training (--strategy=multi_worker, MultiWorkerMirroredStrategy) with real
worker processes: two `python -m pipeline.train` on 127.0.0.1, each with its own TF_CONFIG.

Only the chief writes the model directory and tracks in MLflow (one run); the other worker's
checkpoint copies go to a temporary directory that is removed; the job trains on the
batches of a one-process run; a lost worker fails the job within seconds and a restart
of both resumes from the chief's checkpoint; a signal to one worker stops both.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from artifacts import model_io
from pipeline import preemption, train_input, train_state, trainer
from tfp_models.hybrid import HybridConfig

from conftest import PROJECT_ROOT, TINY, TINY_SHAPE, tiny_train_config

VARIANT = "vae_f"
# What every run of this module trains: the conftest's tiny model and few-step settings.
TRAIN_KW = dict(batch_size=8, checkpoint_every=2, log_every=1, sample_every=100,
                num_grid_samples=4, data_init_batch=32, seed=3, jit_compile=False)
WORKER_LOST_EXIT = 3  # pipeline.train's exit code for a lost worker
BOUND_S = 60  # a surviving worker must exit within this long after its peer died


@pytest.fixture(scope="module")
def digits_4_shards(tmp_path_factory, mnist_dir) -> str:
    """240 real MNIST digits at 16x16 in 4 training shards: with the default AUTO policy,
    tf.data would shard these by FILE across workers (other batches than one process)."""
    from PIL import Image

    from beam_jobs import preprocess
    from beam_jobs.sources.mnist_idx import load_mnist

    images, labels = load_mnist(str(mnist_dir))
    folder = tmp_path_factory.mktemp("digits_mw")
    for i in range(240):
        sub = folder / str(labels[i])
        sub.mkdir(exist_ok=True)
        Image.fromarray(images[i]).resize((16, 16), Image.LANCZOS).save(sub / f"{i:04d}.png")
    out = tmp_path_factory.mktemp("data_mw") / "mnist16x4"
    preprocess.run_preprocess("image_folder", str(folder), str(out), 16, grayscale=True,
                              validation_fraction=0.2, num_shards=4)
    assert len(json.loads((out / "dataset.json").read_text())["splits"]["train"]["shards"]) == 4
    return str(out)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _flags(data_dir, model_dir, uri, experiment, steps, extra=()) -> list[str]:
    """The CLI flags of the same run as `trainer.train(HybridConfig(**TINY), tiny_train_config
    (..., **TRAIN_KW))` in this process."""
    values = {**TINY, **TRAIN_KW, "train_steps": steps}
    args = [f"--{k}={v}" for k, v in values.items() if not isinstance(v, bool)]
    args += [f"--{'' if v else 'no'}{k}" for k, v in values.items() if isinstance(v, bool)]
    return [sys.executable, "-m", "pipeline.train", f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", f"--mlflow_tracking_uri={uri}", f"--variant={VARIANT}",
            f"--experiment={experiment}", "--noshow_progress", "--strategy=multi_worker",
            *args, *extra]


class Workers:
    """Two worker processes of one job; worker 0 is the chief. Each gets its own TF_CONFIG
    and TMPDIR (where a non-chief's checkpoint copies go); output goes to files."""

    def __init__(self, tmp_path, name, cmd):
        ports = _free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        self.procs, self.outs, self.errs, self.tmpdirs = [], [], [], []
        for index in range(2):
            tmpdir = tmp_path / f"{name}_tmp{index}"
            tmpdir.mkdir()
            env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2",
                       TMPDIR=str(tmpdir), TF_CONFIG=json.dumps(
                           {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            out, err = tmp_path / f"{name}{index}.out", tmp_path / f"{name}{index}.err"
            with open(out, "w") as o, open(err, "w") as e:
                self.procs.append(subprocess.Popen(cmd, env=env, stdout=o, stderr=e,
                                                   cwd=tmp_path))
            self.outs.append(out)
            self.errs.append(err)
            self.tmpdirs.append(tmpdir)

    def wait(self, timeout=400) -> list[int]:
        deadline = time.time() + timeout
        for proc in self.procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        return [p.returncode for p in self.procs]

    def stderr(self, index) -> str:
        return self.errs[index].read_text()[-3000:]

    def summary(self, index) -> dict:
        return json.loads(self.outs[index].read_text())

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _checkpoint_steps(model_dir) -> list[int]:
    return sorted(int(m.group(1)) for p in model_dir.glob("ckpt-*.index")
                  if (m := re.fullmatch(r"ckpt-(\d+)\.index", p.name)))


def _weights(model_dir):
    model, step = model_io.load_trained_model(str(model_dir))
    return step, [v.numpy() for v in model.variables]


def _one_process_run(data_dir, model_dir, uri, steps):
    """The reference: the same training in this process on one device."""
    trainer.train(HybridConfig(variant=VARIANT, image_shape=TINY_SHAPE, **TINY),
                  tiny_train_config(data_dir, model_dir, uri, train_steps=steps,
                                    strategy="default", **TRAIN_KW))
    return _weights(model_dir)


def _assert_same_weights(reference, trained):
    (step_a, w_a), (step_b, w_b) = reference, trained
    assert step_a == step_b
    assert len(w_a) == len(w_b) > 10
    for a, b in zip(w_a, w_b):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def _runs(experiment):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_roles_and_worker_checkpoints_outside_a_cluster(tmp_path):
    """One process is the chief; a non-chief's saves return the chief's path, leave no
    files in its temporary directory, and remove_worker_copies deletes that directory."""
    strategy = tf.distribute.get_strategy()
    assert train_state.worker_role(strategy) == (True, "local")
    assert preemption.num_workers(strategy) == 1
    model_dir, temp = tmp_path / "model", tmp_path / "worker_tmp"
    ckpt = tf.train.Checkpoint(v=tf.Variable(1.0))
    fields = dict(strategy=strategy, model=None, g_opt=None, flow_opt=None, d_opt=None,
                  step_var=None, start_step=0, noise_shapes={}, model_dir=str(model_dir))
    worker = train_state.TrainState(manager=tf.train.CheckpointManager(ckpt, str(temp), 2),
                                    is_chief=False, task="worker:1", **fields)
    assert train_state.save_checkpoint(worker, 5) == str(model_dir / "ckpt-5")
    assert not list(temp.glob("ckpt-*")) and not model_dir.exists()
    train_state.remove_worker_copies(worker)
    assert not temp.exists()
    chief = train_state.TrainState(manager=tf.train.CheckpointManager(ckpt, str(model_dir), 2),
                                   **fields)
    assert train_state.save_checkpoint(chief, 5) == str(model_dir / "ckpt-5")
    train_state.remove_worker_copies(chief)  # the chief's checkpoints stay
    assert _checkpoint_steps(model_dir) == [5]


def test_each_worker_gets_its_rows_of_the_one_process_batch(digits_4_shards):
    """The trainer's dataset, rebatched and auto-sharded for 2 workers of 1 replica as
    experimental_distribute_dataset does it (TF's input_ops), gives worker i rows
    [4i, 4i + 4) of each one-process global batch of 8, images and noise alike. (With
    today's input AUTO falls back to DATA, since the enumerated step is no file source;
    the explicit DATA policy keeps it so whatever the input pipeline becomes.)"""
    from tensorflow.python.distribute import input_ops

    from pipeline import data as data_lib

    info = data_lib.read_dataset_info(digits_4_shards)
    cfg = tiny_train_config(digits_4_shards, "unused", "unused", **TRAIN_KW)
    shapes = {"dequant": (16, 16, 1), "posterior": (1, 4)}

    def train_dataset():  # a fresh one each time: a dataset's shuffle state is its own
        return trainer.make_train_dataset(info, cfg, 0, shapes)

    whole = list(train_dataset().take(3))
    for index in (0, 1):
        rows = input_ops.auto_shard_dataset(
            train_input.split_by_rows(train_dataset()).rebatch([4, 4]), 2, index, 2)
        for batch, part in zip(whole, rows.take(3)):
            for key in ("images", "dequant", "posterior"):
                np.testing.assert_array_equal(batch[key][4 * index:4 * index + 4], part[key])


@pytest.mark.slow
def test_two_workers_write_once_and_train_like_one_process(digits_4_shards, tmp_path,
                                                           tracking_uri):
    reference = _one_process_run(digits_4_shards, tmp_path / "one", tracking_uri, 4)
    model_dir, experiment = tmp_path / "two", f"mw-{uuid.uuid4().hex[:8]}"
    workers = Workers(tmp_path, "run", _flags(digits_4_shards, model_dir, tracking_uri,
                                              experiment, 4))
    try:
        codes = workers.wait()
    finally:
        workers.kill()
    assert codes == [0, 0], workers.stderr(0) + workers.stderr(1)
    chief, other = workers.summary(0), workers.summary(1)
    assert chief["step"] == other["step"] == 4 and chief["task"] == "worker:0"
    assert other["mlflow_run_id"] is None and other["grid"] is None
    assert chief["checkpoint"] == other["checkpoint"] == str(model_dir / "ckpt-4")
    runs = _runs(experiment)  # exactly one MLflow run: the chief's
    assert [r.info.run_id for r in runs] == [chief["mlflow_run_id"]]
    assert runs[0].info.status == "FINISHED" and "train/loss" in runs[0].data.metrics
    # One checkpoint series, the chief's files only; nothing of the other worker anywhere.
    assert _checkpoint_steps(model_dir) == [2, 4]
    names = {p.name for p in model_dir.iterdir()}
    assert names == {"checkpoint", "ckpt-2.index", "ckpt-2.data-00000-of-00001",
                     "ckpt-4.index", "ckpt-4.data-00000-of-00001", "model_config.json",
                     "mlflow_run_id", "mlflow_tracking_uri", "samples"}, names
    assert [p.name for p in (model_dir / "samples").iterdir()] == ["step_0000004.png"]
    assert not list(workers.tmpdirs[1].iterdir()), "the worker's temporary copies are left"
    # The global batch of 8 is split 4 + 4 by rows: the same training as one process.
    _assert_same_weights(reference, _weights(model_dir))


@pytest.mark.slow
def test_a_lost_worker_fails_the_job_and_a_restart_resumes(digits_4_shards, tmp_path,
                                                          tracking_uri):
    model_dir, experiment = tmp_path / "job", f"mw-{uuid.uuid4().hex[:8]}"
    workers = Workers(tmp_path, "first", _flags(digits_4_shards, model_dir, tracking_uri,
                                                experiment, 100000))
    try:
        deadline = time.time() + 300
        while time.time() < deadline and max(_checkpoint_steps(model_dir), default=0) < 4:
            assert [p.poll() for p in workers.procs] == [None, None], workers.stderr(0)
            time.sleep(0.2)
        assert max(_checkpoint_steps(model_dir), default=0) >= 4, "no checkpoint in 300 s"
        workers.procs[1].send_signal(signal.SIGKILL)  # the non-chief dies mid-run
        killed = time.time()
        code = workers.procs[0].wait(timeout=BOUND_S)  # the chief must not hang
        took = time.time() - killed
    finally:
        workers.kill()
    assert code == WORKER_LOST_EXIT, workers.stderr(0)
    err = workers.stderr(0)
    assert "a worker of the multi-worker job is gone" in err and "Traceback" not in err, err
    print(f"the chief exited {took:.1f} s after the other worker was killed")
    [run] = _runs(experiment)
    assert run.info.status == "FAILED"
    assert not (model_dir / "trainer.lock").exists()  # the chief released its lock
    saved = max(_checkpoint_steps(model_dir))
    # Both restarted: the chief and the other worker resume from the chief's checkpoint.
    again = Workers(tmp_path, "again", _flags(digits_4_shards, model_dir, tracking_uri,
                                              experiment, saved + 2))
    try:
        codes = again.wait()
    finally:
        again.kill()
    assert codes == [0, 0], again.stderr(0) + again.stderr(1)
    assert again.summary(0)["start_step"] == again.summary(1)["start_step"] == saved
    [run] = _runs(experiment)  # still one run, continued
    assert run.info.run_id == again.summary(0)["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    assert not list(again.tmpdirs[1].iterdir())
    reference = _one_process_run(digits_4_shards, tmp_path / "one", tracking_uri, saved + 2)
    _assert_same_weights(reference, _weights(model_dir))


@pytest.mark.slow
def test_a_signal_to_one_worker_stops_both_after_the_same_step(digits_4_shards, tmp_path,
                                                               tracking_uri):
    model_dir, experiment = tmp_path / "sig", f"mw-{uuid.uuid4().hex[:8]}"
    workers = Workers(tmp_path, "sig", _flags(digits_4_shards, model_dir, tracking_uri,
                                              experiment, 100000, ["--checkpoint_every=1000"]))
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # steps are running once metrics are logged
            assert [p.poll() for p in workers.procs] == [None, None], workers.stderr(0)
            runs = _runs(experiment)
            if runs and MlflowClient().get_metric_history(runs[0].info.run_id, "train/loss"):
                break
            time.sleep(0.5)
        else:
            pytest.fail("no training step within 300 s")
        workers.procs[1].send_signal(signal.SIGTERM)  # the non-chief only
        codes = workers.wait(timeout=BOUND_S)
    finally:
        workers.kill()
    assert codes == [128 + signal.SIGTERM] * 2, workers.stderr(0) + workers.stderr(1)
    stopped = [re.search(r"stopped after step (\d+)", workers.stderr(i)) for i in (0, 1)]
    assert all(stopped), workers.stderr(0) + workers.stderr(1)
    step = int(stopped[0].group(1))
    assert int(stopped[1].group(1)) == step > 0
    assert _checkpoint_steps(model_dir) == [step]  # the chief checkpointed the agreed step
    [run] = _runs(experiment)
    assert run.info.status == "KILLED"
    assert not list(workers.tmpdirs[1].iterdir())


@pytest.mark.slow
def test_a_worker_whose_cluster_never_starts_fails_instead_of_waiting(digits_4_shards,
                                                                      tmp_path, tracking_uri):
    """Worker 1 alone (the chief never comes up): it fails after --cluster_start_timeout_s
    with one line, touching nothing (TensorFlow's default is to wait forever)."""
    model_dir = tmp_path / "lone"
    cmd = _flags(digits_4_shards, model_dir, tracking_uri, "mw-lone", 2,
                 ["--cluster_start_timeout_s=5"])
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2",
               TF_CONFIG=json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in
                                                            _free_ports(2)]},
                                     "task": {"type": "worker", "index": 1}}))
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path,
                            timeout=240)
    assert result.returncode == WORKER_LOST_EXIT, result.stderr[-3000:]
    assert "did not start within 5 s" in result.stderr
    assert not model_dir.exists()
