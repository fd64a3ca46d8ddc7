"""One trainer per model directory: a lock file holding the owner's pid and host.

``<model_dir>/trainer.lock`` is held with ``fcntl.flock`` (an exclusive lock on the open
file, kept for as long as the trainer runs and dropped by the kernel when its process
dies, however it dies) and holds JSON ``{"pid": int, "host": str, "started": ISO time}``
naming the holder. Taking the lock is one atomic ``flock``: of any number of processes
that try at once, exactly one gets it. A second trainer on the same directory is refused
with :class:`ModelDirInUse` naming the owner. A lock file left by a process that died
(killed outright: its file stays, its ``flock`` is gone) is stale and taken over by the
next trainer, without a read-check-remove race. A lock file naming another host cannot be
checked from here (``flock`` may not reach across hosts on a network file system) and is
refused; the message says how to remove it. On release the holder removes the file while
still holding the lock; a process that opened the old file meanwhile sees that it is no
longer the one at the path and tries again.

On a file system without ``flock`` (rare: some FUSE mounts), the lock falls back to an
exclusive create of the file plus the pid check of a stale lock, which is not race-free
(a warning says so).
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import time
import uuid

LOCK_FILE = "trainer.lock"
#: How long a refused process waits for the new holder to write its name into the file
#: (between its flock and its write) before reporting whatever the file says.
OWNER_WAIT_S = 2.0
log = logging.getLogger(__name__)


class ModelDirInUse(RuntimeError):
    """Another live trainer holds the model directory's lock."""


def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_chief(tf_config: str | None = None) -> bool:
    """Whether this process writes the model directory: True without a multi-worker
    ``TF_CONFIG``; else task type 'chief', or worker 0 when the cluster has no chief."""
    raw = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not raw:
        return True
    config = json.loads(raw)
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = bool(config.get("cluster", {}).get("chief"))
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def _create_exclusive(tmp: str, path: str, payload: str) -> None:
    """Puts ``payload`` at ``path``, failing with FileExistsError if ``path`` exists: a hard
    link of the complete ``tmp`` file (never a partial lock), or, on file systems without
    hard links, an O_EXCL create."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(payload)


_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class ModelDirLock:
    """Context manager holding ``<model_dir>/trainer.lock`` (the directory is created).

    Raises :class:`ModelDirInUse` on entry if a live trainer (or one on another host, or
    an unreadable lock) holds it. On exit the lock is removed if it is still this
    process's."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._fd: int | None = None  # the flock'ed file while held
        self._linked = False  # held by the no-flock fallback

    def _owner(self) -> dict | None:
        """The lock's content; None if it vanished; {} if it is unreadable."""
        try:
            with open(self.path) as f:
                owner = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _refuse(self, owner: dict, why: str) -> ModelDirInUse:
        who = (f"pid {owner.get('pid')} on host {owner.get('host')!r} (since "
               f"{owner.get('started', '?')})" if owner else "an unreadable lock")
        return ModelDirInUse(
            f"--model_dir={self.model_dir!r} is in use by another trainer: {who}, {why}; "
            f"wait for it to finish or stop it, or use another --model_dir (if no trainer "
            f"runs there, delete {self.path!r})")

    def _payload(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "started": datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds")})

    def _live_owner(self) -> dict:
        """What the lock file says about its holder, once it names a live process here (or
        another host): a process that has just taken the flock writes its name right after,
        so an empty file or a dead pid is read again for up to :data:`OWNER_WAIT_S`."""
        deadline = time.monotonic() + OWNER_WAIT_S
        while True:
            owner = self._owner() or {}
            settled = owner and (owner.get("host") != self.host
                                 or _pid_running(int(owner.get("pid", -1))))
            if settled or time.monotonic() > deadline:
                return owner
            time.sleep(0.02)

    def acquire(self) -> None:
        os.makedirs(self.model_dir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live process holds it
                os.close(fd)
                owner = self._live_owner()
                why = "which is running"
                if (owner and owner.get("host") == self.host
                        and not _pid_running(int(owner.get("pid", -1)))):
                    why = "which has exited, but a process it started still holds the lock"
                raise self._refuse(owner, why) from None
            except OSError as err:
                os.close(fd)
                if err.errno not in _NO_FLOCK:
                    raise
                log.warning("the file system of %s has no flock: the trainer lock falls back "
                            "to an exclusive create, which is not race-free", self.model_dir)
                self._acquire_without_flock()
                return
            try:
                if not self._still_at_path(fd):  # released (removed) meanwhile: try again
                    os.close(fd)
                    continue
                self._take(fd)
            except BaseException:
                os.close(fd)
                raise
            return

    def _still_at_path(self, fd: int) -> bool:
        """Whether the file ``fd`` is open on is still the one at :attr:`path`."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)

    def _take(self, fd: int) -> None:
        """With the flock held on ``fd``: refuses a lock file naming another host (its
        trainer's flock may not be visible here) or a live process that holds no flock (a
        trainer of an older version); otherwise the lock is this process's (a stale one's
        content is replaced)."""
        with open(fd, closefd=False) as f:
            try:
                owner = json.loads(f.read() or "{}")
            except ValueError:
                owner = {}
        owner = owner if isinstance(owner, dict) else {}
        if owner:
            if owner.get("host") != self.host:
                raise self._refuse(owner, "which cannot be checked from this host")
            pid = int(owner.get("pid", -1))
            if pid != self.pid and _pid_running(pid):
                raise self._refuse(owner, "which is running")
        payload = self._payload().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        os.fsync(fd)
        self._fd = fd

    def _acquire_without_flock(self) -> None:
        """The exclusive-create lock for file systems without flock (not race-free when
        several processes take over one stale lock at once)."""
        payload = self._payload()
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w") as f:
            f.write(payload)
        try:
            for _ in range(3):  # a stale lock is removed, then linking is tried again
                try:
                    _create_exclusive(tmp, self.path, payload)
                    self._linked = True
                    return
                except FileExistsError:
                    pass
                owner = self._owner()
                if owner is None:
                    continue  # released meanwhile
                if not owner:
                    raise self._refuse(owner, "its lock file cannot be read")
                if owner.get("host") != self.host:
                    raise self._refuse(owner, "which cannot be checked from this host")
                if owner.get("pid") == self.pid or _pid_running(int(owner.get("pid", -1))):
                    raise self._refuse(owner, "which is running")
                try:  # stale: its process is gone
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
            raise self._refuse(self._owner() or {}, "which took the lock at the same time")
        finally:
            os.remove(tmp)

    def release(self) -> None:
        """Removes the lock file if this process holds it (while still holding the flock,
        so no other process can take the file being removed), then drops the flock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._still_at_path(fd):
                    os.remove(self.path)
            finally:
                os.close(fd)
            return
        if self._linked:
            self._linked = False
            owner = self._owner()
            if owner and owner.get("pid") == self.pid and owner.get("host") == self.host:
                os.remove(self.path)

    def __enter__(self) -> "ModelDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
