"""The MLflow run a model directory belongs to: the store it logs to and its runs.

The tracking URI defaults to MLflow's own default (a local SQLite store, ./mlflow.db, with
artifacts in ./mlruns); any URI MLflow accepts (``http://host:5000``, ``sqlite:///x.db``)
works. A model directory remembers its run id in ``mlflow_run_id`` and the (absolute)
tracking URI of that run in ``mlflow_tracking_uri``, so a resumed training run, and later
evaluation and export, log to the same MLflow run from any working directory.

:func:`tracked_run` starts or resumes a model directory's run, :func:`attached_run`
re-opens it, :func:`log_results` logs an evaluation to it; one-off calls go through
:func:`call_with_retries`. The store and the experiment are created safely when several
processes start at once (:mod:`artifacts.store_creation`); a training run is tracked
without ever being stopped by its store by :mod:`artifacts.run_tracker`.
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

from artifacts import store_creation

RUN_ID_FILE = "mlflow_run_id"
TRACKING_URI_FILE = "mlflow_tracking_uri"
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_S = 0.25  # seconds before the first retry; doubles after each failure
MAX_PARAM_LENGTH = 6000
MAX_BATCH_METRICS = 1000  # MLflow's limit of metrics per log_batch
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


def existing_run(run_id: str | None):
    """The run ``run_id`` of the current store; None if there is no id or (with a warning)
    the store has no such run."""
    if not run_id:
        return None
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        log.warning("MLflow run %s recorded in the model directory is not in the store %s; "
                    "starting a new run", run_id, mlflow.get_tracking_uri())
        return None


def log_params_once(run_id: str, params: Mapping[str, Any],
                    client: MlflowClient | None = None) -> None:
    """Logs params; on a resumed run, values that changed become tags
    ``param_override.<name>`` (MLflow params are immutable)."""
    from mlflow.entities import Param

    client = client or MlflowClient()
    existing = client.get_run(run_id).data.params
    fresh = {}
    for key, value in params.items():
        text = str(value)[:MAX_PARAM_LENGTH]
        if key not in existing:
            fresh[key] = text
        elif existing[key] != text:
            client.set_tag(run_id, f"param_override.{key}", text)
    if fresh:
        client.log_batch(run_id, params=[Param(k, v) for k, v in fresh.items()])


@contextlib.contextmanager
def tracked_run(model_dir: str, experiment: str, run_name: str | None = None,
                tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """Starts (or resumes, by the model directory's run id) an MLflow run and yields its
    id; records the run id and the absolute tracking URI in ``model_dir``. The store and
    the experiment are created safely when several processes start at once
    (:func:`~artifacts.store_creation.open_store`,
    :func:`~artifacts.store_creation.retry_creation_race`). The run ends
    FINISHED on success, FAILED on an exception and KILLED on Ctrl-C / SIGTERM
    (KeyboardInterrupt); the exception propagates. A failure to end the run is retried,
    then logged as a warning."""
    os.makedirs(model_dir, exist_ok=True)
    # a new store: created once, even by trainers started together
    store_creation.open_store(experiment)
    previous = existing_run(run_id_of(model_dir))
    if previous is not None:
        run = mlflow.start_run(run_id=previous.info.run_id)
    else:
        run = mlflow.start_run(experiment_id=store_creation.experiment_id(experiment),
                               run_name=run_name, tags=dict(tags or {}))
        with open(os.path.join(model_dir, RUN_ID_FILE), "w") as f:
            f.write(run.info.run_id)
    with open(os.path.join(model_dir, TRACKING_URI_FILE), "w") as f:
        f.write(absolute_uri(mlflow.get_tracking_uri()))
    def end(status: str) -> None:
        try:
            mlflow.end_run(status=status)  # leaves the run inactive, even when it fails
        except Exception:  # noqa: BLE001 -- retry the status update, then only warn
            call_with_retries(MlflowClient().set_terminated, run.info.run_id, status)

    with ended_with_status(end):
        yield run.info.run_id


@contextlib.contextmanager
def ended_with_status(end: Callable[[str], Any]) -> Iterator[None]:
    """Runs the block, then ``end(status)``: FINISHED, KILLED on Ctrl-C / SIGTERM
    (KeyboardInterrupt), FAILED on any other exception; the exception propagates."""
    status = RunStatus.to_string(RunStatus.FINISHED)
    try:
        yield
    except KeyboardInterrupt:
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    except BaseException:
        status = RunStatus.to_string(RunStatus.FAILED)
        raise
    finally:
        end(status)


@contextlib.contextmanager
def attached_run(model_dir: str) -> Iterator[str | None]:
    """Re-opens the model directory's MLflow run for more logging (evaluation, export);
    yields None, and logs nothing, if the model directory has no known run."""
    previous = existing_run(run_id_of(model_dir))
    if previous is None:
        yield None
        return
    active = mlflow.active_run()
    if active is not None and active.info.run_id == previous.info.run_id:
        yield active.info.run_id
        return
    # MLflow refuses to re-open a run outside the process's active experiment (one a caller
    # set with mlflow.set_experiment): that choice is set aside while the run is open, then
    # restored. fluent._active_experiment_id is MLflow's own record of it (no public unset).
    from mlflow.tracking import fluent

    caller_experiment = getattr(fluent, "_active_experiment_id", None)
    set_aside = caller_experiment not in (None, previous.info.experiment_id)
    if set_aside:
        fluent._active_experiment_id = None
    try:
        # nested: another run (e.g. a caller's) may be active; MLflow refuses a second top one.
        with mlflow.start_run(run_id=previous.info.run_id, nested=active is not None):
            yield previous.info.run_id
    finally:
        if set_aside:
            fluent._active_experiment_id = caller_experiment


def log_results(model_dir: str, results: dict[str, Any], prefix: str) -> str | None:
    """Logs the numeric entries of an evaluation's ``results`` as MLflow metrics
    ``<prefix>/<name>`` on the run of ``model_dir``, and the whole dict as the JSON
    artifact ``evaluation/<prefix>.json``; returns the run id (None if the model has none,
    or if the store fails: then one warning, and the caller's results stand)."""
    try:
        return _log_results(model_dir, results, prefix)
    except Exception as err:  # noqa: BLE001 -- tracking is never fatal to the evaluation
        log.warning("MLflow store %s failed, %s results not logged (%s)",
                    mlflow.get_tracking_uri(), prefix, first_line(err))
        return None


def log_metrics_batched(client: MlflowClient, run_id: str, metrics: list) -> None:
    """Logs ``metrics`` (``mlflow.entities.Metric``) on run ``run_id`` in as few
    ``log_batch`` calls as MLflow's per-call limit allows (1,000 metrics a call)."""
    for start in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start:start + MAX_BATCH_METRICS])


def _log_results(model_dir: str, results: dict[str, Any], prefix: str) -> str | None:
    # The client, not the fluent API: no run is started, so neither an active run nor an
    # active experiment of the caller's process (a training run in another experiment) is in
    # the way, and the caller's fluent state is left as it was.
    from mlflow.entities import Metric

    previous = existing_run(run_id_of(model_dir))
    if previous is None:
        log.warning("no MLflow run recorded in %s; results not logged", model_dir)
        return None
    run_id = previous.info.run_id
    client = MlflowClient()
    now_ms = int(time.time() * 1000)
    metrics = [Metric(f"{prefix}/{k}", float(v), now_ms, 0) for k, v in results.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    log_metrics_batched(client, run_id, metrics)
    client.log_dict(run_id, results, f"evaluation/{prefix.replace('/', '_')}.json")
    return run_id


def first_line(err: BaseException) -> str:
    """An error as one short line for a warning: its type and its message's first line."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__
