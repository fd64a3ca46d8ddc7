"""The FID job's image sources, one class per kind, each read by its own PTransform.

A source reads to a PCollection of ``(key, uint8 image [H, W, C])``; keys are the record
key (TFRecords), the path relative to the folder (image folders) or the sample index
``i`` in [0, N) (samples, drawn with seed ``seed + i`` in batches of ``batch_size``).
:class:`ReadImages` applies any source's transform.

Models (generators here, the extractor in :mod:`beam_jobs.fid_pipeline`) run through
:class:`BatchInference`: batches whose members and order depend only on the keys, so
every image and feature vector is bit-identical on every runner and run (float32 conv
outputs change by ~1e-7 with a batch's composition, and Beam's RunInference batches
whatever a bundle holds).
"""
from __future__ import annotations

import abc
import dataclasses
import io
import logging
import math
import os
from typing import Any, Iterator, Union

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.utils import shared

from artifacts import dataset_format
from beam_jobs import beam_fs
from beam_jobs.extractor_contract import SAMPLE_SIGNATURE, check_signature
from beam_jobs.fid_math import subset_key
from beam_jobs.inference_handlers import ModelDirSamplerHandler, sampler_model_handler
from beam_jobs.raw_source import DEFAULT_MAX_MEMBER_BYTES

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64


class ImageSource(abc.ABC):
    """What the FID job reads images from."""

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

    data_dir: str
    split: str

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
        _, counts, names = dataset_format._parse(beam_fs.read_json(path), path)
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
# A folder of image files.
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImageFolderSource(ImageSource):
    """All image files under a folder (recursively), keyed by relative path: the names
    :func:`artifacts.dataset_format.is_image_file` accepts, outside hidden folders (as
    ``beam_jobs.preprocess --source=image_folder`` reads them). Files larger than
    ``max_member_bytes`` and images PIL refuses as decompression bombs are counted as
    undecodable records and skipped."""

    directory: str
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES

    def files(self) -> list[str]:
        """Sorted paths of the image files (listed through Beam's FileSystems)."""
        if beam_fs.is_local(self.directory) and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"image folder {self.directory!r} does not exist")
        listed = beam_fs.list_files(self.directory)
        if not listed and not beam_fs.is_local(self.directory):
            raise FileNotFoundError(f"image folder {self.directory!r} does not exist or is "
                                    "empty")
        out = [beam_fs.join(self.directory, rel) for rel in sorted(listed)
               if dataset_format.is_image_file(rel)
               and not any(part.startswith(".") for part in rel.split("/")[:-1])]
        if not out:
            raise ValueError(f"no image files ({', '.join(dataset_format.IMAGE_EXTENSIONS)}) "
                             f"under {self.directory!r}")
        return out

    def size_hint(self) -> int:
        return len(self.files())

    def describe(self) -> str:
        return f"image folder {self.directory}"

    def transform(self) -> beam.PTransform:
        return ReadFolderImages(self)


class _ReadImageFile(beam.DoFn):
    """Path -> (relative path, uint8 [H, W, 1 or 3]); unreadable files, files over
    ``max_bytes`` bytes and decompression bombs are counted and skipped."""

    def __init__(self, root: str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        self._root = root
        self._max_bytes = int(max_bytes)

    def setup(self):
        self._bad = beam.metrics.Metrics.counter("fid", "undecodable_records")

    def process(self, path: str) -> Iterator[tuple[str, np.ndarray]]:
        from PIL import Image

        try:
            with FileSystems.open(path) as f:
                data = f.read(self._max_bytes + 1)
            if len(data) > self._max_bytes:
                raise ValueError(f"file is longer than --max_member_bytes={self._max_bytes}")
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("L") if im.mode in ("L", "I;16", "1") else im.convert("RGB")
                image = np.asarray(im, np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            self._bad.inc()
            log.warning("skipping unreadable image %s: %s", path, e)
            return
        prefix = beam_fs.join(self._root, "")
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, self._root)
        yield rel, image[..., None] if image.ndim == 2 else image


class ReadFolderImages(beam.PTransform):
    """An :class:`ImageFolderSource` -> (relative path, uint8 [H, W, 1 or 3])."""

    def __init__(self, source: ImageFolderSource):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        s = self._source
        return (pbegin | "Files" >> beam.Create(s.files())
                | "Reshuffle" >> beam.Reshuffle()
                | "ReadFiles" >> beam.ParDo(_ReadImageFile(s.directory, s.max_member_bytes)))


# --------------------------------------------------------------------------------------
# Samples of a generator.
# --------------------------------------------------------------------------------------
class _GeneratorSource(ImageSource):
    """``num_samples`` samples at ``temperature``, sample i drawn with seed ``seed + i``
    in batches of ``batch_size``; subclasses say where the generator is."""

    num_samples: int
    temperature: float
    seed: int
    batch_size: int

    @abc.abstractmethod
    def model_handler(self) -> ModelHandler:
        """Model handler: int64 seed -> uint8 image [H, W, C]."""

    def _check_counts(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be positive, got {self.num_samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")

    @abc.abstractmethod
    def validate(self) -> None:
        """Raises a clear error unless the generator can be sampled as asked."""

    def size_hint(self) -> int:
        return self.num_samples

    def _seeds(self) -> str:
        return (f"seeds {self.seed}..{self.seed + self.num_samples - 1}, temperature "
                f"{self.temperature}")

    def transform(self) -> beam.PTransform:
        return ReadSampledImages(self)


@dataclasses.dataclass(frozen=True)
class SampleSource(_GeneratorSource):
    """``num_samples`` images from a generator SavedModel's ``sample`` signature."""

    saved_model_dir: str
    num_samples: int
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def validate(self) -> None:
        self._check_counts()
        if not os.path.isdir(self.saved_model_dir):
            raise FileNotFoundError(f"generator SavedModel {self.saved_model_dir!r} does not exist")
        check_signature(self.saved_model_dir, SAMPLE_SIGNATURE,
                        {"seed": "int64", "temperature": "float32"})

    def model_handler(self) -> ModelHandler:
        return sampler_model_handler(self.saved_model_dir, batch_size=self.batch_size,
                                     temperature=self.temperature)

    def describe(self) -> str:
        return f"{self.num_samples} samples of {self.saved_model_dir} ({self._seeds()})"


@dataclasses.dataclass(frozen=True)
class ModelDirSampleSource(_GeneratorSource):
    """``num_samples`` images drawn straight from a trained model directory (written by
    ``pipeline.train``): the same rows as the export's ``sample`` signature, no export."""

    model_dir: str
    num_samples: int
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def validate(self) -> None:
        from artifacts import model_io

        self._check_counts()
        if not os.path.isfile(os.path.join(self.model_dir, model_io.CONFIG_FILE)):
            raise FileNotFoundError(f"model directory {self.model_dir!r} has no "
                                    f"{model_io.CONFIG_FILE}; expected one written by "
                                    "pipeline.train")

    def model_handler(self) -> ModelHandler:
        return ModelDirSamplerHandler(self.model_dir, batch_size=self.batch_size,
                                      temperature=self.temperature)

    def describe(self) -> str:
        return f"{self.num_samples} samples of model directory {self.model_dir} ({self._seeds()})"


class ReadSampledImages(beam.PTransform):
    """A generator source -> (sample index i, uint8 [H, W, C]); checks the source first."""

    def __init__(self, source: _GeneratorSource):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        s = self._source
        s.validate()
        return (pbegin | "Indices" >> beam.Create(range(s.num_samples))
                | "Seeds" >> beam.Map(lambda i, base: (i, base + i), s.seed)
                | "Sample" >> BatchInference(s.model_handler(), s.batch_size, s.num_samples)
                | "Images" >> beam.MapTuple(lambda i, result: (i, result.inference)))


# --------------------------------------------------------------------------------------
# Deterministic batches.
# --------------------------------------------------------------------------------------
def batch_index(key: Any, batch_size: int, num_batches: int) -> int:
    """The batch of a key: ``i // batch_size`` for sample indices, else a bucket of the
    key's 64-bit BLAKE2b hash (:func:`~beam_jobs.fid_math.subset_key`) among
    ``num_batches``."""
    if isinstance(key, (int, np.integer)):
        return int(key) // batch_size
    return subset_key(key)[0] % num_batches


def _key_order(key: Any) -> tuple:
    if isinstance(key, (int, np.integer)):
        return (0, int(key), "")
    return (1, 0, str(key))


class _BatchInferenceFn(beam.DoFn):
    """``(batch, [(key, example), ...])`` -> ``(key, PredictionResult)``: the examples in
    key order, in chunks of at most ``batch_size``, through ``handler.run_inference``
    (one model per worker process, shared by its threads)."""

    def __init__(self, handler: ModelHandler, batch_size: int):
        self._handler = handler
        self._batch_size = batch_size
        self._shared = shared.Shared()

    def setup(self) -> None:
        self._model = self._shared.acquire(self._handler.load_model)

    def process(self, element: Any) -> Iterator[tuple[Any, PredictionResult]]:
        items = sorted(element[1], key=lambda kv: _key_order(kv[0]))
        for start in range(0, len(items), self._batch_size):
            chunk = items[start:start + self._batch_size]
            results = self._handler.run_inference([x for _, x in chunk], self._model)
            for (key, _), result in zip(chunk, results):
                yield key, result


class BatchInference(beam.PTransform):
    """``(key, example)`` -> ``(key, PredictionResult)`` like Beam's RunInference over a
    KeyedModelHandler, but in batches that depend only on the keys (:func:`batch_index`
    for ``ceil(size_hint / batch_size)`` batches; a bucket over ``batch_size`` runs in
    key-ordered chunks), so results are the same on every runner."""

    def __init__(self, handler: ModelHandler, batch_size: int, size_hint: int):
        super().__init__()
        self._handler = handler
        self._batch_size = int(batch_size)
        self._num_batches = max(1, math.ceil(max(int(size_hint), 1) / self._batch_size))

    def expand(self, pcoll):
        return (pcoll
                | "BatchKey" >> beam.Map(
                    lambda kv, b, n: (batch_index(kv[0], b, n), kv),
                    self._batch_size, self._num_batches)
                | "GroupBatches" >> beam.GroupByKey()
                | "Infer" >> beam.ParDo(_BatchInferenceFn(self._handler, self._batch_size)))


# --------------------------------------------------------------------------------------
# Any source.
# --------------------------------------------------------------------------------------
Source = Union[TFRecordSource, SampleSource, ModelDirSampleSource, ImageFolderSource]


class ReadImages(beam.PTransform):
    """A source -> PCollection of (key, uint8 image [H, W, C]) (see the module doc)."""

    def __init__(self, source: Source):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        if not isinstance(self._source, ImageSource):
            raise TypeError(f"unknown source {self._source!r}; expected TFRecordSource, "
                            "SampleSource, ModelDirSampleSource or ImageFolderSource")
        return pbegin | self._source.transform()
