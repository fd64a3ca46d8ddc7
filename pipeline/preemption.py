"""Preemption: SIGTERM / SIGINT stop training at a step boundary with a checkpoint of the
last completed step (:class:`SignalGuard`, :func:`save_interrupted`), reported as
:class:`TrainingInterrupted` (the CLI exits with 128 + signal number; the MLflow run is
marked KILLED).

In a multi-worker job the workers agree on the stop (:class:`StopAgreement`): a signal that
reaches any worker stops every worker after the same step, so all of them take part in the
last checkpoint's save instead of one waiting in a collective for a peer that left.
"""
from __future__ import annotations

import logging
import signal
from typing import Any, Callable

import tensorflow as tf

log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGINT arrived; a checkpoint of the last completed step was written.

    ``signum`` is the signal's number (the CLI exits with 128 + signum), ``step`` the
    last completed step (the one the checkpoint holds)."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"received signal {signum}; stopped after step {step}")
        self.signum, self.step = signum, step


class SignalGuard:
    """Records SIGTERM and SIGINT in ``signum`` while training runs (the handlers only set
    the flag). The loop checks it at step boundaries, so a signal that arrives inside a
    step lets that step finish and be counted before the checkpoint is written."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> "SignalGuard":
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

        def handler(signum, frame):
            if self.signum is None:
                log.warning("received signal %d: stopping after the current step", signum)
            self.signum = signum

        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc: Any) -> bool:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """The number of worker tasks (chief included) of the strategy's cluster; 1 without one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, ())) for job in ("chief", "worker")) or 1


class StopAgreement:
    """Whether training stops at this step boundary, agreed by every worker.

    :meth:`signum` is the guard's signal on one machine. Under a multi-worker strategy it
    all-reduces, at every call (once per step boundary, on every worker), whether any worker
    has received a signal, and answers that signal (this worker's own, else SIGTERM: a peer
    was stopped) once any has. Every worker must call it equally often."""

    def __init__(self, strategy: tf.distribute.Strategy, guard: SignalGuard):
        self.guard = guard
        self.strategy = strategy
        self.multi_worker = num_workers(strategy) > 1
        self._agreed: int | None = None
        if self.multi_worker:
            def any_stopped(flag):  # 1 replica's flag, summed over every replica of the job
                per_replica = strategy.run(tf.identity, args=(flag,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            self._any_stopped = tf.function(any_stopped)

    def signum(self) -> int | None:
        if not self.multi_worker:
            return self.guard.signum
        if self._agreed is None:
            flag = tf.constant(0.0 if self.guard.signum is None else 1.0)
            if float(self._any_stopped(flag)) > 0:
                self._agreed = self.guard.signum or signal.SIGTERM
        return self._agreed


def save_interrupted(manager: tf.train.CheckpointManager, step: int, start_step: int,
                     save: Callable[[int], Any] | None = None) -> None:
    """Checkpoints the last completed step ``step`` after a signal, unless that step's
    checkpoint was already written (a periodic one: same contents, not rewritten) or no
    step ran in this process (the restored checkpoint is that state). ``save(step)``
    writes it (default: ``manager.save(checkpoint_number=step)``); every worker of a
    multi-worker job reaches the same decision, as all of them must call the save."""
    latest = manager.latest_checkpoint
    if step == start_step or (latest and latest.endswith(f"ckpt-{step}")):
        return
    if save is None:
        manager.save(checkpoint_number=step)
    else:
        save(step)
