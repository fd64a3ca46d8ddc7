"""Out of memory as one line naming the settings to lower (issue 26, item 1).

TensorFlow reports a tensor it cannot allocate as ``ResourceExhaustedError`` (``OOM when
allocating tensor with shape[...]``, with its op, device and Keras call arguments over
many lines), Python as ``MemoryError``, and Beam re-raises either as text in another
exception. :func:`out_of_memory` turns each into :class:`OutOfMemory`, a ``ValueError``
that :func:`artifacts.cli.user_errors` prints as ``<prog>: error: out of memory while
<what>: <allocation>; expected --flag=value, ... to fit in this machine's memory (N GiB):
lower them`` (exit 2). A ``ResourceExhaustedError`` of a full disk is left to
:func:`artifacts.fs_errors.disk_errors`. ``AD_TRACEBACK=1`` shows the traceback.

    with memory_errors.out_of_memory("training", batch_size=32, enc_dec_channels=16):
        ...
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Iterator, Mapping

from artifacts import fs_errors
from artifacts.fs_errors import OOM_TEXTS

# The settings of a training run that set its memory use (HybridConfig / TrainConfig fields).
TRAINING_SIZE_SETTINGS = ("batch_size", "data_init_batch", "enc_dec_channels", "latent_dim",
                          "flow_hidden", "flow_scales", "flow_res_blocks", "disc_channels",
                          "posterior_hidden", "num_grid_samples")


class OutOfMemory(ValueError):
    """The settings need more memory than the machine has (a user error: one line naming
    the flags to lower)."""


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def oom_description(err: BaseException) -> str | None:
    """What could not be allocated, if ``err`` (or its chain) is out of memory: TensorFlow's
    'OOM when allocating tensor with shape[...] and type float', numpy's 'Unable to allocate
    ...', or the error's type; None if it is no out-of-memory error (a full disk's
    ResourceExhaustedError included)."""
    if fs_errors.disk_error_reason(err):
        return None
    for cur in _chain(err):
        names = {cls.__name__ for cls in type(cur).__mro__}
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(cur))
        found = re.search(r"OOM when allocating tensor(?: with shape\[[^\]]*\])?"
                          r"(?: and type \w+)?|Unable to allocate [^\n;]*?(?= for an array|$)",
                          text, re.MULTILINE)
        if found:
            return found.group(0).strip()
        if names & {"ResourceExhaustedError", "MemoryError"}:
            return type(cur).__name__
        if any(m in text for m in OOM_TEXTS):  # Beam's re-raised text
            return next(m for m in OOM_TEXTS if m in text)
    return None


def machine_memory() -> str:
    """The machine's physical memory, e.g. '23.4 GiB' ('' where unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return ""
    return f"{total / 2**30:.1f} GiB"


def size_settings(*configs: Any, names: tuple[str, ...] = TRAINING_SIZE_SETTINGS
                  ) -> dict[str, Any]:
    """The memory-setting fields ``names`` found in ``configs`` (dataclasses, objects or
    mappings) and set (not None, 0 or False), first one wins: the flags an out-of-memory
    error names."""
    out: dict[str, Any] = {}
    for config in configs:
        for name in names:
            value = (config.get(name) if isinstance(config, Mapping)
                     else getattr(config, name, None))
            if value and name not in out:
                out[name] = value
    return out


@contextlib.contextmanager
def out_of_memory(what: str, settings: Mapping[str, Any] | None = None,
                  **more: Any) -> Iterator[None]:
    """Re-raises an out-of-memory error met inside as :class:`OutOfMemory`, one line naming
    ``what`` was being done, what could not be allocated and the flags (``settings`` and
    ``more``: name -> value) expected to fit. Anything else passes unchanged."""
    try:
        yield
    except OutOfMemory:
        raise
    except Exception as err:  # MemoryError included
        if os.environ.get("AD_TRACEBACK"):
            raise
        description = oom_description(err)
        if description is None:
            raise
        flags = ", ".join(f"--{k}={v}" for k, v in {**(settings or {}), **more}.items())
        memory = machine_memory()
        expected = (f"expected {flags} to fit in this machine's memory"
                    + (f" ({memory})" if memory else "") + ": lower them") if flags else (
            "expected the run to fit in this machine's memory")
        raise OutOfMemory(f"out of memory while {what}: {description}; {expected}") from err
