"""Fault injection (issue 26 item 5): the MLflow store is never fatal to training.

A corrupt or unreachable store at start is one warning and training goes on with its
metrics kept in the model directory (or, with ``--strict_tracking``, one error line before
any work); a store that fails mid-run is retried in the background, so training never
waits for it, and its metrics reach the store when it is back, or the model directory."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from artifacts import cli, run_tracker, tracking
from pipeline import trainer
from tfp_models.hybrid import HybridConfig

from conftest import TINY, TINY_SHAPE, tiny_train_config

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model_cfg() -> HybridConfig:
    return HybridConfig(variant="vae_f", image_shape=TINY_SHAPE, **TINY)


def _corrupt_store(tmp_path) -> str:
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"this is not an sqlite file\n" * 200)
    return f"sqlite:///{db}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the with ends: connections are refused


def _unsent(model_dir) -> list[dict]:
    path = model_dir / run_tracker.UNSENT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# The project's MLflow modules: store creation, runs, a training run's tracker.
TRACKING_LOGGERS = ("artifacts.store_creation", "artifacts.tracking", "artifacts.run_tracker")


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name in TRACKING_LOGGERS]


@pytest.fixture
def restore_uri(tracking_uri):
    yield tracking_uri
    mlflow.set_tracking_uri(tracking_uri)  # the session's store for the other tests


def test_unreachable_server_at_start_is_one_warning_and_tracking_off(tmp_path, caplog,
                                                                    restore_uri):
    """A server URI nobody listens on: known in seconds, one warning, the run's calls go
    to the model dir (before: chained tracebacks and no training)."""
    model_dir = tmp_path / "m"
    tracking.configure(f"http://127.0.0.1:{_closed_port()}", str(model_dir))
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="artifacts"):
        error = run_tracker.check_store("faults")
        assert error and "Connection" in error, error
        with run_tracker.background_run(str(model_dir), "faults", store_error=error) as tracker:
            tracker.log_metrics({"train/loss": 1.5}, 1)
            tracker.log_params({"lr": 0.1})
    assert time.monotonic() - start < 15
    assert tracker.run_id is None and not (model_dir / tracking.RUN_ID_FILE).exists()
    lines = _warnings(caplog)
    assert len(lines) == 1 and "not usable" in lines[0] and "without tracking" in lines[0], lines
    assert [i["kind"] for i in _unsent(model_dir)] == ["metrics", "params"]


def test_strict_tracking_is_one_error_line_before_any_work(digits16, tmp_path, capsys,
                                                           monkeypatch, restore_uri):
    """--strict_tracking on a corrupt store: one `error:` line, exit 2, no model built and
    nothing written to the model directory."""
    def no_work(self):
        raise AssertionError("the model was built before the store was checked")

    monkeypatch.setattr(trainer.TrainRunner, "build_state", no_work)
    cfg = tiny_train_config(digits16, tmp_path / "m", _corrupt_store(tmp_path),
                            strict_tracking=True)
    main = cli.user_errors("python -m pipeline.train")(lambda: trainer.train(_model_cfg(), cfg))
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m pipeline.train: error: MLflow store")
    assert "corrupt.db" in err[0] and "not usable" in err[0], err
    assert not any(p.name.startswith("ckpt-") for p in (tmp_path / "m").glob("*"))


@pytest.mark.slow
def test_corrupt_store_at_start_trains_and_a_later_run_sends_the_metrics(
        digits16, tmp_path, caplog, restore_uri):
    """A corrupt sqlite file at start: one warning, 2 steps trained, their metrics kept in
    the model dir; the resume on a working store sends them to its run (steps 1-3)."""
    model_dir = tmp_path / "m"
    with caplog.at_level(logging.WARNING, logger="artifacts"):
        summary = trainer.train(_model_cfg(), tiny_train_config(
            digits16, model_dir, _corrupt_store(tmp_path), train_steps=2))
    assert summary["step"] == 2 and summary["mlflow_run_id"] is None
    lines = _warnings(caplog)
    assert len(lines) == 1 and "corrupt.db is not usable" in lines[0], lines
    assert [i["step"] for i in _unsent(model_dir) if i["kind"] == "metrics"] == [1, 2]
    summary = trainer.train(_model_cfg(), tiny_train_config(
        digits16, model_dir, restore_uri, train_steps=3))
    client = MlflowClient(restore_uri)
    run_id = summary["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == [1, 2, 3]
    assert not (model_dir / run_tracker.UNSENT_FILE).exists()


@pytest.mark.slow
def test_a_hanging_store_mid_run_never_blocks_training(digits16, tmp_path, monkeypatch,
                                                       restore_uri):
    """From step 2 to 4 every store call hangs 3 s and fails (a dead server): no call is
    made on the training thread, no step waits for one, and when the store is back all
    metrics of steps 1-6 are sent (before: each step blocked for the retries; 28 steps
    took 237 s against a dead server)."""
    dead = threading.Event()
    callers: list[bool] = []
    real = MlflowClient.log_batch

    def log_batch(self, *args, **kwargs):
        callers.append(threading.current_thread() is threading.main_thread())
        if dead.is_set():
            time.sleep(3.0)
            raise ConnectionError("tracking server is gone")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    monkeypatch.setattr(run_tracker, "CLOSE_GRACE_MIN_S", 120.0)  # the store is back by then
    stamps: dict[int, float] = {}

    def on_step(step, values):
        stamps[step] = time.monotonic()
        if step == 2:
            dead.set()
        if step == 5:
            dead.clear()

    summary = trainer.train(_model_cfg(), tiny_train_config(
        digits16, tmp_path / "m", restore_uri, train_steps=6, checkpoint_every=6),
        on_step=on_step)
    assert callers and not any(callers), "a store call ran on the training thread"
    gaps = [stamps[s + 1] - stamps[s] for s in range(2, 5)]
    assert max(gaps) < 3.0, gaps  # a step never waited for a hanging call
    client = MlflowClient(restore_uri)
    run_id = summary["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == [
        1, 2, 3, 4, 5, 6]


def test_a_store_dead_to_the_end_leaves_the_calls_in_the_model_dir(tmp_path, caplog,
                                                                   monkeypatch, restore_uri):
    """The store dies after the run starts and never comes back: closing waits at most
    the grace time, writes the unsent calls to the model dir with one warning, and the next
    run of the directory on a working store sends them."""
    monkeypatch.setattr(run_tracker, "CLOSE_GRACE_MIN_S", 0.5)
    model_dir = tmp_path / "m"
    tracking.configure(restore_uri)
    real = MlflowClient.log_batch

    def dead(self, *args, **kwargs):
        raise ConnectionError("tracking server is gone")

    monkeypatch.setattr(MlflowClient, "log_batch", dead)
    with caplog.at_level(logging.WARNING, logger="artifacts"):
        with run_tracker.background_run(str(model_dir), "faults") as tracker:
            for step in (1, 2, 3):
                tracker.log_metrics({"train/loss": float(step)}, step)
            start = time.monotonic()
        assert time.monotonic() - start < 5
    lines = _warnings(caplog)
    assert len(lines) == 2 and "retrying in the background" in lines[0], lines
    assert "still failing" in lines[1] and run_tracker.UNSENT_FILE in lines[1], lines
    assert [i["step"] for i in _unsent(model_dir) if i["kind"] == "metrics"] == [1, 2, 3]
    monkeypatch.setattr(MlflowClient, "log_batch", real)
    # a slow (loaded) store is no dead one
    monkeypatch.setattr(run_tracker, "CLOSE_GRACE_MIN_S", 120.0)
    with run_tracker.background_run(str(model_dir), "faults") as again:
        assert again.run_id == tracker.run_id
    history = MlflowClient(restore_uri).get_metric_history(tracker.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert not (model_dir / run_tracker.UNSENT_FILE).exists()


# --------------------------------------------------------------------------------------
# MLflow: trainers started at the same moment against a new SQLite store.
# --------------------------------------------------------------------------------------
_STARTER = """
import os, sys, time
from artifacts import tracking
import mlflow
uri, model_dir, go = sys.argv[1:4]
open(model_dir + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
tracking.configure(uri, model_dir)
with tracking.tracked_run(model_dir, "faults-race") as run_id:
    mlflow.log_metric("train/loss", 1.0, step=1)
print(run_id)
"""


@pytest.mark.slow
def test_trainers_starting_together_on_a_new_sqlite_store_both_track(tmp_path):
    """Two pairs of processes, each pair released at the same instant onto its own new
    sqlite file (what two `pipeline.train` runs do at start: configure, then tracked_run).
    Before: one of a pair crashed with `table experiments already exists` or an alembic
    migration error (3 of 3 pairs), and a new file could be left half migrated."""
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    env.pop("MLFLOW_TRACKING_URI", None)
    go = tmp_path / "go"
    pairs = []
    for p in range(2):
        uri = f"sqlite:///{tmp_path / f'store{p}' / 'mlflow.db'}"
        (tmp_path / f"store{p}").mkdir()
        procs = [subprocess.Popen(
            [sys.executable, "-c", _STARTER, uri, str(tmp_path / f"m{p}{i}"), str(go)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        pairs.append((uri, procs))
    deadline = time.time() + 240
    while len(list(tmp_path.glob("*.ready"))) < 4:
        assert time.time() < deadline, "the processes did not start within 240 s"
        assert all(p.poll() is None for _, procs in pairs for p in procs)
        time.sleep(0.05)
    go.touch()  # all four at once
    from mlflow.tracking import MlflowClient

    for uri, procs in pairs:
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err[-3000:]
        run_ids = [out.strip().splitlines()[-1] for out, _ in outs]
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("faults-race")
        runs = client.search_runs([experiment.experiment_id])
        assert sorted(r.info.run_id for r in runs) == sorted(run_ids) and len(set(run_ids)) == 2
        assert all(r.info.status == "FINISHED" and r.data.metrics["train/loss"] == 1.0
                   for r in runs)
