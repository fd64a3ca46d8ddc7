"""The ``lsun_lmdb`` raw source: an LMDB of key -> WebP/JPEG bytes, as LSUN exports it.

The driver scans keys only (``iternext(values=False)``); workers open the LMDB once with
``readonly=True, lock=False, readahead=False`` and ``get`` their records' values.
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

from artifacts.dataset_format import UNKNOWN_LABEL
from beam_jobs.sources.raw_source import (
    DEFAULT_MAX_MEMBER_BYTES,
    RawSource,
    Record,
    SourcePlan,
    no_images,
    progress,
    require_exists,
    require_local,
    too_large,
)


def lmdb_key_str(key: bytes) -> str:
    """LMDB key bytes -> record key (ASCII as is, anything else as 'hex:...')."""
    try:
        s = key.decode("ascii")
        if s.isprintable():
            return s
    except UnicodeDecodeError:
        pass
    return "hex:" + key.hex()


def _open_lmdb(path: str):
    import lmdb

    return lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False,
                     max_readers=512)


class LsunLmdb(RawSource):
    """``lsun_lmdb``: every LMDB value is one encoded image, keyed by :func:`lmdb_key_str`
    of its LMDB key; labels are unknown (-1)."""

    kind = "lsun_lmdb"
    what = "an LMDB directory (holding data.mdb) of key -> WebP/JPEG bytes, as LSUN exports it"

    def __init__(self, input_path: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        super().__init__(input_path, max_member_bytes)
        self._env = None

    @classmethod
    def _directory(cls, path: str) -> str:
        require_local(path, cls.kind, "an LMDB")
        full = require_exists(path, cls.what)
        if os.path.isfile(full) and os.path.basename(full) == "data.mdb":
            full = os.path.dirname(full)
        if not os.path.isfile(os.path.join(full, "data.mdb")):
            raise ValueError(f"input {path!r} is not an LMDB directory (no data.mdb); "
                             f"expected {cls.what}")
        return full

    @classmethod
    def plan(cls, path: str) -> SourcePlan:
        full = cls._directory(path)
        env = _open_lmdb(full)
        try:
            with env.begin(write=False) as txn:
                total = txn.stat()["entries"]
                raw_keys = [bytes(k) for k in progress(txn.cursor().iternext(values=False),
                                                       f"scanning LMDB keys of {full}", total)]
        finally:
            env.close()
        if not raw_keys:
            raise no_images(path, cls.what)
        return SourcePlan(cls.kind, full, [lmdb_key_str(k) for k in raw_keys], raw_keys, None, {})

    def read(self, locators: Sequence) -> Iterator[Record]:
        if self._env is None:
            self._env = _open_lmdb(self.input_path)
        with self._env.begin(write=False, buffers=False) as txn:
            for raw_key in locators:
                value = txn.get(raw_key)
                if value is None:
                    raise RuntimeError(f"LMDB {self.input_path!r} changed while reading: "
                                       f"planned key {raw_key!r} is gone")
                if len(value) > self.max_member_bytes:
                    value = too_large(len(value), self.max_member_bytes, "LMDB value")
                yield lmdb_key_str(raw_key), UNKNOWN_LABEL, value

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
