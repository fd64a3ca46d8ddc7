"""MLflow tracking of training and evaluation runs.

The tracking URI defaults to MLflow's own default (a local SQLite store, ./mlflow.db, with
artifacts in ./mlruns); any URI MLflow accepts (``http://host:5000``, ``sqlite:///x.db``)
works. A model directory remembers its run id in ``mlflow_run_id`` and the (absolute)
tracking URI of that run in ``mlflow_tracking_uri``, so a resumed training run, and later
evaluation and export, log to the same MLflow run from any working directory.

Tracking never stops training. At start, :func:`check_store` tries the store (HTTP without
retries): a corrupt or unreachable store is one warning and training goes on with tracking
off (``--strict_tracking``: one error line, :class:`TrackingUnavailable`, before any work).
During the run (:func:`background_run`) every call goes through a :class:`RunTracker`,
which sends it from a background thread and retries a failing store with exponential
back-off, so a training step never waits for the store; what is still unsent at the end
(after a grace of 5 s or 5 % of the run's time), or every call when tracking is off, is
kept in the model directory's ``mlflow_unsent.jsonl`` and sent by the next run of that
directory that reaches its store. Other one-off calls go through :func:`call_with_retries`.

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

import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import tempfile
import threading
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


def experiment_id(name: str, client: MlflowClient | None = None) -> str:
    """The id of the experiment ``name`` in the current store, created if missing (safe when
    several processes create it at once: :func:`retry_creation_race`). Unlike
    ``mlflow.set_experiment`` it leaves the process's active experiment alone: a later
    ``mlflow.start_run(run_id=...)`` of a run in another experiment (an evaluation or export
    of another model in the same process) is not refused."""
    client = client or MlflowClient()

    def get_or_create() -> str:
        found = client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else client.create_experiment(name)

    return retry_creation_race(get_or_create, what=f"experiment {name!r}")


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


def log_params_once(run_id: str, params: Mapping[str, Any],
                    client: MlflowClient | None = None) -> None:
    """Logs params; on a resumed run, values that changed become tags
    ``param_override.<name>`` (MLflow params are immutable)."""
    from mlflow.entities import Param

    client = client or MlflowClient()
    existing = client.get_run(run_id).data.params
    fresh = {}
    for key, value in params.items():
        text = str(value)[:_MAX_PARAM_LENGTH]
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
        run = mlflow.start_run(experiment_id=experiment_id(experiment), run_name=run_name,
                               tags=dict(tags or {}))
        with open(os.path.join(model_dir, RUN_ID_FILE), "w") as f:
            f.write(run.info.run_id)
    with open(os.path.join(model_dir, TRACKING_URI_FILE), "w") as f:
        f.write(absolute_uri(mlflow.get_tracking_uri()))
    def end(status: str) -> None:
        try:
            mlflow.end_run(status=status)  # leaves the run inactive, even when it fails
        except Exception:  # noqa: BLE001 -- retry the status update, then only warn
            call_with_retries(MlflowClient().set_terminated, run.info.run_id, status)

    with _ended_with_status(end):
        yield run.info.run_id


@contextlib.contextmanager
def _ended_with_status(end: Callable[[str], Any]) -> Iterator[None]:
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
    previous = _existing_run(run_id_of(model_dir))
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
                    mlflow.get_tracking_uri(), prefix, _first_line(err))
        return None


def log_metrics_batched(client: MlflowClient, run_id: str, metrics: list) -> None:
    """Logs ``metrics`` (``mlflow.entities.Metric``) on run ``run_id`` in as few
    ``log_batch`` calls as MLflow's per-call limit allows (1,000 metrics a call)."""
    for start in range(0, len(metrics), _MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start:start + _MAX_BATCH_METRICS])


def _log_results(model_dir: str, results: dict[str, Any], prefix: str) -> str | None:
    # The client, not the fluent API: no run is started, so neither an active run nor an
    # active experiment of the caller's process (a training run in another experiment) is in
    # the way, and the caller's fluent state is left as it was.
    from mlflow.entities import Metric

    previous = _existing_run(run_id_of(model_dir))
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


# --------------------------------------------------------------------------------------
# Tracking a training run without ever stopping it: a store probe at start, then every
# call sent from a background thread with back-off, unsent calls kept in the model dir.
# --------------------------------------------------------------------------------------
UNSENT_FILE = "mlflow_unsent.jsonl"  # calls not sent to the store, one JSON object a line
PROBE_TIMEOUT_S = 10  # the longest an HTTP request of the start-up probe may take
BACKOFF_FIRST_S = 0.5  # the background sender's first wait after a failure, seconds
BACKOFF_MAX_S = 30.0  # ... doubling up to this
CLOSE_GRACE_MIN_S = 5.0  # at the end, the longest wait for a failing store: this many seconds
CLOSE_GRACE_FRACTION = 0.05  # ... or this fraction of the run's time, whichever is longer
_MAX_BATCH_METRICS = 1000  # MLflow's limit of metrics per log_batch
# MLflow error codes that no retry can fix: the call is dropped with a warning.
_PERMANENT_CODES = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST",
                    "RESOURCE_ALREADY_EXISTS", "INVALID_STATE")


class TrackingUnavailable(ValueError):
    """The MLflow store cannot be used at the start of a run and strict tracking was asked
    for (a user error: the tracking URI or the store it names is wrong)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__


@contextlib.contextmanager
def _quick_http() -> Iterator[None]:
    """MLflow HTTP requests without retries and with a :data:`PROBE_TIMEOUT_S` timeout (so
    an unreachable server is known in seconds); the environment is restored after."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT_S)}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_store(experiment: str | None, strict: bool = False) -> str | None:
    """Opens the current tracking URI's store (:func:`open_store`, HTTP without retries).
    Returns None if it works, else the reason on one line; with ``strict`` a failure raises
    :class:`TrackingUnavailable` instead. Never raises anything else (but Ctrl-C)."""
    uri = mlflow.get_tracking_uri()
    try:
        with _quick_http():
            open_store(experiment)
        return None
    except Exception as err:  # noqa: BLE001 -- any store failure only turns tracking off
        reason = _first_line(err)
    if strict:
        raise TrackingUnavailable(f"MLflow store {uri} is not usable ({reason}); fix "
                                  "--mlflow_tracking_uri or drop --strict_tracking")
    return reason


def _is_permanent(err: BaseException) -> bool:
    """Whether retrying a failed call cannot help (a rejected value, a missing run or file)."""
    if isinstance(err, (FileNotFoundError, IsADirectoryError, TypeError, ValueError)) and \
            not isinstance(err, mlflow.exceptions.MlflowException):
        return True
    return getattr(err, "error_code", "") in _PERMANENT_CODES


def _load_unsent(model_dir: str) -> list[dict[str, Any]]:
    """The calls in ``model_dir``'s :data:`UNSENT_FILE` (the file is removed; unreadable
    lines are skipped with a warning); run-end calls of earlier runs are dropped."""
    path = os.path.join(model_dir, UNSENT_FILE)
    if not os.path.isfile(path):
        return []
    items, bad = [], 0
    with open(path) as f:
        for line in f:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(item, dict) and item.get("kind") in ("metrics", "params", "artifact"):
                items.append(item)
    os.remove(path)
    if bad:
        log.warning("%s: %d unreadable lines skipped", path, bad)
    return items


def _append_unsent(model_dir: str, items: list[dict[str, Any]]) -> str:
    """Appends ``items`` to ``model_dir``'s :data:`UNSENT_FILE`; returns its path."""
    path = os.path.join(model_dir, UNSENT_FILE)
    with open(path, "a") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    return path


class RunTracker:
    """The MLflow calls of one training run, never blocking training on the store.

    With a run (``run_id``), calls are queued and sent by a daemon thread; a failing store
    is retried with exponential back-off (:data:`BACKOFF_FIRST_S` doubling up to
    :data:`BACKOFF_MAX_S`), with one warning when it starts failing and one line when it
    is back. Without a run (tracking off), every call is appended to ``model_dir``'s
    :data:`UNSENT_FILE`, which the next run of the directory that reaches its store sends.
    :meth:`close` ends the run and writes what could not be sent to that file."""

    def __init__(self, model_dir: str | None, uri: str | None = None,
                 run_id: str | None = None, pending: list[dict[str, Any]] | None = None):
        self.model_dir, self.uri, self.run_id = model_dir, uri, run_id
        self._queue: collections.deque[dict[str, Any]] = collections.deque(pending or ())
        self._cond = threading.Condition()
        self._stopped = False
        self._failing_since: float | None = None  # monotonic time of the outage's first failure
        self._sending_since: float | None = None  # monotonic start of the call in flight
        self._started = time.monotonic()
        self._thread = None
        if run_id is not None:
            self._client = MlflowClient(uri)
            self._thread = threading.Thread(target=self._work, name="mlflow-tracker",
                                            daemon=True)
            self._thread.start()

    # -- what the trainer calls ---------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queues ``metrics`` of training step ``step`` (timestamped now, in ms)."""
        self._put({"kind": "metrics", "step": int(step), "timestamp": int(time.time() * 1000),
                   "metrics": {k: float(v) for k, v in metrics.items()}})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Queues params (changed values of a resumed run become ``param_override.*`` tags)."""
        self._put({"kind": "params",
                   "params": {k: str(v)[:_MAX_PARAM_LENGTH] for k, v in params.items()}})

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Queues the upload of the file ``path`` (read when it is sent)."""
        self._put({"kind": "artifact", "path": os.path.abspath(path),
                   "artifact_path": artifact_path})

    def _put(self, item: dict[str, Any]) -> None:
        if self.run_id is None:
            if self.model_dir is not None and not self._stopped:
                try:
                    _append_unsent(self.model_dir, [item])
                except OSError as err:  # a full disk: tracking gives up, training goes on
                    self._stopped = True
                    log.warning("cannot keep MLflow calls in %s (%s); later ones are dropped",
                                self.model_dir, _first_line(err))
            return
        with self._cond:
            self._queue.append(item)
            self._cond.notify_all()

    # -- the sender ---------------------------------------------------------------------
    def _next_batch(self) -> list[dict[str, Any]]:
        """The queue's head: one call, or as many leading metric calls as fit one batch."""
        batch = [self._queue[0]]
        if batch[0]["kind"] == "metrics":
            count = len(batch[0]["metrics"])
            for item in list(self._queue)[1:]:
                if item["kind"] != "metrics" or count + len(item["metrics"]) > _MAX_BATCH_METRICS:
                    break
                batch.append(item)
                count += len(item["metrics"])
        return batch

    def _send(self, batch: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        head = batch[0]
        if head["kind"] == "metrics":
            metrics = [Metric(k, v, item["timestamp"], item["step"])
                       for item in batch for k, v in item["metrics"].items()]
            self._client.log_batch(self.run_id, metrics=metrics)
        elif head["kind"] == "params":
            log_params_once(self.run_id, head["params"], self._client)
        elif head["kind"] == "artifact":
            if not os.path.isfile(head["path"]):
                raise FileNotFoundError(f"{head['path']} is gone")
            self._client.log_artifact(self.run_id, head["path"], head["artifact_path"])
        elif head["kind"] == "end":
            self._client.set_terminated(self.run_id, head["status"])

    def _work(self) -> None:
        """Sends the queue's calls in order; on a failure waits with back-off and retries."""
        delay = BACKOFF_FIRST_S
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                batch = self._next_batch()
                self._sending_since = time.monotonic()
            try:
                self._send(batch)
                err = None
            except Exception as exc:  # noqa: BLE001 -- a store failure never stops training
                err = exc
            with self._cond:
                self._sending_since = None
                if self._stopped:
                    return
                if err is None or _is_permanent(err):
                    for _ in batch:
                        self._queue.popleft()
                    self._cond.notify_all()
                if err is None:
                    if self._failing_since is not None:
                        log.info("MLflow store %s is back after %.0f s; queued calls are sent",
                                 self.uri, time.monotonic() - self._failing_since)
                    self._failing_since, delay = None, BACKOFF_FIRST_S
                    continue
                if _is_permanent(err):
                    log.warning("MLflow %s call dropped: %s", batch[0]["kind"], _first_line(err))
                    continue
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("MLflow store %s failed (%s); retrying in the background with "
                                "back-off, training goes on", self.uri, _first_line(err))
                self._cond.wait(delay)  # close() wakes it for a last quick retry
                delay = min(delay * 2, BACKOFF_MAX_S)

    # -- the end ------------------------------------------------------------------------
    def _grace_s(self) -> float:
        return max(CLOSE_GRACE_MIN_S, CLOSE_GRACE_FRACTION * (time.monotonic() - self._started))

    def _stuck(self, closed_at: float, grace_s: float) -> bool:
        """Whether the store has been failing, or one call hanging, past the grace time."""
        now = time.monotonic()
        failing = self._failing_since is not None or (
            self._sending_since is not None and now - self._sending_since > grace_s)
        return failing and now - closed_at > grace_s

    def close(self, status: str = "FINISHED") -> int:
        """Ends the run with ``status`` once the queue is sent. A store that keeps failing
        (or hangs) is waited for at most :meth:`_grace_s` seconds; the calls still unsent
        then are appended to the model dir's :data:`UNSENT_FILE` (one warning). Returns the
        number of unsent calls."""
        if self._thread is None:
            return 0
        with self._cond:
            self._queue.append({"kind": "end", "status": status})
            self._cond.notify_all()
            closed_at, grace = time.monotonic(), self._grace_s()
            while (self._queue and self._thread.is_alive()
                   and not self._stuck(closed_at, grace)):
                self._cond.wait(0.2)
            self._stopped = True
            unsent = [item for item in self._queue if item["kind"] != "end"]
            self._cond.notify_all()
        if unsent and self.model_dir is not None:
            try:
                path = _append_unsent(self.model_dir, unsent)
            except OSError as err:
                log.warning("MLflow store %s still failing at the end of the run and %d calls "
                            "cannot be kept in %s (%s): they are lost", self.uri, len(unsent),
                            self.model_dir, _first_line(err))
                return len(unsent)
            log.warning("MLflow store %s still failing at the end of the run: %d calls "
                        "written to %s (sent by the next run of this model directory that "
                        "reaches the store)", self.uri, len(unsent), path)
        return len(unsent)


NO_TRACKING = RunTracker(None)  # what a multi-worker non-chief logs to: nothing


@contextlib.contextmanager
def background_run(model_dir: str, experiment: str, run_name: str | None = None,
                   tags: Mapping[str, str] | None = None,
                   store_error: str | None = None) -> Iterator[RunTracker]:
    """Starts (or resumes, by the model directory's run id) an MLflow run and yields its
    :class:`RunTracker`; the run ends FINISHED, FAILED on an exception, KILLED on Ctrl-C /
    SIGTERM (the exception propagates). Calls left unsent by an earlier run of the
    directory are sent first.

    Never fatal: if the store failed :func:`check_store` (``store_error``) or fails to
    start the run, one warning says so and the tracker is off (its calls go to the model
    dir's :data:`UNSENT_FILE`)."""
    os.makedirs(model_dir, exist_ok=True)
    uri = mlflow.get_tracking_uri()
    tracker = None
    if store_error is None:
        try:
            with _quick_http():
                run_id = _start_run(model_dir, experiment, run_name, tags)
            tracker = RunTracker(model_dir, uri, run_id, _load_unsent(model_dir))
        except Exception as err:  # noqa: BLE001 -- tracking is never fatal to training
            store_error = _first_line(err)
    if tracker is None:
        log.warning("MLflow store %s is not usable (%s); training goes on without tracking, "
                    "metrics go to %s", uri, store_error, os.path.join(model_dir, UNSENT_FILE))
        tracker = RunTracker(model_dir)
    with _ended_with_status(tracker.close):
        yield tracker


def _start_run(model_dir: str, experiment: str, run_name: str | None,
               tags: Mapping[str, str] | None) -> str:
    """Resumes the model directory's run (status RUNNING) or creates one in ``experiment``
    with MLflow's usual system tags; records the run id and the absolute tracking URI in
    ``model_dir``; returns the run id. The fluent API's active run is left alone."""
    from mlflow.tracking.context import registry as context_registry

    open_store(experiment)
    client = MlflowClient()
    previous = _existing_run(run_id_of(model_dir))
    if previous is not None:
        run_id = previous.info.run_id
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    else:
        run = client.create_run(experiment_id(experiment, client), run_name=run_name,
                                tags=context_registry.resolve_tags(dict(tags or {})))
        run_id = run.info.run_id
        with open(os.path.join(model_dir, RUN_ID_FILE), "w") as f:
            f.write(run_id)
    with open(os.path.join(model_dir, TRACKING_URI_FILE), "w") as f:
        f.write(absolute_uri(mlflow.get_tracking_uri()))
    return run_id
