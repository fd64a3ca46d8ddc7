"""What every raw source kind of the preprocessing job provides (:class:`RawSource`),
the plan it makes on the driver (:class:`SourcePlan`) and the helpers the kinds share.

A kind has

* a *planner* (:meth:`RawSource.plan`, runs on the driver, before Beam starts): validates
  the input and lists every record's key and a small picklable *locator* (cheaply: LMDB
  keys only, zip central directory, file names, npz/IDX headers and labels);
* a *reader* (an instance, opened once per worker in a DoFn's ``setup()``): reads any
  list of locators, in the given order, as ``(key, label, payload)`` records, where
  payload is encoded image bytes, a uint8 array, or a
  :class:`~beam_jobs.sources.image_transform.BadImage` for an unreadable entry. Every source
  allows random access (LMDB ``get``, zip members, files, memory-mapped arrays), so the
  job can read each output shard's records directly instead of shuffling encoded images
  between workers.

Keys are unique strings within a source; labels are ints (-1 when unknown).

Several inputs of one kind (``--input=a.zip,b.zip``; kinds with :attr:`RawSource.MULTI_INPUT`)
are one plan (:func:`merge_plans`): keys must be unique across the inputs, every locator
becomes ``(input index, the input's own locator, label)`` with the labels re-indexed on
one label set by the kind (:meth:`RawSource.merged_labels`), and
:class:`MultiInputReader` reads each locator from its own input.

An encoded entry (file, zip member, LMDB value) larger than ``max_member_bytes`` (default
:data:`DEFAULT_MAX_MEMBER_BYTES`) is a bad record, not memory: the reader never holds more
than that many bytes of one entry (a zip member's declared size is checked first, then its
decompressed stream is read only up to the cap).
"""
from __future__ import annotations

import abc
import dataclasses
import itertools
import os
from typing import ClassVar, Iterator, Sequence

from tqdm import tqdm

from artifacts.dataset_format import UNKNOWN_LABEL
from beam_jobs.sources.image_transform import BadImage

DEFAULT_MAX_MEMBER_BYTES = 64 << 20  # 64 MiB of encoded bytes per image

Record = tuple  # (key: str, label: int, payload: bytes | np.ndarray | BadImage)


@dataclasses.dataclass
class SourcePlan:
    """What the driver learned about an input: record keys, their locators, label names.

    ``locators[i]`` tells the kind's reader where record ``keys[i]`` is:
    image_folder ``(relative name, label, size in bytes)``, image_zip ``(member name, label)``, lsun_lmdb the raw LMDB key (bytes),
    imagenet64_npz ``(npz path, row, 0-based label)``, mnist_idx ``(images path, row,
    label)``. A plan of several inputs (:func:`merge_plans`) has ``inputs``, their
    absolute paths (``input_path`` is then those joined by ','), and the locators
    ``(input index, the input's own locator, label)``.
    """

    kind: str
    input_path: str  # absolute
    keys: list[str]
    locators: list
    label_names: list[str] | None
    info: dict  # extra facts for dataset.json["source"]
    inputs: list[str] | None = None  # several inputs: their absolute paths, in order

    @property
    def reader_input(self) -> str | list[str]:
        """What :func:`beam_jobs.sources.registry.open_reader` takes to read these locators:
        the input's path, or the list of paths of a plan of several inputs."""
        return list(self.inputs) if self.inputs is not None else self.input_path


class RawSource(abc.ABC):
    """One raw source kind: :meth:`plan` lists an input's records on the driver; an
    instance reads them back by locator (create once per worker, ``close()`` at teardown).

    ``max_member_bytes``: entries (files, zip members, LMDB values) larger than this many
    bytes are returned as :class:`BadImage` without being read into memory.
    """

    kind: ClassVar[str]  # the --source name
    what: ClassVar[str]  # what the input must be, for error messages
    OPTIONS: ClassVar[tuple[str, ...]] = ()  # keyword options of plan() (e.g. tfds: split)
    MULTI_INPUT: ClassVar[bool] = False  # several inputs in one job (merged_labels defined)

    def __init__(self, input_path: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        if int(max_member_bytes) < 1:
            raise ValueError(f"--max_member_bytes={max_member_bytes}: expected a positive "
                             "number of bytes")
        self.input_path = input_path
        self.max_member_bytes = int(max_member_bytes)

    @classmethod
    @abc.abstractmethod
    def plan(cls, path: str) -> SourcePlan:
        """Validates ``path`` as an input of this kind and lists its keys and locators."""

    @classmethod
    def merged_labels(cls, plans: Sequence[SourcePlan]
                      ) -> tuple[list[int], list[str] | None]:
        """(label of every record of ``plans``, in plan then record order; label names) on
        one label set for all of them. Only kinds with ``MULTI_INPUT`` define it."""
        raise NotImplementedError(f"--source={cls.kind} reads one input")

    @abc.abstractmethod
    def read(self, locators: Sequence) -> Iterator[Record]:
        """The records at ``locators`` (from this kind's :class:`SourcePlan`), in order."""

    def close(self) -> None:
        """Releases what :meth:`read` opened (files, environments, scratch space)."""


class MultiInputReader:
    """Reads the locators of a plan of several inputs (:func:`merge_plans`): each
    ``(input index, locator, label)`` by the reader of its input, in the given order, with
    the merged label. Create once per worker, ``close()`` at teardown."""

    def __init__(self, readers: Sequence[RawSource]):
        self.readers = list(readers)

    def read(self, locators: Sequence) -> Iterator[Record]:
        for index, run in itertools.groupby(locators, key=lambda loc: loc[0]):
            run = list(run)
            records = self.readers[index].read([inner for _, inner, _ in run])
            for (key, _, payload), (_, _, label) in zip(records, run, strict=True):
                yield key, label, payload

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def merge_plans(plans: Sequence[SourcePlan], labels: Sequence[int],
                label_names: list[str] | None) -> SourcePlan:
    """One plan of several inputs of one kind (``plans``, in input order): keys in input
    order, locators ``(input index, locator, labels[i])``. ``labels``: the merged label of
    every record, in plan then record order (:meth:`RawSource.merged_labels`).

    ValueError (one line) for an input given twice or a key in two inputs.
    """
    paths = [p.input_path for p in plans]
    for i, path in enumerate(paths):
        if path in paths[:i]:
            raise ValueError(f"input {path!r} is given twice; give each input once")
    if len(labels) != sum(len(p.keys) for p in plans):
        raise RuntimeError(f"{len(labels)} merged labels for "
                           f"{sum(len(p.keys) for p in plans)} records")
    owner: dict[str, int] = {}
    keys, locators = [], []
    for i, p in enumerate(plans):
        for key, locator in zip(p.keys, p.locators, strict=True):
            first = owner.setdefault(key, i)
            if first != i:
                raise ValueError(f"key {key!r} is in input {paths[first]!r} and in input "
                                 f"{p.input_path!r}; record keys must be unique across inputs")
            locators.append((i, locator, labels[len(keys)]))
            keys.append(key)
    inputs = [{"input": p.input_path, "num_input_records": len(p.keys),
               "label_names": p.label_names, **p.info} for p in plans]
    return SourcePlan(plans[0].kind, ",".join(paths), keys, locators, label_names,
                      {"inputs": inputs}, inputs=paths)


def progress(iterable, desc: str, total: int | None = None):
    """tqdm over driver-side key scans, shown only for inputs of 50,000 keys or more."""
    return tqdm(iterable, desc=desc, total=total, unit="key", leave=False,
                disable=total is not None and total < 50_000, mininterval=1.0)


def require_exists(path: str, what: str) -> str:
    """Absolute ``path`` (a local path, or a URL of any Beam filesystem: a file, or a
    prefix with files under it); FileNotFoundError naming ``what`` if it is missing."""
    from beam_jobs.runtime import beam_fs

    if beam_fs.is_local(path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"input {path!r} does not exist; expected {what}")
        return os.path.abspath(path)
    if not (beam_fs.exists(path) or beam_fs.list_files(path)):
        raise FileNotFoundError(f"input {path!r} does not exist; expected {what}")
    return path


def require_local(path: str, kind: str, what: str) -> None:
    """ValueError unless ``path`` is local or mounted (LMDB and memory-mapped arrays)."""
    from beam_jobs.runtime import beam_fs

    if not beam_fs.is_local(path):
        raise ValueError(f"input {path!r}: --source={kind} reads {what} with local random "
                         "access; give a local or mounted path (e.g. a gcsfuse mount)")


def no_images(path: str, what: str) -> ValueError:
    """The error of an input that holds no images."""
    return ValueError(f"input {path!r} holds no images; expected {what}")


def labels_from_parents(relpaths: list[str]) -> tuple[list[int], list[str] | None]:
    """Label = index of the parent folder name among the sorted names, when >= 2 names."""
    parents = [os.path.basename(os.path.dirname(p)) for p in relpaths]
    names = sorted({p for p in parents if p})
    if len(names) < 2:
        return [UNKNOWN_LABEL] * len(relpaths), None
    index = {n: i for i, n in enumerate(names)}
    return [index[p] if p else UNKNOWN_LABEL for p in parents], names


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
