"""FnApiRunner's ``multi_processing`` workers without their tracebacks on stderr.

Beam starts each worker as ``python -m apache_beam.runners.worker.sdk_worker_main`` with
the job's stderr, and a worker logs there its start-up INFO lines and, for a bundle that
failed (a full or read-only disk, out of memory, a bad input), the whole traceback, once
per bundle, before the runner re-raises the same error in the job, which the CLI reports
in one line. :class:`QuietWorkersRunner` (the local runner of the jobs in that mode,
:func:`beam_jobs.runtime.beam_options.pipeline_options`) starts its workers as
``python -m beam_jobs.runtime.quiet_workers`` instead: Beam's worker, whose stderr shows
warnings and errors only, without the failed bundles' reports (logged, and printed by
``sdk_worker._execute``); the worker still sends every record to the runner's log service
and the bundle's traceback to the runner, which raises it in the job as before.
``AD_TRACEBACK=1``: Beam's worker as is.
"""
from __future__ import annotations

import logging
import os
import sys

from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms import environments

BEAM_WORKER = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
QUIET_WORKER = f"{sys.executable} -m beam_jobs.runtime.quiet_workers"
# What a worker logs about a bundle that failed: the runner raises the error in the job.
FAILED_BUNDLE_TEXTS = ("Error processing instruction", "Python sdk harness failed")


class QuietWorkersRunner(FnApiRunner):
    """FnApiRunner whose ``multi_processing`` workers are :func:`main` (Beam's worker,
    quiet on stderr); every other mode as FnApiRunner."""

    @property
    def _default_environment(self):
        return self.__dict__.get("_quiet_environment")

    @_default_environment.setter
    def _default_environment(self, environment) -> None:
        # FnApiRunner.run_pipeline sets this for --direct_running_mode=multi_processing
        if (isinstance(environment, environments.SubprocessSDKEnvironment)
                and environment.command_string == BEAM_WORKER
                and not os.environ.get("AD_TRACEBACK")):
            environment = environments.SubprocessSDKEnvironment.from_command_string(
                QUIET_WORKER)
        self.__dict__["_quiet_environment"] = environment


class _DropFailedBundles(logging.Filter):
    """Drops a worker's reports of a failed bundle (with their tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.exc_info or any(t in message for t in FAILED_BUNDLE_TEXTS))


def quiet_stderr_handler() -> logging.Handler:
    """A stderr handler of warnings and errors without failed bundles' reports."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropFailedBundles())
    return handler


class _NoTracebacks:
    """sys.stderr without the tracebacks Beam's worker prints whole for a failed bundle
    (``print(traceback_string, file=sys.stderr)``; the runner gets the same text)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        dropped, self._dropped = self._dropped, False
        if text.startswith("Traceback (most recent call last):"):
            self._dropped = True
            return len(text)
        if dropped and text == "\n":  # print's line end of a dropped traceback
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main() -> None:
    """Beam's SDK worker with :func:`quiet_stderr_handler` as the root logger's stderr
    handler (installed first: a later ``basicConfig`` adds none) and sys.stderr without
    failed bundles' tracebacks."""
    sys.stderr = _NoTracebacks(sys.stderr)
    logging.getLogger().addHandler(quiet_stderr_handler())
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
