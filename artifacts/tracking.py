"""MLflow tracking of training and evaluation runs.

The tracking URI defaults to MLflow's own default (a local SQLite store, ./mlflow.db, with
artifacts in ./mlruns); any URI MLflow accepts (``http://host:5000``, ``sqlite:///x.db``)
works. A model directory remembers its run id in ``mlflow_run_id`` and the (absolute)
tracking URI of that run in ``mlflow_tracking_uri``, so a resumed training run, and later
evaluation and export, log to the same MLflow run from any working directory.

Tracking never stops training: calls made inside the training loop go through
:func:`call_with_retries`, which retries a failed call a few times and then logs a
warning and carries on.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any, Callable, Iterator, Mapping

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

RUN_ID_FILE = "mlflow_run_id"
TRACKING_URI_FILE = "mlflow_tracking_uri"
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_S = 0.25  # seconds before the first retry; doubles after each failure
_MAX_PARAM_LENGTH = 6000
log = logging.getLogger(__name__)


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative local path made absolute (against the current directory):
    ``sqlite:///mlflow.db`` -> ``sqlite:////abs/mlflow.db``, ``file:mlruns`` or ``mlruns``
    -> ``file:///abs/mlruns``; server URIs (http, databricks, ...) are returned unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            return "sqlite:///" + os.path.abspath(path)
        return uri
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return "file://" + os.path.abspath(uri[len("file:"):])
    if "://" not in uri and not uri.startswith("file:") and ":" not in uri.split("/")[0]:
        return "file://" + os.path.abspath(uri)
    return uri


def tracking_uri_of(model_dir: str) -> str | None:
    """The tracking URI recorded in a model directory next to its run id, if any."""
    path = os.path.join(model_dir, TRACKING_URI_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def configure(tracking_uri: str | None, model_dir: str | None = None) -> str:
    """Points MLflow at ``tracking_uri``; if it is None or '', at the URI recorded in
    ``model_dir`` (the store of the directory's run), else MLflow's default. Returns the
    URI in use.

    HTTP stores get bounded client retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``,
    ``MLFLOW_HTTP_REQUEST_TIMEOUT=30`` seconds) unless the environment sets them, so an
    unreachable server delays a training step by seconds, not minutes."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if not tracking_uri and model_dir:
        tracking_uri = tracking_uri_of(model_dir)
    if tracking_uri:
        mlflow.set_tracking_uri(absolute_uri(tracking_uri))
    return mlflow.get_tracking_uri()


def call_with_retries(fn: Callable[..., Any], *args: Any, attempts: int = RETRY_ATTEMPTS,
                      backoff_s: float = RETRY_BACKOFF_S, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, retried up to ``attempts`` times in all, sleeping
    ``backoff_s`` seconds before the first retry and twice as long before each next one.
    If every attempt fails, logs a warning naming the call and the last error and returns
    None: a tracking failure (a locked or broken SQLite file, an unreachable server) never
    stops the caller. KeyboardInterrupt and SystemExit propagate."""
    name = getattr(fn, "__qualname__", repr(fn))
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 -- any tracking failure is non-fatal
            if attempt == attempts:
                log.warning("MLflow call %s failed %d times, skipped (training goes on): "
                            "%s: %s", name, attempts, type(err).__name__,
                            str(err).splitlines()[0][:300] if str(err) else "")
                return None
            time.sleep(backoff_s * 2 ** (attempt - 1))
    return None


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
    id; records the run id and the absolute tracking URI in ``model_dir``. The run ends
    FINISHED on success, FAILED on an exception and KILLED on Ctrl-C / SIGTERM
    (KeyboardInterrupt); the exception propagates. A failure to end the run is retried,
    then logged as a warning."""
    os.makedirs(model_dir, exist_ok=True)
    previous = _existing_run(run_id_of(model_dir))
    if previous is not None:
        run = mlflow.start_run(run_id=previous.info.run_id)
    else:
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=run_name, tags=dict(tags or {}))
        with open(os.path.join(model_dir, RUN_ID_FILE), "w") as f:
            f.write(run.info.run_id)
    with open(os.path.join(model_dir, TRACKING_URI_FILE), "w") as f:
        f.write(absolute_uri(mlflow.get_tracking_uri()))
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
        try:
            mlflow.end_run(status=status)  # leaves the run inactive, even when it fails
        except Exception:  # noqa: BLE001 -- retry the status update, then only warn
            call_with_retries(MlflowClient().set_terminated, run.info.run_id, status)


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


def log_results(model_dir: str, results: dict[str, Any], prefix: str) -> str | None:
    """Logs the numeric entries of an evaluation's ``results`` as MLflow metrics
    ``<prefix>/<name>`` on the run of ``model_dir``, and the whole dict as the JSON
    artifact ``evaluation/<prefix>.json``; returns the run id (None if the model has none)."""
    with attached_run(model_dir) as run_id:
        if run_id is None:
            log.warning("no MLflow run recorded in %s; results not logged", model_dir)
            return None
        numeric = {f"{prefix}/{k}": float(v) for k, v in results.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        mlflow.log_metrics(numeric)
        mlflow.log_dict(results, f"evaluation/{prefix.replace('/', '_')}.json")
        return run_id
