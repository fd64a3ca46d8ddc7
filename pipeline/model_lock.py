"""One trainer per model directory: a lock file holding the owner's pid and host.

``<model_dir>/trainer.lock`` is created atomically (written to a temporary file, then
hard-linked into place, which fails if the lock exists) and holds JSON
``{"pid": int, "host": str, "started": ISO time}``. A second trainer on the same directory
is refused with :class:`ModelDirInUse` naming the owner. A lock left by a process that
died (its pid is not running on this host) is stale and taken over. A lock from another
host cannot be checked from here and is refused; the message says how to remove it.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import uuid

LOCK_FILE = "trainer.lock"


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

    def acquire(self) -> None:
        os.makedirs(self.model_dir, exist_ok=True)
        payload = json.dumps({"pid": self.pid, "host": self.host, "started": datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds")})
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w") as f:
            f.write(payload)
        try:
            for _ in range(3):  # a stale lock is removed, then linking is tried again
                try:
                    _create_exclusive(tmp, self.path, payload)
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
        owner = self._owner()
        if owner and owner.get("pid") == self.pid and owner.get("host") == self.host:
            os.remove(self.path)

    def __enter__(self) -> "ModelDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
