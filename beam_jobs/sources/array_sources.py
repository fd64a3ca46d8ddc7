"""Raw sources of uint8 pixel arrays: downsampled-ImageNet npz batches
(``imagenet64_npz``) and MNIST IDX files (``mnist_idx``).

Workers read rows by random access from memory maps (:func:`npz_member_array`; npz
inputs must be local or mounted) or from the decoded IDX array (IDX files are read through
Beam's FileSystems, so they may be on any Beam filesystem), never a whole batch file per
record.
"""
from __future__ import annotations

import glob
import os
import shutil
import struct
import tempfile
import zipfile
from typing import Callable, Iterator, Sequence

import numpy as np

from beam_jobs.runtime import beam_fs
from beam_jobs.sources import mnist_idx
from beam_jobs.sources.raw_source import (
    DEFAULT_MAX_MEMBER_BYTES,
    RawSource,
    Record,
    SourcePlan,
    no_images,
    require_exists,
    require_local,
)


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if major == 1
                   else np.lib.format.read_array_header_2_0)
    return read_header(f)


def npz_member_array(path: str, member: str, scratch_dir: str) -> np.ndarray:
    """Read-only memory map of ``member`` (e.g. 'data.npy') of an npz, for random rows.

    A stored member (``np.savez``) is mapped in place; a deflated one
    (``np.savez_compressed``) is first extracted to ``scratch_dir`` (once per worker), so
    a worker never holds a whole batch file in memory.
    """
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            target = os.path.join(scratch_dir, f"{len(os.listdir(scratch_dir))}-{member}")
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 * 2 ** 20)
            return np.load(target, mmap_mode="r")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local_header = f.read(30)  # zip local file header; name and extra lengths at 26
        if local_header[:4] != b"PK\x03\x04":
            raise ValueError(f"{path!r}: corrupt zip local header of {member!r}")
        name_len, extra_len = struct.unpack("<HH", local_header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        shape, fortran, dtype = _read_npy_header(f)
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset,
                     order="F" if fortran else "C")


class _ArraySource(RawSource):
    """Keeps each input file's array open (loaded once per worker) across reads."""

    def __init__(self, input_path: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        super().__init__(input_path, max_member_bytes)
        self._arrays: dict[str, np.ndarray] = {}

    def _array(self, path: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        if path not in self._arrays:
            self._arrays[path] = load()
        return self._arrays[path]

    def close(self) -> None:
        self._arrays.clear()


class Imagenet64Npz(_ArraySource):
    """``imagenet64_npz``: rows of 'data' uint8 [N, 3*S*S] (channel-first) with 1-based
    'labels' [N]; records are uint8 [S, S, 3] with 0-based labels."""

    kind = "imagenet64_npz"
    what = ("a downsampled-ImageNet .npz batch (arrays 'data' uint8 [N, 3*S*S] channel-first "
            "and 'labels' 1-based [N]) or a folder of them")

    def __init__(self, input_path: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        super().__init__(input_path, max_member_bytes)
        self._scratch: str | None = None

    @classmethod
    def _data_shape(cls, path: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of the 'data' member without reading it."""
        with zipfile.ZipFile(path) as zf:
            if "data.npy" not in zf.namelist():
                raise ValueError(f"{path!r} has no 'data' array; expected {cls.what}")
            with zf.open("data.npy") as f:
                shape, _, dtype = _read_npy_header(f)
        return shape, dtype

    @classmethod
    def plan(cls, path: str) -> SourcePlan:
        require_local(path, cls.kind, "memory-mapped npz arrays")
        full = require_exists(path, cls.what)
        files = sorted(glob.glob(os.path.join(full, "*.npz"))) if os.path.isdir(full) else [full]
        if not files:
            raise no_images(path, cls.what)
        keys: list[str] = []
        locators: list[tuple] = []
        side = None
        for f in files:
            try:
                shape, dtype = cls._data_shape(f)
                with np.load(f) as z:
                    if "labels" not in z.files:
                        raise ValueError(f"{f!r} has no 'labels' array; expected {cls.what}")
                    labels = np.asarray(z["labels"])
            except zipfile.BadZipFile as e:
                raise ValueError(f"{f!r} is not an npz file ({e}); expected {cls.what}") from None
            s = int(round((shape[1] / 3) ** 0.5)) if len(shape) == 2 else 0
            if dtype != np.uint8 or len(shape) != 2 or 3 * s * s != shape[1]:
                raise ValueError(f"{f!r}: 'data' is {dtype} {shape}; expected {cls.what}")
            if side is not None and s != side:
                raise ValueError(f"{f!r} holds {s}x{s} images, other files {side}x{side}")
            side = s
            if labels.shape != (shape[0],):
                raise ValueError(f"{f!r}: 'labels' shape {labels.shape} does not match 'data' "
                                 f"{shape}")
            if shape[0] and labels.min() < 1:
                raise ValueError(f"{f!r}: labels must be 1-based (min is {labels.min()})")
            base = os.path.basename(f)
            keys.extend(f"{base}/{i:07d}" for i in range(shape[0]))
            locators.extend((f, i, int(label) - 1) for i, label in enumerate(labels))
        if not keys:
            raise no_images(path, cls.what)
        return SourcePlan(cls.kind, full, keys, locators, None,
                          {"files": [os.path.basename(f) for f in files], "stored_size": side})

    def read(self, locators: Sequence) -> Iterator[Record]:
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="imagenet64_npz_")
        for path, row, label in locators:
            data = self._array(path, lambda: npz_member_array(path, "data.npy", self._scratch))
            s = int(round((data.shape[1] / 3) ** 0.5))
            image = np.ascontiguousarray(np.asarray(data[row]).reshape(3, s, s).transpose(1, 2, 0))
            yield f"{os.path.basename(path)}/{row:07d}", label, image

    def close(self) -> None:
        super().close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


class MnistIdx(_ArraySource):
    """``mnist_idx``: the train and/or t10k IDX image/label pairs of a folder; records are
    uint8 [H, W] (28 x 28) with their digit label, keyed ``<train|t10k>/NNNNN``."""

    kind = "mnist_idx"
    what = ("a folder with MNIST IDX files (t10k-/train-images-idx3-ubyte[.gz] and the "
            "matching -labels-idx1-ubyte[.gz])")

    @staticmethod
    def _pairs(root: str) -> list[tuple[str, str, str]]:
        pairs = []
        for prefix in ("train", "t10k"):
            for ext in (".gz", ""):
                img = beam_fs.join(root, f"{prefix}-images-idx3-ubyte{ext}")
                lab = beam_fs.join(root, f"{prefix}-labels-idx1-ubyte{ext}")
                if beam_fs.exists(img) and beam_fs.exists(lab):
                    pairs.append((prefix, img, lab))
                    break
        return pairs

    @classmethod
    def plan(cls, path: str) -> SourcePlan:
        root = require_exists(path, cls.what)
        if beam_fs.is_local(root) and not os.path.isdir(root):
            raise NotADirectoryError(f"input {path!r} is not a folder; expected {cls.what}")
        pairs = cls._pairs(root)
        if not pairs:
            raise no_images(path, cls.what)
        keys, locators = [], []
        for prefix, img, lab in pairs:
            labels = mnist_idx.read_idx(lab)
            if labels.ndim != 1:
                raise ValueError(f"{lab!r}: labels have shape {labels.shape}; expected [N]")
            keys.extend(f"{prefix}/{i:05d}" for i in range(len(labels)))
            locators.extend((img, i, int(label)) for i, label in enumerate(labels))
        if not keys:
            raise no_images(path, cls.what)
        return SourcePlan(cls.kind, root, keys, locators, [str(d) for d in range(10)],
                          {"files": [beam_fs.split(p)[1] for _, i, l in pairs for p in (i, l)]})

    def read(self, locators: Sequence) -> Iterator[Record]:
        for path, row, label in locators:
            images = self._array(path, lambda: mnist_idx.read_idx(path))
            if images.ndim != 3 or row >= len(images):
                raise ValueError(f"MNIST images {path!r} have shape {images.shape}; expected "
                                 f"[N, H, W] with N > {row} (as its labels file says)")
            prefix = beam_fs.split(path)[1].split("-", 1)[0]
            yield f"{prefix}/{row:05d}", label, images[row]
