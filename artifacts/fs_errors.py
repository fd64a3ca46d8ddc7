"""A full, read-only or failing disk, and Ctrl-C, as one line.

:func:`disk_error_reason` recognizes a disk error in an exception (an ``OSError`` errno
anywhere in the chain, or the text TensorFlow and Beam give it), and :class:`DiskError`
is the one-line user error the CLIs print (``prog: error: ...``, exit 2, through
:func:`artifacts.cli.user_errors`). :func:`interrupts_as_one_line` does the same for
Ctrl-C (``prog: interrupted; ...``, exit 130), also when Beam re-raised the
KeyboardInterrupt as another exception, and :func:`drop_failure_logs` keeps the
tracebacks Beam logs for either out of stderr. ``AD_TRACEBACK=1`` shows everything.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import signal
import sys
import threading
from typing import Any, Callable, Iterator

# errno values of a disk that cannot take a write, and how TensorFlow's and Beam's
# re-raised errors spell them.
DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO)
DISK_TEXTS = ("No space left on device", "Read-only file system", "Disk quota exceeded",
              "Input/output error")
# What TensorFlow's, numpy's and Python's out-of-memory errors say (also in Beam's re-raised
# text): artifacts.memory_errors makes them one line, and Beam's reports are dropped here.
OOM_TEXTS = ("OOM when allocating", "ResourceExhaustedError", "MemoryError",
             "Unable to allocate")


class DiskError(ValueError):
    """A write failed because the disk is full, read-only or failing (an operator's
    problem to fix, not a bug: one line naming what was being written)."""


def disk_error_reason(err: BaseException) -> str | None:
    """``os.strerror`` of the disk error in ``err``'s chain (with the file, if known), or
    the disk error named in its text (TensorFlow's ``ResourceExhaustedError`` et al.);
    None if ``err`` is no disk error."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in DISK_ERRNOS:
            return os.strerror(cur.errno) + (f" ({cur.filename})" if cur.filename else "")
        cur = cur.__cause__ or cur.__context__
    text = str(err)
    marker = next((m for m in DISK_TEXTS if m in text), None)
    if marker is None:
        return None
    # Beam's "RuntimeError: OSError: [Errno 30] Read-only file system: '/x' [while ...]"
    named = re.search(re.escape(marker) + r": '([^']+)'", text)
    return marker + (f" ({named.group(1)})" if named else "")


@contextlib.contextmanager
def disk_errors(what: str, after: str = "") -> Iterator[None]:
    """Re-raises a disk error met inside as :class:`DiskError`: '<what> failed: <reason>'
    (then '; <after>' if given: what was kept or removed)."""
    try:
        yield
    except DiskError:
        raise
    except Exception as err:
        if _Interrupt.received:  # Ctrl-C (re-raised by Beam as another exception) first
            raise
        reason = disk_error_reason(err)
        if reason is None:
            raise
        raise DiskError(f"{what} failed: {reason}" + (f"; {after}" if after else "")) from err


# --------------------------------------------------------------------------------------
# Ctrl-C.
# --------------------------------------------------------------------------------------
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports it


class _Interrupt:
    """SIGINT as a flag that survives Beam re-raising the KeyboardInterrupt as another
    exception (``RuntimeError: KeyboardInterrupt [while running ...]``)."""
    received = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.received = True
        raise KeyboardInterrupt


def was_interrupted(err: BaseException | None = None) -> bool:
    """Whether Ctrl-C was received while :func:`interrupts_as_one_line` ran, or ``err`` is
    (or was caused by) a KeyboardInterrupt."""
    seen: set[int] = set()
    cur = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, KeyboardInterrupt):
            return True
        cur = cur.__cause__ or cur.__context__
    return _Interrupt.received


def interrupts_as_one_line(prog: str, note: str | Callable[[], str] = ""
                           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: Ctrl-C (SIGINT) while ``main`` runs prints ``<prog>: interrupted; <what
    was kept>`` on stderr and exits with :data:`INTERRUPTED_EXIT_CODE`, without a
    traceback, also when Beam re-raised the KeyboardInterrupt as another exception. What
    was kept is the KeyboardInterrupt's own message if the code that knew raised one with
    a message (``raise KeyboardInterrupt("the partial export was removed") from err``),
    else ``note`` (a string, or a function called then). ``AD_TRACEBACK=1``: the
    traceback instead."""

    def decorate(main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> Any:
            _Interrupt.received = False
            main_thread = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, _Interrupt.handler) if main_thread else None
            try:
                return main(*args, **kwargs)
            except BaseException as err:
                if (isinstance(err, SystemExit) or not was_interrupted(err)
                        or os.environ.get("AD_TRACEBACK")):
                    raise
                said = str(err) if isinstance(err, KeyboardInterrupt) else ""
                said = said or (note() if callable(note) else note)
                print(f"{prog}: interrupted" + (f"; {said}" if said else ""), file=sys.stderr)
                sys.exit(INTERRUPTED_EXIT_CODE)
            finally:
                if main_thread:  # None: a handler not set from Python; Python's default
                    signal.signal(signal.SIGINT, previous or signal.default_int_handler)
                _Interrupt.received = False
        return run

    return decorate


# Loggers of the libraries whose failure reports (with tracebacks) the CLI's one line
# replaces; the project's own warnings always show.
LIBRARY_LOGGERS = ("apache_beam", "tensorflow", "absl")


class _DropFailureRecords(logging.Filter):
    """Drops the log records (with their tracebacks) in which a library (Beam) reports a
    full or read-only disk or a failed allocation, and its warnings and errors after
    Ctrl-C: the CLI says each in one line at the end."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] not in LIBRARY_LOGGERS:
            return True
        if _Interrupt.received and record.levelno >= logging.WARNING:
            return False
        err = record.exc_info[1] if record.exc_info else None
        return not ((err is not None and disk_error_reason(err))
                    or any(m in record.getMessage() for m in DISK_TEXTS + OOM_TEXTS))


def drop_failure_logs() -> None:
    """Adds :class:`_DropFailureRecords` to the root logger's handlers (call it after the
    logging setup; nothing is dropped with ``AD_TRACEBACK=1``)."""
    if os.environ.get("AD_TRACEBACK"):
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropFailureRecords) for f in handler.filters):
            handler.addFilter(_DropFailureRecords())
