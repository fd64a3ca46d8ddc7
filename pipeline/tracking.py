"""MLflow tracking of training and evaluation runs.

The tracking URI defaults to MLflow's own default (a local SQLite store, ./mlflow.db, with
artifacts in ./mlruns); any URI MLflow accepts (``http://host:5000``, ``sqlite:///x.db``)
works. A model directory remembers its run id in ``mlflow_run_id`` so a resumed training
run, and later evaluation and export, log to the same MLflow run.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Mapping

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

RUN_ID_FILE = "mlflow_run_id"
_MAX_PARAM_LENGTH = 6000
log = logging.getLogger(__name__)


def configure(tracking_uri: str | None) -> str:
    """Points MLflow at ``tracking_uri`` (None or '': MLflow's default); returns the URI."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.get_tracking_uri()


def run_id_of(model_dir: str) -> str | None:
    """The MLflow run id recorded in a model directory, if any."""
    path = os.path.join(model_dir, RUN_ID_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def _existing_run(run_id: str | None):
    if not run_id:
        return None
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        log.warning("MLflow run %s recorded in the model directory is not in the store %s; "
                    "starting a new run", run_id, mlflow.get_tracking_uri())
        return None


def log_params_once(run_id: str, params: Mapping[str, Any]) -> None:
    """Logs params; on a resumed run, values that changed become tags
    ``param_override.<name>`` (MLflow params are immutable)."""
    client = MlflowClient()
    existing = client.get_run(run_id).data.params
    fresh = {}
    for key, value in params.items():
        text = str(value)[:_MAX_PARAM_LENGTH]
        if key not in existing:
            fresh[key] = text
        elif existing[key] != text:
            client.set_tag(run_id, f"param_override.{key}", text)
    if fresh:
        mlflow.log_params(fresh)


@contextlib.contextmanager
def tracked_run(model_dir: str, experiment: str, run_name: str | None = None,
                tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """Starts (or resumes, by the model directory's run id) an MLflow run and yields its
    id. The run ends FINISHED on success, FAILED on an exception and KILLED on Ctrl-C;
    the exception propagates."""
    os.makedirs(model_dir, exist_ok=True)
    previous = _existing_run(run_id_of(model_dir))
    if previous is not None:
        run = mlflow.start_run(run_id=previous.info.run_id)
    else:
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=run_name, tags=dict(tags or {}))
        with open(os.path.join(model_dir, RUN_ID_FILE), "w") as f:
            f.write(run.info.run_id)
    status = RunStatus.to_string(RunStatus.FINISHED)
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    except BaseException:
        status = RunStatus.to_string(RunStatus.FAILED)
        raise
    finally:
        mlflow.end_run(status=status)


@contextlib.contextmanager
def attached_run(model_dir: str) -> Iterator[str | None]:
    """Re-opens the model directory's MLflow run for more logging (evaluation, export);
    yields None, and logs nothing, if the model directory has no known run."""
    previous = _existing_run(run_id_of(model_dir))
    if previous is None:
        yield None
        return
    active = mlflow.active_run()
    if active is not None and active.info.run_id == previous.info.run_id:
        yield active.info.run_id
        return
    # nested: another run (e.g. a caller's) may be active; MLflow refuses a second top one.
    with mlflow.start_run(run_id=previous.info.run_id, nested=active is not None):
        yield previous.info.run_id
