"""MLflow tracking of training and evaluation runs.

The tracking URI defaults to MLflow's own default (a local SQLite store, ./mlflow.db, with
artifacts in ./mlruns); any URI MLflow accepts (``http://host:5000``, ``sqlite:///x.db``)
works. A model directory remembers its run id in ``mlflow_run_id`` and the (absolute)
tracking URI of that run in ``mlflow_tracking_uri``, so a resumed training run, and later
evaluation and export, log to the same MLflow run from any working directory.

Tracking never stops training: calls made inside the training loop go through
:func:`call_with_retries`, which retries a failed call a few times and then logs a
warning and carries on.

Several trainers may start at the same moment against a store that does not exist yet
(a new ``sqlite:///`` file, a new experiment): MLflow creates the tables, runs its schema
migrations and creates the experiment without guarding against a concurrent creator, and
the loser crashes (``table experiments already exists``, an alembic migration that finds
no row, ``Experiment ... already exists``). :func:`tracked_run` therefore opens the store
under a per-database file lock (:func:`open_store`; SQLite stores, one host) and retries
the store and experiment creation after a short random delay when one of those creation
races is detected (:func:`is_creation_race`; e.g. against an MLflow process that takes no
lock).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import math
import os
import random
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

RUN_ID_FILE = "mlflow_run_id"
TRACKING_URI_FILE = "mlflow_tracking_uri"
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_S = 0.25  # seconds before the first retry; doubles after each failure
CREATION_ATTEMPTS = 3  # store/experiment creation: the first try and two retries
CREATION_DELAY_S = (0.5, 2.0)  # a retry after a creation race waits a random time in this range
STORE_LOCK_TIMEOUT_S = 300.0  # the longest wait for another process creating the same store
# What MLflow raises when two processes create the same store or experiment at once: the
# loser's CREATE TABLE on tables the winner made, an alembic migration whose version row the
# winner already moved, a schema that the winner is still migrating, a duplicate experiment.
_CREATION_RACE_MARKERS = (
    "already exists", "expected to match one row", "unique constraint failed",
    "out-of-date database schema", "database is locked", "resource_already_exists")
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


def is_creation_race(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) is what a concurrent creation
    of the same MLflow store or experiment raises (:data:`_CREATION_RACE_MARKERS`)."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = f"{type(cur).__name__} {cur} {getattr(cur, 'error_code', '')}".lower()
        if any(marker in text for marker in _CREATION_RACE_MARKERS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def retry_creation_race(fn: Callable[..., Any], *args: Any, what: str = "",
                        attempts: int = CREATION_ATTEMPTS, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; if it fails with a creation race (:func:`is_creation_race`),
    tried again after a random delay in :data:`CREATION_DELAY_S` (times the attempt
    number), up to ``attempts`` tries in all. Any other error, or the last one, propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if attempt == attempts or not is_creation_race(err):
                raise
            delay = random.uniform(*CREATION_DELAY_S) * attempt
            log.warning("MLflow %s collided with another process creating it at the same time "
                        "(%s: %s); retrying in %.1f s", what or getattr(fn, "__name__", "call"),
                        type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "",
                        delay)
            time.sleep(delay)
    return None


def _sqlite_file(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return os.path.abspath(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def _store_creation_lock(uri: str) -> Iterator[None]:
    """An exclusive flock serializing the opening (and so the creation and migration) of
    one SQLite store among this project's processes on this host; a no-op for other stores.
    The lock file lives in the temporary directory (``ad-mlflow-init-<hash>.lock``), not
    next to the database. If the lock cannot be had (no flock here, or another process
    holds it for more than :data:`STORE_LOCK_TIMEOUT_S`), the store is opened without it
    (the creation-race retries still apply)."""
    db = _sqlite_file(uri)
    if db is None:
        yield
        return
    digest = hashlib.sha256(db.encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"ad-mlflow-init-{digest}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        log.warning("cannot create the MLflow store lock %s (%s); opening the store without it",
                    path, err)
        yield
        return
    try:
        deadline = time.monotonic() + STORE_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("another process has held the MLflow store lock %s for over "
                                "%.0f s; opening the store without it", path, STORE_LOCK_TIMEOUT_S)
                    break
                time.sleep(0.05)
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                break  # no flock on this file system
        yield
    finally:
        os.close(fd)  # drops the flock


def open_store(experiment: str | None = None) -> None:
    """Opens MLflow's store of the current tracking URI (in a new SQLite file: creates its
    tables and runs its migrations) under :func:`_store_creation_lock`, and looks up
    ``experiment``, retrying when another process creates the same store at the same moment
    (:func:`retry_creation_race`). MLflow caches the store per URI, so later calls of this
    process reuse it."""
    uri = mlflow.get_tracking_uri()

    def open_once() -> None:
        with _store_creation_lock(uri):
            MlflowClient(uri).get_experiment_by_name(experiment or "Default")

    retry_creation_race(open_once, what=f"store {uri}")


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
    id; records the run id and the absolute tracking URI in ``model_dir``. The store and
    the experiment are created safely when several processes start at once
    (:func:`open_store`, :func:`retry_creation_race`). The run ends
    FINISHED on success, FAILED on an exception and KILLED on Ctrl-C / SIGTERM
    (KeyboardInterrupt); the exception propagates. A failure to end the run is retried,
    then logged as a warning."""
    os.makedirs(model_dir, exist_ok=True)
    open_store(experiment)  # a new store: created once, even by trainers started together
    previous = _existing_run(run_id_of(model_dir))
    if previous is not None:
        run = mlflow.start_run(run_id=previous.info.run_id)
    else:
        retry_creation_race(mlflow.set_experiment, experiment,
                            what=f"experiment {experiment!r}")
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
