"""A full, read-only or failing disk as one line: :func:`disk_error_reason` recognizes it
in an exception (an ``OSError`` errno anywhere in the chain, or the text TensorFlow and
Beam give it), and :class:`DiskError` is the one-line user error the CLIs print
(``prog: error: ...``, exit 2, through :func:`artifacts.cli.user_errors`)."""
from __future__ import annotations

import contextlib
import errno
import os
from typing import Iterator

# errno values of a disk that cannot take a write, and how TensorFlow's and Beam's
# re-raised errors spell them.
DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO)
DISK_TEXTS = ("No space left on device", "Read-only file system", "Disk quota exceeded",
              "Input/output error")


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
    return next((marker for marker in DISK_TEXTS if marker in text), None)


@contextlib.contextmanager
def disk_errors(what: str) -> Iterator[None]:
    """Re-raises a disk error met inside as :class:`DiskError`: '<what> failed: <reason>'."""
    try:
        yield
    except DiskError:
        raise
    except Exception as err:
        reason = disk_error_reason(err)
        if reason is None:
            raise
        raise DiskError(f"{what} failed: {reason}") from err
