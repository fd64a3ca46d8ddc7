"""Opening an MLflow store and getting an experiment safely when several processes create
them at the same moment.

Several trainers may start at the same moment against a store that does not exist yet
(a new ``sqlite:///`` file, a new experiment): MLflow creates the tables, runs its schema
migrations and creates the experiment without guarding against a concurrent creator, and
the loser crashes (``table experiments already exists``, an alembic migration that finds
no row, ``Experiment ... already exists``). :func:`open_store` therefore opens the store
under a per-database file lock (SQLite stores, one host) and both it and
:func:`experiment_id` retry the store and experiment creation after a short random delay
when one of those creation races is detected (:func:`is_creation_race`; e.g. against an
MLflow process that takes no lock).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import random
import tempfile
import time
from typing import Any, Callable, Iterator

import mlflow
from mlflow.tracking import MlflowClient

CREATION_ATTEMPTS = 3  # store/experiment creation: the first try and two retries
CREATION_DELAY_S = (0.5, 2.0)  # a retry after a creation race waits a random time in this range
STORE_LOCK_TIMEOUT_S = 300.0  # the longest wait for another process creating the same store
# What MLflow raises when two processes create the same store or experiment at once: the
# loser's CREATE TABLE on tables the winner made, an alembic migration whose version row the
# winner already moved, a schema that the winner is still migrating, a duplicate experiment.
_CREATION_RACE_MARKERS = (
    "already exists", "expected to match one row", "unique constraint failed",
    "out-of-date database schema", "database is locked", "resource_already_exists")
log = logging.getLogger(__name__)


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
