"""Preemption: SIGTERM / SIGINT stop training at a step boundary with a checkpoint of the
last completed step (:class:`SignalGuard`, :func:`save_interrupted`), reported as
:class:`TrainingInterrupted` (the CLI exits with 128 + signal number; the MLflow run is
marked KILLED).
"""
from __future__ import annotations

import logging
import signal
from typing import Any

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


def save_interrupted(manager: tf.train.CheckpointManager, step: int, start_step: int) -> None:
    """Checkpoints the last completed step ``step`` after a signal, unless that step's
    checkpoint was already written (a periodic one: same contents, not rewritten) or no
    step ran in this process (the restored checkpoint is that state)."""
    latest = manager.latest_checkpoint
    if step == start_step or (latest and latest.endswith(f"ckpt-{step}")):
        return
    manager.save(checkpoint_number=step)
