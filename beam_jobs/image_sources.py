"""Raw image sources of the preprocessing job: driver-side planning and worker-side reading.

Every source kind has

* a *planner* (runs on the driver, before Beam starts): validates the input and lists
  every record's key and a small picklable *locator* (cheaply: LMDB keys only, zip
  central directory, file names, npz/IDX headers and labels);
* a *reader* (runs in a Beam DoFn; opened once per worker in ``setup()``): reads any list
  of locators, in the given order, as ``(key, label, payload)`` records, where payload is
  encoded image bytes, a uint8 array, or a :class:`~beam_jobs.image_transform.BadImage`
  for an unreadable entry. Every source allows random access (LMDB ``get``, zip members,
  files, memory-mapped arrays), so the job can read each output shard's records directly
  instead of shuffling encoded images between workers.

Keys are unique strings within a source; labels are ints (-1 when unknown).

An encoded entry (file, zip member, LMDB value) larger than ``max_member_bytes`` (default
:data:`DEFAULT_MAX_MEMBER_BYTES`) is a bad record, not memory: the reader never holds more
than that many bytes of one entry (a zip member's declared size is checked first, then its
decompressed stream is read only up to the cap).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from beam_jobs import mnist_idx
from beam_jobs.image_transform import BadImage
from artifacts.records import UNKNOWN_LABEL

SOURCE_KINDS = ("lsun_lmdb", "imagenet64_npz", "image_folder", "image_zip", "mnist_idx")
DEFAULT_MAX_MEMBER_BYTES = 64 << 20  # 64 MiB of encoded bytes per image
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp")

Record = tuple  # (key: str, label: int, payload: bytes | np.ndarray | BadImage)


@dataclasses.dataclass
class SourcePlan:
    """What the driver learned about an input: record keys, their locators, label names.

    ``locators[i]`` tells a :class:`SourceReader` where record ``keys[i]`` is:
    image_folder/image_zip ``(relative name, label)``, lsun_lmdb the raw LMDB key (bytes),
    imagenet64_npz ``(npz path, row, 0-based label)``, mnist_idx ``(images path, row,
    label)``.
    """

    kind: str
    input_path: str  # absolute
    keys: list[str]
    locators: list
    label_names: list[str] | None
    info: dict  # extra facts for dataset.json["source"]


def _progress(iterable, desc: str, total: int | None = None):
    return tqdm(iterable, desc=desc, total=total, unit="key", leave=False,
                disable=total is not None and total < 50_000, mininterval=1.0)


def _require_exists(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"input {path!r} does not exist; expected {what}")
    return os.path.abspath(path)


def _no_images(path: str, what: str) -> ValueError:
    return ValueError(f"input {path!r} holds no images; expected {what}")


def _labels_from_parents(relpaths: list[str]) -> tuple[list[int], list[str] | None]:
    """Label = index of the parent folder name among the sorted names, when >= 2 names."""
    parents = [os.path.basename(os.path.dirname(p)) for p in relpaths]
    names = sorted({p for p in parents if p})
    if len(names) < 2:
        return [UNKNOWN_LABEL] * len(relpaths), None
    index = {n: i for i, n in enumerate(names)}
    return [index[p] if p else UNKNOWN_LABEL for p in parents], names


def _is_image_name(name: str) -> bool:
    base = os.path.basename(name)
    return (not base.startswith(".") and "__MACOSX" not in name
            and base.lower().endswith(IMAGE_EXTENSIONS))


# -- image_folder -------------------------------------------------------------------------

_FOLDER_WHAT = f"a folder of image files ({', '.join(IMAGE_EXTENSIONS)}), optionally in class subfolders"


def plan_image_folder(path: str) -> SourcePlan:
    root = _require_exists(path, _FOLDER_WHAT)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"input {path!r} is not a folder; expected {_FOLDER_WHAT}")
    rel: list[str] = []
    skipped = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            r = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if _is_image_name(r):
                rel.append(r)
            else:
                skipped += 1
    rel.sort()
    if not rel:
        raise _no_images(path, _FOLDER_WHAT)
    labels, names = _labels_from_parents(rel)
    return SourcePlan("image_folder", root, rel, list(zip(rel, labels)), names,
                      {"skipped_non_image_files": skipped})


# -- image_zip ----------------------------------------------------------------------------

_ZIP_WHAT = f"a .zip of image files ({', '.join(IMAGE_EXTENSIONS)}), optionally in class folders"


def plan_image_zip(path: str) -> SourcePlan:
    full = _require_exists(path, _ZIP_WHAT)
    if not zipfile.is_zipfile(full):
        raise ValueError(f"input {path!r} is not a zip archive; expected {_ZIP_WHAT}")
    with zipfile.ZipFile(full) as zf:
        infos = zf.infolist()
    names = sorted(i.filename for i in infos if not i.is_dir() and _is_image_name(i.filename))
    if not names:
        raise _no_images(path, _ZIP_WHAT)
    labels, label_names = _labels_from_parents(names)
    return SourcePlan("image_zip", full, names, list(zip(names, labels)), label_names,
                      {"skipped_non_image_files": sum(not i.is_dir() for i in infos) - len(names)})


# -- lsun_lmdb ----------------------------------------------------------------------------

_LMDB_WHAT = "an LMDB directory (holding data.mdb) of key -> WebP/JPEG bytes, as LSUN exports it"


def _lmdb_dir(path: str) -> str:
    full = _require_exists(path, _LMDB_WHAT)
    if os.path.isfile(full) and os.path.basename(full) == "data.mdb":
        full = os.path.dirname(full)
    if not os.path.isfile(os.path.join(full, "data.mdb")):
        raise ValueError(f"input {path!r} is not an LMDB directory (no data.mdb); expected {_LMDB_WHAT}")
    return full


def _open_lmdb(path: str):
    import lmdb

    return lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False,
                     max_readers=512)


def lmdb_key_str(key: bytes) -> str:
    """LMDB key bytes -> record key (ASCII as is, anything else as 'hex:...')."""
    try:
        s = key.decode("ascii")
        if s.isprintable():
            return s
    except UnicodeDecodeError:
        pass
    return "hex:" + key.hex()


def plan_lsun_lmdb(path: str) -> SourcePlan:
    full = _lmdb_dir(path)
    env = _open_lmdb(full)
    try:
        with env.begin(write=False) as txn:
            total = txn.stat()["entries"]
            raw_keys = [bytes(k) for k in _progress(txn.cursor().iternext(values=False),
                                                    f"scanning LMDB keys of {full}", total)]
    finally:
        env.close()
    if not raw_keys:
        raise _no_images(path, _LMDB_WHAT)
    return SourcePlan("lsun_lmdb", full, [lmdb_key_str(k) for k in raw_keys], raw_keys, None, {})


# -- imagenet64_npz -----------------------------------------------------------------------

_NPZ_WHAT = ("a downsampled-ImageNet .npz batch (arrays 'data' uint8 [N, 3*S*S] channel-first "
             "and 'labels' 1-based [N]) or a folder of them")


def _npz_data_shape(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the 'data' member without reading it."""
    with zipfile.ZipFile(path) as zf:
        if "data.npy" not in zf.namelist():
            raise ValueError(f"{path!r} has no 'data' array; expected {_NPZ_WHAT}")
        with zf.open("data.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
    return shape, dtype


def plan_imagenet64_npz(path: str) -> SourcePlan:
    full = _require_exists(path, _NPZ_WHAT)
    files = sorted(glob.glob(os.path.join(full, "*.npz"))) if os.path.isdir(full) else [full]
    if not files:
        raise _no_images(path, _NPZ_WHAT)
    keys: list[str] = []
    locators: list[tuple] = []
    side = None
    for f in files:
        try:
            shape, dtype = _npz_data_shape(f)
            with np.load(f) as z:
                if "labels" not in z.files:
                    raise ValueError(f"{f!r} has no 'labels' array; expected {_NPZ_WHAT}")
                labels = np.asarray(z["labels"])
        except zipfile.BadZipFile as e:
            raise ValueError(f"{f!r} is not an npz file ({e}); expected {_NPZ_WHAT}") from None
        s = int(round((shape[1] / 3) ** 0.5)) if len(shape) == 2 else 0
        if dtype != np.uint8 or len(shape) != 2 or 3 * s * s != shape[1]:
            raise ValueError(f"{f!r}: 'data' is {dtype} {shape}; expected {_NPZ_WHAT}")
        if side is not None and s != side:
            raise ValueError(f"{f!r} holds {s}x{s} images, other files {side}x{side}")
        side = s
        if labels.shape != (shape[0],):
            raise ValueError(f"{f!r}: 'labels' shape {labels.shape} does not match 'data' {shape}")
        if shape[0] and labels.min() < 1:
            raise ValueError(f"{f!r}: labels must be 1-based (min is {labels.min()})")
        base = os.path.basename(f)
        keys.extend(f"{base}/{i:07d}" for i in range(shape[0]))
        locators.extend((f, i, int(label) - 1) for i, label in enumerate(labels))
    if not keys:
        raise _no_images(path, _NPZ_WHAT)
    return SourcePlan("imagenet64_npz", full, keys, locators, None,
                      {"files": [os.path.basename(f) for f in files], "stored_size": side})


# -- mnist_idx ----------------------------------------------------------------------------

_MNIST_WHAT = ("a folder with MNIST IDX files (t10k-/train-images-idx3-ubyte[.gz] and the "
               "matching -labels-idx1-ubyte[.gz])")


def _mnist_pairs(root: str) -> list[tuple[str, str, str]]:
    pairs = []
    for prefix in ("train", "t10k"):
        for ext in (".gz", ""):
            img = os.path.join(root, f"{prefix}-images-idx3-ubyte{ext}")
            lab = os.path.join(root, f"{prefix}-labels-idx1-ubyte{ext}")
            if os.path.isfile(img) and os.path.isfile(lab):
                pairs.append((prefix, img, lab))
                break
    return pairs


def plan_mnist_idx(path: str) -> SourcePlan:
    root = _require_exists(path, _MNIST_WHAT)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"input {path!r} is not a folder; expected {_MNIST_WHAT}")
    pairs = _mnist_pairs(root)
    if not pairs:
        raise _no_images(path, _MNIST_WHAT)
    keys, locators = [], []
    for prefix, img, lab in pairs:
        labels = mnist_idx.read_idx(lab)
        if labels.ndim != 1:
            raise ValueError(f"{lab!r}: labels have shape {labels.shape}; expected [N]")
        keys.extend(f"{prefix}/{i:05d}" for i in range(len(labels)))
        locators.extend((img, i, int(label)) for i, label in enumerate(labels))
    if not keys:
        raise _no_images(path, _MNIST_WHAT)
    return SourcePlan("mnist_idx", root, keys, locators, [str(d) for d in range(10)],
                      {"files": [os.path.basename(p) for _, i, l in pairs for p in (i, l)]})


_PLANNERS = {
    "lsun_lmdb": plan_lsun_lmdb,
    "imagenet64_npz": plan_imagenet64_npz,
    "image_folder": plan_image_folder,
    "image_zip": plan_image_zip,
    "mnist_idx": plan_mnist_idx,
}


def plan_source(kind: str, path: str) -> SourcePlan:
    """Validates ``path`` as a ``kind`` input and lists its keys and locators (driver side)."""
    if kind not in _PLANNERS:
        raise ValueError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    return _PLANNERS[kind](path)


# -- readers (worker side) ----------------------------------------------------------------

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


def too_large(size: int, max_bytes: int, what: str) -> BadImage:
    """The bad-record reason of an entry of ``size`` bytes over the ``max_bytes`` cap."""
    return BadImage(f"{what} of {size} bytes exceeds --max_member_bytes={max_bytes}")


def read_capped(f, max_bytes: int, what: str) -> bytes | BadImage:
    """At most ``max_bytes`` bytes of the open binary stream ``f``; a :class:`BadImage`
    (after reading ``max_bytes + 1`` bytes, no more) if the stream is longer."""
    data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        return BadImage(f"{what} is longer than --max_member_bytes={max_bytes} bytes")
    return data


class SourceReader:
    """Random-access reader of one input; create once per worker, ``close()`` at teardown.

    ``max_member_bytes``: entries (files, zip members, LMDB values) larger than this many
    bytes are returned as :class:`BadImage` without being read into memory."""

    def __init__(self, kind: str, input_path: str,
                 max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        if kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {kind!r}; expected one of "
                             f"{', '.join(SOURCE_KINDS)}")
        if int(max_member_bytes) < 1:
            raise ValueError(f"--max_member_bytes={max_member_bytes}: expected a positive "
                             "number of bytes")
        self.kind = kind
        self.input_path = input_path
        self.max_member_bytes = int(max_member_bytes)
        self._env = None
        self._zip = None
        self._arrays: dict[str, np.ndarray] = {}
        self._scratch: str | None = None

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        self._arrays.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def read(self, locators: Sequence) -> Iterator[Record]:
        """The records at ``locators`` (from this source's :class:`SourcePlan`), in order."""
        return getattr(self, "_read_" + self.kind)(locators)

    def _read_image_folder(self, locators) -> Iterator[Record]:
        cap = self.max_member_bytes
        for rel, label in locators:
            try:
                path = os.path.join(self.input_path, rel)
                size = os.path.getsize(path)
                if size > cap:
                    data = too_large(size, cap, "file")
                else:
                    with open(path, "rb") as f:
                        data = read_capped(f, cap, "file")
            except OSError as e:
                data = BadImage(f"unreadable file ({type(e).__name__}: {e})")
            yield rel, label, data

    def _read_image_zip(self, locators) -> Iterator[Record]:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.input_path)
        cap = self.max_member_bytes
        for name, label in locators:
            try:
                info = self._zip.getinfo(name)
                if info.file_size > cap:  # the declared size: refused without inflating
                    data = too_large(info.file_size, cap, "zip member")
                else:  # the real stream, bounded in case the declared size lies
                    with self._zip.open(info) as f:
                        data = read_capped(f, cap, "zip member")
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError,
                    zlib.error, KeyError) as e:
                data = BadImage(f"unreadable zip member ({type(e).__name__}: {e})")
            yield name, label, data

    def _read_lsun_lmdb(self, locators) -> Iterator[Record]:
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

    def _array(self, path: str, load) -> np.ndarray:
        if path not in self._arrays:
            self._arrays[path] = load()
        return self._arrays[path]

    def _read_imagenet64_npz(self, locators) -> Iterator[Record]:
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="imagenet64_npz_")
        for path, row, label in locators:
            data = self._array(path, lambda: npz_member_array(path, "data.npy", self._scratch))
            s = int(round((data.shape[1] / 3) ** 0.5))
            image = np.ascontiguousarray(np.asarray(data[row]).reshape(3, s, s).transpose(1, 2, 0))
            yield f"{os.path.basename(path)}/{row:07d}", label, image

    def _read_mnist_idx(self, locators) -> Iterator[Record]:
        for path, row, label in locators:
            images = self._array(path, lambda: mnist_idx.read_idx(path))
            if images.ndim != 3 or row >= len(images):
                raise ValueError(f"MNIST images {path!r} have shape {images.shape}; expected "
                                 f"[N, H, W] with N > {row} (as its labels file says)")
            prefix = os.path.basename(path).split("-", 1)[0]
            yield f"{prefix}/{row:05d}", label, images[row]


__all__ = ["DEFAULT_MAX_MEMBER_BYTES", "read_capped", "too_large", "SOURCE_KINDS", "SourcePlan", "SourceReader", "plan_source", "lmdb_key_str",
           "IMAGE_EXTENSIONS"]
