"""Tracking a training run without ever stopping it.

At start, :func:`check_store` tries the store (HTTP without retries): a corrupt or
unreachable store is one warning and training goes on with tracking off
(``--strict_tracking``: one error line, :class:`TrackingUnavailable`, before any work).
During the run (:func:`background_run`) every call goes through a :class:`RunTracker`,
which sends it from a background thread and retries a failing store with exponential
back-off, so a training step never waits for the store; what is still unsent at the end
(after a grace of 5 s or 5 % of the run's time), or every call when tracking is off, is
kept in the model directory's ``mlflow_unsent.jsonl`` and sent by the next run of that
directory that reaches its store.
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
from typing import Any, Iterator, Mapping

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from artifacts import store_creation, tracking

UNSENT_FILE = "mlflow_unsent.jsonl"  # calls not sent to the store, one JSON object a line
PROBE_TIMEOUT_S = 10  # the longest an HTTP request of the start-up probe may take
BACKOFF_FIRST_S = 0.5  # the background sender's first wait after a failure, seconds
BACKOFF_MAX_S = 30.0  # ... doubling up to this
CLOSE_GRACE_MIN_S = 5.0  # at the end, the longest wait for a failing store: this many seconds
CLOSE_GRACE_FRACTION = 0.05  # ... or this fraction of the run's time, whichever is longer
# MLflow error codes that no retry can fix: the call is dropped with a warning.
_PERMANENT_CODES = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST",
                    "RESOURCE_ALREADY_EXISTS", "INVALID_STATE")
log = logging.getLogger(__name__)


class TrackingUnavailable(ValueError):
    """The MLflow store cannot be used at the start of a run and strict tracking was asked
    for (a user error: the tracking URI or the store it names is wrong)."""


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
    """Opens the current tracking URI's store (HTTP without retries; :func:`open_store` of
    :mod:`artifacts.store_creation`). Returns None if it works, else the reason on one line;
    with ``strict`` a failure raises :class:`TrackingUnavailable` instead. Never raises
    anything else (but Ctrl-C)."""
    uri = mlflow.get_tracking_uri()
    try:
        with _quick_http():
            store_creation.open_store(experiment)
        return None
    except Exception as err:  # noqa: BLE001 -- any store failure only turns tracking off
        reason = tracking.first_line(err)
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
                   "params": {k: str(v)[:tracking.MAX_PARAM_LENGTH] for k, v in params.items()}})

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
                                self.model_dir, tracking.first_line(err))
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
                if (item["kind"] != "metrics"
                        or count + len(item["metrics"]) > tracking.MAX_BATCH_METRICS):
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
            tracking.log_params_once(self.run_id, head["params"], self._client)
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
                    log.warning("MLflow %s call dropped: %s", batch[0]["kind"],
                                tracking.first_line(err))
                    continue
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("MLflow store %s failed (%s); retrying in the background with "
                                "back-off, training goes on", self.uri, tracking.first_line(err))
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
                            self.model_dir, tracking.first_line(err))
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
            store_error = tracking.first_line(err)
    if tracker is None:
        log.warning("MLflow store %s is not usable (%s); training goes on without tracking, "
                    "metrics go to %s", uri, store_error, os.path.join(model_dir, UNSENT_FILE))
        tracker = RunTracker(model_dir)
    with tracking.ended_with_status(tracker.close):
        yield tracker


def _start_run(model_dir: str, experiment: str, run_name: str | None,
               tags: Mapping[str, str] | None) -> str:
    """Resumes the model directory's run (status RUNNING) or creates one in ``experiment``
    with MLflow's usual system tags; records the run id and the absolute tracking URI in
    ``model_dir``; returns the run id. The fluent API's active run is left alone."""
    from mlflow.tracking.context import registry as context_registry

    store_creation.open_store(experiment)
    client = MlflowClient()
    previous = tracking.existing_run(tracking.run_id_of(model_dir))
    if previous is not None:
        run_id = previous.info.run_id
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    else:
        run = client.create_run(store_creation.experiment_id(experiment, client), run_name=run_name,
                                tags=context_registry.resolve_tags(dict(tags or {})))
        run_id = run.info.run_id
        with open(os.path.join(model_dir, tracking.RUN_ID_FILE), "w") as f:
            f.write(run_id)
    with open(os.path.join(model_dir, tracking.TRACKING_URI_FILE), "w") as f:
        f.write(tracking.absolute_uri(mlflow.get_tracking_uri()))
    return run_id
