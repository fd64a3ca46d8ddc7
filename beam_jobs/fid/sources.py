"""The FID job's image sources, by the CLI flag that chooses each (:data:`FID_SOURCES`).

A source reads to a PCollection of ``(key, uint8 image [H, W, C])``; keys are the record
key (TFRecords, every raw input kind of ``beam_jobs.preprocess``: image folders and zips,
LSUN LMDB, ImageNet-64 npz, MNIST IDX, TFDS) or the sample index ``i`` in [0, N)
(generators, :mod:`beam_jobs.fid.generators`). Raw inputs are planned and read by the
shared readers of :mod:`beam_jobs.sources` and decoded by
:func:`~beam_jobs.sources.image_transform.pixels_of`, so an image gives the same pixels
here as in the preprocessing job (16-bit images keep their high byte in both).
:class:`ReadImages` applies any source's transform.
"""
from __future__ import annotations

import abc
import dataclasses
import logging
from types import SimpleNamespace
from typing import Any, ClassVar, Iterator

import apache_beam as beam
import numpy as np

from artifacts import dataset_format
from beam_jobs.runtime import beam_fs
from beam_jobs.sources.cli_flags import source_options
from beam_jobs.sources.image_transform import BadImage, pixels_of
from beam_jobs.sources.registry import (
    DEFAULT_MAX_MEMBER_BYTES,
    SourcePlan,
    open_reader,
    plan_source,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
READ_CHUNK = 64  # raw records read per element (one reader per worker reads the chunk)


class ImageSource(abc.ABC):
    """What the FID job reads images from; ``FLAG`` is the CLI flag that chooses it."""

    FLAG: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_args(cls, args: SimpleNamespace) -> "ImageSource":
        """The source the CLI's flags describe (``args.<FLAG>`` is set)."""

    @abc.abstractmethod
    def size_hint(self) -> int:
        """The number of images expected (for logs and Beam options)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The source in words, for logs and errors."""

    @abc.abstractmethod
    def transform(self) -> beam.PTransform:
        """PBegin -> PCollection of (key, uint8 image [H, W, C])."""


# --------------------------------------------------------------------------------------
# TFRecords of a preprocessed data set.
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TFRecordSource(ImageSource):
    """A split of a preprocessed data set (``<data_dir>/<split>-*.tfrecord``)."""

    FLAG = "data_dir"

    data_dir: str
    split: str

    @classmethod
    def from_args(cls, args: SimpleNamespace) -> "TFRecordSource":
        return cls(args.data_dir, args.split)

    def _split_files(self) -> tuple[dict[str, int], dict[str, list[str]]]:
        """(records per split, shard paths per split) from dataset.json, read through
        Beam's FileSystems for a URL (``gs://...``) and checked like
        :func:`artifacts.dataset_format.read_dataset_info` locally."""
        if beam_fs.is_local(self.data_dir):
            info = dataset_format.read_dataset_info(self.data_dir)
            return info.split_counts, info.split_files
        path = beam_fs.join(self.data_dir, dataset_format.DATASET_JSON)
        if not beam_fs.exists(path):
            raise FileNotFoundError(f"{path!r} not found: {self.data_dir!r} is not a "
                                    "preprocessed data set (run `python -m "
                                    "beam_jobs.preprocess` first)")
        _, counts, names = dataset_format.parse_dataset_json(beam_fs.read_json(path), path)
        files = {s: [beam_fs.join(self.data_dir, n) for n in ns] for s, ns in names.items()}
        found = beam_fs.sizes([p for ps in files.values() for p in ps])
        for p in (p for ps in files.values() for p in ps):
            if p not in found:
                raise FileNotFoundError(f"shard {p!r} listed in {path!r} is missing; the data "
                                        "set is incomplete (re-run beam_jobs.preprocess)")
        return counts, files

    def files(self) -> list[str]:
        """The split's shard paths; clear errors for a missing split or shard."""
        counts, split_files = self._split_files()
        if self.split not in counts:
            raise ValueError(f"split {self.split!r} not in data set {self.data_dir!r}; "
                             f"available splits: {sorted(counts)}")
        files = split_files[self.split]
        if not files:
            raise ValueError(f"split {self.split!r} of {self.data_dir!r} lists no shards")
        return files

    def size_hint(self) -> int:
        return self._split_files()[0].get(self.split, 0)

    def describe(self) -> str:
        return f"TFRecords {self.data_dir} split {self.split}"

    def transform(self) -> beam.PTransform:
        return ReadTFRecordImages(self)


class _ParseRecord(beam.DoFn):
    """Serialized tf.train.Example -> (key str, uint8 [H, W, C]); bad records counted."""

    def setup(self):
        import tensorflow as tf

        self._tf = tf
        self._spec = dataset_format.feature_spec()
        self._bad = beam.metrics.Metrics.counter("fid", "undecodable_records")

    def process(self, record: bytes) -> Iterator[tuple[str, np.ndarray]]:
        tf = self._tf
        try:
            ex = tf.io.parse_single_example(record, self._spec)
            image = tf.io.decode_png(ex[dataset_format.IMAGE_KEY]).numpy()
            key = ex[dataset_format.KEY_KEY].numpy().decode("utf-8", "replace")
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            self._bad.inc()
            log.warning("skipping an undecodable record: %s", e)
            return
        yield key, image


class ReadTFRecordImages(beam.PTransform):
    """A :class:`TFRecordSource` -> (record key, uint8 [H, W, C])."""

    def __init__(self, source: TFRecordSource):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        return (pbegin | "Shards" >> beam.Create(self._source.files())
                | "ReadTFRecords" >> beam.io.ReadAllFromTFRecord()
                | "Decode" >> beam.ParDo(_ParseRecord()))


# --------------------------------------------------------------------------------------
# Raw inputs, through the preprocessing job's readers.
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RawImageSource(ImageSource):
    """A raw input of any kind ``beam_jobs.preprocess`` reads (``--source=KIND
    --input=PATH[,PATH...]``, tfds options in ``options``), keyed by record key, at each
    image's own size: uint8 [H, W, 1] for grey images, [H, W, 3] otherwise. Unreadable
    records and entries over ``max_member_bytes`` bytes are counted as undecodable and
    skipped."""

    FLAG = "source"

    kind: str
    input_path: str | tuple[str, ...] | None
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    options: tuple[tuple[str, Any], ...] = ()  # planner options, e.g. (("name", "cifar10"),)

    @classmethod
    def from_args(cls, args: SimpleNamespace) -> "RawImageSource":
        path = args.input if args.input is None or isinstance(args.input, str) else tuple(args.input)
        options = tuple(sorted((k, v) for k, v in (source_options(args) or {}).items()
                               if v is not None))
        return cls(args.source, path, args.max_member_bytes, options)

    def plan(self) -> SourcePlan:
        """Every record's key and locator (listed once, on the driver)."""
        if "_plan" not in self.__dict__:
            object.__setattr__(self, "_plan", plan_source(self.kind, self.input_path,
                                                          dict(self.options)))
        return self.__dict__["_plan"]

    def size_hint(self) -> int:
        return len(self.plan().keys)

    def describe(self) -> str:
        return f"{self.kind} input {self.plan().input_path}"

    def transform(self) -> beam.PTransform:
        return ReadRawImages(self)


class ImageFolderSource(RawImageSource):
    """``--image_folder=DIR``: the image files under a folder, keyed by relative path
    (``--source=image_folder --input=DIR``: the names
    :func:`artifacts.dataset_format.is_image_file` accepts, outside hidden folders)."""

    FLAG = "image_folder"

    def __init__(self, directory: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        super().__init__("image_folder", directory, max_member_bytes)

    @classmethod
    def from_args(cls, args: SimpleNamespace) -> "ImageFolderSource":
        return cls(args.image_folder, args.max_member_bytes)

    @property
    def directory(self) -> str:
        return self.input_path

    def files(self) -> list[str]:
        """Sorted paths of the image files (listed through Beam's FileSystems)."""
        return [beam_fs.join(self.input_path, key) for key in self.plan().keys]

    def describe(self) -> str:
        return f"image folder {self.directory}"


class _ReadRawRecords(beam.DoFn):
    """A chunk of locators -> (key, uint8 [H, W, 1 or 3]) per readable record; the others
    are counted (``undecodable_records``) and skipped."""

    def __init__(self, kind: str, input_path: str | list[str], max_bytes: int):
        self._kind = kind
        self._input_path = input_path
        self._max_bytes = int(max_bytes)
        self._reader = None

    def setup(self) -> None:
        self._reader = open_reader(self._kind, self._input_path, self._max_bytes)
        self._bad = beam.metrics.Metrics.counter("fid", "undecodable_records")

    def teardown(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def process(self, locators: list) -> Iterator[tuple[str, np.ndarray]]:
        for key, _, payload in self._reader.read(locators):
            try:
                image = pixels_of(payload)
            except BadImage as e:
                self._bad.inc()
                log.warning("skipping unreadable image %s: %s", key, e)
                continue
            yield key, image


class ReadRawImages(beam.PTransform):
    """A :class:`RawImageSource` -> (record key, uint8 [H, W, 1 or 3])."""

    def __init__(self, source: RawImageSource):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        plan = self._source.plan()
        chunks = [plan.locators[i:i + READ_CHUNK] for i in range(0, len(plan.locators), READ_CHUNK)]
        return (pbegin | "Locators" >> beam.Create(chunks)
                | "Reshuffle" >> beam.Reshuffle()
                | "ReadRecords" >> beam.ParDo(_ReadRawRecords(
                    plan.kind, plan.reader_input, self._source.max_member_bytes)))


class ReadImages(beam.PTransform):
    """A source -> PCollection of (key, uint8 image [H, W, C]) (see the module doc)."""

    def __init__(self, source: ImageSource):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        if not isinstance(self._source, ImageSource):
            raise TypeError(f"unknown source {self._source!r}; expected an ImageSource "
                            "(beam_jobs.fid.source_registry.FID_SOURCES)")
        return pbegin | self._source.transform()
