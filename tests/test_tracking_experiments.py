"""Runs of several experiments tracked from one process: starting a run must not leave an
active experiment behind that makes MLflow refuse to re-open another experiment's run (the
full suite's in-process CLI tests did exactly that: an evaluation's metrics were lost)."""
from __future__ import annotations

import os

import mlflow
from mlflow.tracking import MlflowClient

from artifacts import run_tracker, store_creation, tracking


def test_runs_of_other_experiments_stay_open_to_logging(tracking_uri, tmp_path):
    mlflow.set_tracking_uri(tracking_uri)
    dir_a, dir_b, dir_c = (str(tmp_path / name) for name in ("a", "b", "c"))
    for d in (dir_a, dir_b):
        os.makedirs(d)
    run_a = run_tracker._start_run(dir_a, "exp-track-a", "a", None)
    run_b = run_tracker._start_run(dir_b, "exp-track-b", "b", None)  # a second experiment
    with tracking.tracked_run(dir_c, "exp-track-c") as run_c:  # a third, fluent
        pass
    client = MlflowClient(tracking_uri)
    names = {client.get_experiment(client.get_run(r).info.experiment_id).name
             for r in (run_a, run_b, run_c)}
    assert names == {"exp-track-a", "exp-track-b", "exp-track-c"}
    assert store_creation.experiment_id("exp-track-a") == client.get_run(run_a).info.experiment_id

    # Evaluations of run a, then of run b, in the same process.
    assert tracking.log_results(dir_a, {"bpd": 1.5, "note": "x", "bad": float("nan")},
                                "eval/validation") == run_a
    assert tracking.log_results(dir_b, {"bpd": 2.5}, "eval/validation") == run_b
    assert client.get_run(run_a).data.metrics == {"eval/validation/bpd": 1.5}
    assert client.get_run(run_b).data.metrics == {"eval/validation/bpd": 2.5}
    assert "evaluation/eval_validation.json" in {
        f.path for f in client.list_artifacts(run_a, "evaluation")}
    # ... and a fluent re-open (what an export does) of a run outside the last experiment.
    with tracking.attached_run(dir_a) as attached:
        assert attached == run_a
        mlflow.log_metric("export/ok", 1.0)
    assert client.get_run(run_a).data.metrics["export/ok"] == 1.0
    assert mlflow.active_run() is None


def test_a_caller_experiment_does_not_block_logging_results(tracking_uri, tmp_path,
                                                            monkeypatch):
    """A user's notebook that set its own experiment can still evaluate and export a trained
    model; its experiment is still the active one afterwards."""
    from mlflow.tracking import fluent

    mlflow.set_tracking_uri(tracking_uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)  # restored after the test
    model_dir = str(tmp_path / "m")
    os.makedirs(model_dir)
    run_id = run_tracker._start_run(model_dir, "exp-track-model", "m", None)
    notebook = mlflow.set_experiment("exp-track-notebook").experiment_id
    assert tracking.log_results(model_dir, {"fid": 12.0}, "eval/test") == run_id
    with tracking.attached_run(model_dir) as attached:
        assert attached == run_id
        mlflow.log_metric("export/ok", 1.0)
    assert MlflowClient(tracking_uri).get_run(run_id).data.metrics == {"eval/test/fid": 12.0,
                                                                       "export/ok": 1.0}
    assert fluent._active_experiment_id == notebook
    with mlflow.start_run() as run:  # the notebook's own runs still go to its experiment
        assert run.info.experiment_id == notebook


def test_metrics_over_the_batch_limit_are_all_logged(tracking_uri, tmp_path):
    """2,500 metrics (a long critic curve) exceed MLflow's 1,000 per ``log_batch``: all
    arrive, in three calls, each step with its value."""
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(tracking_uri)
    os.makedirs(tmp_path / "m")
    run_id = run_tracker._start_run(str(tmp_path / "m"), "exp-track-batch", "m", None)
    client = MlflowClient(tracking_uri)
    calls = []
    real_log_batch = client.log_batch

    def counting_log_batch(rid, metrics=(), **kw):
        calls.append(len(metrics))
        return real_log_batch(rid, metrics=metrics, **kw)

    client.log_batch = counting_log_batch
    metrics = [Metric("curve", float(i) / 2, 0, i) for i in range(2500)]
    tracking.log_metrics_batched(client, run_id, metrics)
    assert calls == [1000, 1000, 500]
    history = sorted(client.get_metric_history(run_id, "curve"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(i, i / 2) for i in range(2500)]
