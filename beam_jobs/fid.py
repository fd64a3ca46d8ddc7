"""FID / KID / IS as an Apache Beam job: images -> extractor features -> statistics.

One image source per run:

* ``--data_dir=DIR --split=S``: the TFRecords written by ``beam_jobs.preprocess``;
* ``--saved_model=PATH --num_samples=N [--temperature=1.0] [--seed=0]``: a generator
  SavedModel with signature ``sample(seed int64 [B], temperature float32 [B]) ->
  {"images": uint8 [B, H, W, C]}``; sample i uses seed ``seed + i``;
* ``--model_dir=DIR --num_samples=N [...]``: a trained model directory (pipeline.train),
  sampled without an export (the same rows as its export's ``sample`` signature);
* ``--image_folder=DIR``: image files (png, jpg, jpeg, bmp, webp, gif) under DIR.

Features come from Beam RunInference over an extractor SavedModel (see
:mod:`beam_jobs.extractors`); FID statistics are float64 sufficient statistics merged
by a CombineFn (O(d^2) memory whatever N is), IS per-split softmax statistics, KID a
bounded reservoir of features per side.

Examples::

    # reference statistics of a data set, once
    python -m beam_jobs.fid --data_dir=data/mnist --split=train \\
        --extractor=mnist_classifier --extractor_path=work/mnist_classifier \\
        --output_stats=ref.npz --save_kid_features
    # FID/KID/IS of 10,000 model samples
    python -m beam_jobs.fid --saved_model=export/model/1 --num_samples=10000 \\
        --reference_stats=ref.npz --extractor=mnist_classifier \\
        --extractor_path=work/mnist_classifier
    # FID of two statistics files
    python -m beam_jobs.fid --compare_stats=a.npz,b.npz

Statistics files record the extractor's identity (name, content fingerprint, resize
protocol), the image shape and the sample count; statistics that differ in any of them,
or that record no fingerprint (files of older versions, plain TTUR mu/sigma files), are
refused with a one-line error. Regenerate old files; ``--allow_unverified_stats`` uses a
file without a fingerprint anyway (what both sides record is still checked).

Unknown flags are passed to Beam (``--runner``, ``--direct_running_mode``, ...); the
default is ``--runner=FnApiRunner`` (DirectRunner's Prism path needs the network).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import sys
import tempfile
import time
import uuid
import zlib
from typing import Any, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from artifacts import records
from beam_jobs import extractors, fid_math, identity
from beam_jobs.image_sources import DEFAULT_MAX_MEMBER_BYTES
from beam_jobs.fid_math import FeatureStatistics

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
DEFAULT_BATCH_SIZE = 64
DEFAULT_KID_SAMPLES = 10000
NUM_IS_SPLITS = 10


# --------------------------------------------------------------------------------------
# Sources.
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TFRecordSource:
    """A split of a preprocessed data set (``<data_dir>/<split>-*.tfrecord``)."""

    data_dir: str
    split: str

    def files(self) -> list[str]:
        meta = records.read_dataset_json(self.data_dir)
        splits = meta.get("splits", {})
        if self.split not in splits:
            raise ValueError(f"split {self.split!r} not in {self.data_dir!r}/dataset.json; "
                             f"available splits: {sorted(splits)}")
        shards = splits[self.split].get("shards", [])
        files = [os.path.join(self.data_dir, s["file"] if isinstance(s, dict) else s)
                 for s in shards]
        if not files:
            raise ValueError(f"split {self.split!r} of {self.data_dir!r} lists no shards")
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"shard(s) listed in {self.data_dir!r}/dataset.json are "
                                    f"missing: {missing[:5]}")
        return files

    def size_hint(self) -> int:
        meta = records.read_dataset_json(self.data_dir)
        return int(meta.get("splits", {}).get(self.split, {}).get("count", 0))

    def describe(self) -> str:
        return f"TFRecords {self.data_dir} split {self.split}"


@dataclasses.dataclass(frozen=True)
class SampleSource:
    """``num_samples`` images from a generator SavedModel's ``sample`` signature."""

    saved_model_dir: str
    num_samples: int
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def validate(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be positive, got {self.num_samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if not os.path.isdir(self.saved_model_dir):
            raise FileNotFoundError(f"generator SavedModel {self.saved_model_dir!r} does not exist")
        extractors.check_signature(self.saved_model_dir, extractors.SAMPLE_SIGNATURE,
                                   {"seed": "int64", "temperature": "float32"})

    def size_hint(self) -> int:
        return self.num_samples

    def describe(self) -> str:
        return (f"{self.num_samples} samples of {self.saved_model_dir} (seeds {self.seed}.."
                f"{self.seed + self.num_samples - 1}, temperature {self.temperature})")


@dataclasses.dataclass(frozen=True)
class ModelDirSampleSource:
    """``num_samples`` images drawn straight from a trained model directory (written by
    ``pipeline.train``): the same rows as the export's ``sample`` signature, no export."""

    model_dir: str
    num_samples: int
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def validate(self) -> None:
        from artifacts import model_io

        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be positive, got {self.num_samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if not os.path.isfile(os.path.join(self.model_dir, model_io.CONFIG_FILE)):
            raise FileNotFoundError(f"model directory {self.model_dir!r} has no "
                                    f"{model_io.CONFIG_FILE}; expected one written by "
                                    "pipeline.train")

    def size_hint(self) -> int:
        return self.num_samples

    def describe(self) -> str:
        return (f"{self.num_samples} samples of model directory {self.model_dir} (seeds "
                f"{self.seed}..{self.seed + self.num_samples - 1}, temperature {self.temperature})")


@dataclasses.dataclass(frozen=True)
class ImageFolderSource:
    """All image files under a folder (recursively), keyed by relative path. Files larger
    than ``max_member_bytes`` and images PIL refuses as decompression bombs are counted as
    undecodable records and skipped."""

    directory: str
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES

    def files(self) -> list[str]:
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"image folder {self.directory!r} does not exist")
        out = []
        for root, _, names in os.walk(self.directory):
            out += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        if not out:
            raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under "
                             f"{self.directory!r}")
        return sorted(out)

    def size_hint(self) -> int:
        return len(self.files())

    def describe(self) -> str:
        return f"image folder {self.directory}"


Source = Union[TFRecordSource, SampleSource, ModelDirSampleSource, ImageFolderSource]


class _ParseRecord(beam.DoFn):
    """Serialized tf.train.Example -> (key str, uint8 [H, W, C]); bad records counted."""

    def setup(self):
        import tensorflow as tf

        self._tf = tf
        self._spec = records.feature_spec()
        self._bad = beam.metrics.Metrics.counter("fid", "undecodable_records")

    def process(self, record: bytes):
        tf = self._tf
        try:
            ex = tf.io.parse_single_example(record, self._spec)
            image = tf.io.decode_png(ex[records.IMAGE_KEY]).numpy()
            key = ex[records.KEY_KEY].numpy().decode("utf-8", "replace")
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            self._bad.inc()
            log.warning("skipping an undecodable record: %s", e)
            return
        yield key, image


class _ReadImageFile(beam.DoFn):
    """Path -> (relative path, uint8 [H, W, 1 or 3]); unreadable files, files over
    ``max_bytes`` bytes and decompression bombs are counted and skipped."""

    def __init__(self, root: str, max_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        self._root = root
        self._max_bytes = int(max_bytes)

    def setup(self):
        self._bad = beam.metrics.Metrics.counter("fid", "undecodable_records")

    def process(self, path: str):
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
        yield os.path.relpath(path, self._root), image[..., None] if image.ndim == 2 else image


class ReadImages(beam.PTransform):
    """A source -> PCollection of (key, uint8 image [H, W, C]).

    Keys: the record key (TFRecords), the relative path (folders), the sample index
    ``i`` in [0, N) (samples, drawn with seed ``seed + i`` in batches of ``batch_size``).
    """

    def __init__(self, source: Source):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        s = self._source
        if isinstance(s, TFRecordSource):
            return (pbegin | "Shards" >> beam.Create(s.files())
                    | "ReadTFRecords" >> beam.io.ReadAllFromTFRecord()
                    | "Decode" >> beam.ParDo(_ParseRecord()))
        if isinstance(s, ImageFolderSource):
            return (pbegin | "Files" >> beam.Create(s.files())
                    | "Reshuffle" >> beam.Reshuffle()
                    | "ReadFiles" >> beam.ParDo(_ReadImageFile(s.directory, s.max_member_bytes)))
        if isinstance(s, (SampleSource, ModelDirSampleSource)):
            s.validate()
            if isinstance(s, SampleSource):
                handler = KeyedModelHandler(extractors.sampler_model_handler(
                    s.saved_model_dir, batch_size=s.batch_size, temperature=s.temperature))
            else:
                handler = KeyedModelHandler(extractors.ModelDirSamplerHandler(
                    s.model_dir, batch_size=s.batch_size, temperature=s.temperature))
            return (pbegin | "Indices" >> beam.Create(range(s.num_samples))
                    | "Seeds" >> beam.Map(lambda i, base: (i, base + i), s.seed)
                    | "Sample" >> RunInference(handler)
                    | "Images" >> beam.MapTuple(lambda i, result: (i, result.inference)))
        raise TypeError(f"unknown source {s!r}; expected TFRecordSource, SampleSource, "
                        "ModelDirSampleSource or ImageFolderSource")


# --------------------------------------------------------------------------------------
# The feature pipeline.
# --------------------------------------------------------------------------------------
def _split_index(key: Any, num_splits: int) -> int:
    """IS split of a record: ``i % S`` for sample indices, crc32(key) % S otherwise."""
    if isinstance(key, (int, np.integer)):
        return int(key) % num_splits
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    return zlib.crc32(data) % num_splits


class _Progress(beam.DoFn):
    """Logs every ``every`` elements per worker and counts them in a Beam counter."""

    def __init__(self, every: int = 1000):
        self._every = every

    def setup(self):
        self._counter = beam.metrics.Metrics.counter("fid", "feature_vectors")
        self._seen, self._start = 0, time.time()

    def process(self, element):
        self._seen += 1
        self._counter.inc()
        if self._seen % self._every == 0:
            log.info("features: %d images on this worker (%.1f images/s)", self._seen,
                     self._seen / max(time.time() - self._start, 1e-9))
        yield element


class DistinctShapesCombineFn(beam.CombineFn):
    """Combines image shapes (H, W, C) into their distinct set, at most ``limit + 1`` kept
    (enough to tell "one shape" from "mixed" and to list a few)."""

    def __init__(self, limit: int = 8):
        self._limit = limit

    def create_accumulator(self) -> set:
        return set()

    def add_input(self, acc: set, shape) -> set:
        if len(acc) <= self._limit:
            acc.add(tuple(int(v) for v in shape))
        return acc

    def merge_accumulators(self, accs) -> set:
        out: set = set()
        for a in accs:
            out |= a
        return set(sorted(out)[:self._limit + 1])

    def extract_output(self, acc: set) -> list:
        return sorted(acc)


def _write_npz(value: Any, path: str, kind: str) -> None:
    """Writes a pipeline result to ``path`` (any Beam filesystem) as .npz."""
    if kind == "stats":
        value.flush()
        arrays = {"count": np.int64(value.count), "dim": np.int64(value.dim or 0)}
        if value.count:
            arrays.update(sum=value.sum, sum_outer=value.sum_outer)
    elif kind == "shapes":
        arrays = {"shapes": np.asarray(value, np.int64).reshape(-1, 3)}
    elif kind == "is":
        arrays = {"count": value.count, "sum_plogp": value.sum_plogp,
                  "confident": value.confident}
        if value.sum_p is not None:
            arrays.update(sum_p=value.sum_p, label_hist=value.label_hist)
    else:
        arrays = {"features": (fid_math.stack_features(value) if len(value)
                               else np.zeros((0, 0), np.float32))}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with FileSystems.create(path) as f:
        f.write(buf.getvalue())


def _read_npz(path: str) -> dict[str, np.ndarray]:
    with FileSystems.open(path) as f:
        data = np.load(io.BytesIO(f.read()), allow_pickle=False)
        return {k: data[k] for k in data.files}


@dataclasses.dataclass
class FeatureResult:
    """What one feature pipeline produced."""

    statistics: FeatureStatistics
    is_mean: float
    is_std: float
    confident_rate: float  # share of images with top class probability >= 0.9
    label_coverage: float  # entropy of the predicted-label histogram / ln K
    kid_features: Optional[np.ndarray]  # float32 [n <= kid_samples, d]
    undecodable: int
    seconds: float


def pipeline_options(pipeline_args: Optional[Sequence[str]], size_hint: int = 0) -> PipelineOptions:
    """Beam options with local defaults: FnApiRunner, in_memory mode.

    ``multi_threading`` is not the default: with the KID reservoir
    (``Sample.FixedSizeGlobally``) it grew past 20 GB on 5,000 MNIST images here, while
    in_memory stayed under 1 GB. ``size_hint`` (expected images) is only logged.
    """
    args = list(pipeline_args or [])
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=FnApiRunner")
    if not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=in_memory")
    log.info("Beam options for ~%d images: %s", size_hint, " ".join(args))
    return PipelineOptions(args)


def run_features(source: Source, extractor: extractors.ExtractorInfo, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, kid_samples: int = DEFAULT_KID_SAMPLES,
                 num_splits: int = NUM_IS_SPLITS, work_dir: Optional[str] = None,
                 pipeline_args: Optional[Sequence[str]] = None) -> FeatureResult:
    """Runs the Beam pipeline source -> features -> (FID statistics, IS, KID reservoir).

    ``kid_samples`` bounds the feature reservoir kept for KID (0: none). Results are
    written under ``work_dir`` (a temp dir by default; any Beam filesystem path).
    """
    start = time.time()
    work = work_dir or tempfile.mkdtemp(prefix="fid-")
    run_dir = FileSystems.join(work, f"run-{uuid.uuid4().hex[:12]}")
    paths = {k: FileSystems.join(run_dir, f"{k}.npz") for k in ("stats", "is", "kid", "shapes")}
    size = source.size_hint()
    log.info("FID features of %s with %s (%s); %d image(s) expected", source.describe(),
             extractor.name, extractor.saved_model_dir, size)
    handler = KeyedModelHandler(extractors.features_model_handler(
        extractor.saved_model_dir, batch_size=batch_size))
    options = pipeline_options(pipeline_args, size)
    with beam.Pipeline(options=options) as p:
        feats = (p | "Read" >> ReadImages(source)
                 | "Features" >> RunInference(handler)
                 | "Unpack" >> beam.MapTuple(
                     lambda key, r: (key, r.inference["pool"], r.inference["logits"],
                                     np.shape(r.example)))
                 | "Progress" >> beam.ParDo(_Progress()))
        (feats | "Shape" >> beam.MapTuple(lambda key, pool, logits, shape: shape)
         | "DistinctShapes" >> beam.CombineGlobally(DistinctShapesCombineFn())
         | "WriteShapes" >> beam.Map(_write_npz, paths["shapes"], "shapes"))
        (feats | "Pool" >> beam.MapTuple(lambda key, pool, logits, shape: pool)
         | "MeanCov" >> beam.CombineGlobally(fid_math.MeanCovCombineFn())
         | "WriteStats" >> beam.Map(_write_npz, paths["stats"], "stats"))
        (feats | "SplitLogits" >> beam.MapTuple(
            lambda key, pool, logits, shape, s=num_splits: (_split_index(key, s), logits))
         | "IS" >> beam.CombineGlobally(fid_math.InceptionScoreCombineFn(num_splits))
         | "WriteIS" >> beam.Map(_write_npz, paths["is"], "is"))
        if kid_samples > 0:
            (feats | "PoolForKID" >> beam.MapTuple(lambda key, pool, logits, shape: pool)
             | "Reservoir" >> beam.combiners.Sample.FixedSizeGlobally(kid_samples)
             | "WriteKID" >> beam.Map(_write_npz, paths["kid"], "kid"))
        result = p.run()
        result.wait_until_finish()
    undecodable = 0
    for c in result.metrics().query(
            beam.metrics.MetricsFilter().with_name("undecodable_records"))["counters"]:
        undecodable += c.committed or 0
    if undecodable:
        log.warning("%d undecodable record(s)/image(s) in %s were skipped", undecodable,
                    source.describe())

    raw = _read_npz(paths["stats"])
    count = int(raw["count"])
    if count == 0:
        raise ValueError(f"no images were read from {source.describe()} "
                         f"({undecodable} undecodable)")
    suff = fid_math.SufficientStatistics(int(raw["dim"]))
    suff.count, suff.sum, suff.sum_outer = count, raw["sum"], raw["sum_outer"]
    shapes = [tuple(s) for s in _read_npz(paths["shapes"])["shapes"]]
    stats = FeatureStatistics.from_sufficient(
        suff, extractor=extractor.name, resize_protocol=extractor.resize_protocol,
        extractor_fingerprint=extractor.fingerprint,
        image_shape=identity.image_shape_label(shapes))
    raw_is = _read_npz(paths["is"])
    is_stats = fid_math.InceptionScoreStatistics(num_splits)
    is_stats.count, is_stats.sum_plogp, is_stats.sum_p = (
        raw_is["count"], raw_is["sum_plogp"], raw_is["sum_p"])
    is_stats.confident, is_stats.label_hist = raw_is["confident"], raw_is["label_hist"]
    is_mean, is_std = is_stats.score()
    kid = _read_npz(paths["kid"])["features"] if kid_samples > 0 else None
    seconds = time.time() - start
    log.info("%d feature vectors of dimension %d in %.1f s (IS %.3f +- %.3f)", count,
             stats.dim, seconds, is_mean, is_std)
    try:
        FileSystems.delete([run_dir])
    except Exception:  # noqa: BLE001 - leftovers in a temp dir are harmless
        pass
    return FeatureResult(stats, is_mean, is_std, is_stats.confident_rate(),
                         is_stats.label_coverage(), kid, undecodable, seconds)


# --------------------------------------------------------------------------------------
# Programmatic API.
# --------------------------------------------------------------------------------------
def compute_statistics(source: Source, extractor: str, extractor_path: str, *,
                       batch_size: int = DEFAULT_BATCH_SIZE, kid_samples: int = 0,
                       cache_dir: Optional[str] = None,
                       pipeline_args: Optional[Sequence[str]] = None) -> FeatureStatistics:
    """FID statistics (mu [d], sigma [d, d], count) of a source's extractor features.

    With ``kid_samples > 0`` the result also carries a reservoir sample of features
    (``kid_features``) so it can serve as a KID reference.
    """
    info = extractors.resolve_extractor(extractor, extractor_path, cache_dir)
    res = run_features(source, info, batch_size=batch_size, kid_samples=kid_samples,
                       pipeline_args=pipeline_args)
    res.statistics.kid_features = res.kid_features
    return res.statistics


def compare_stats(path_a: str, path_b: str, *, allow_unverified: bool = False) -> float:
    """FID of two ``.npz`` statistics files, refused (:class:`fid_math.StatisticsError`)
    if their extractor identities differ or one has none (unless ``allow_unverified``)."""
    return fid_math.fid_from_statistics(FeatureStatistics.load(path_a),
                                        FeatureStatistics.load(path_b),
                                        allow_unverified=allow_unverified)


def check_reference_stats(path: str, extractor: Union[str, extractors.ExtractorInfo],
                          extractor_path: str = "", *, cache_dir: Optional[str] = None,
                          allow_unverified: bool = False) -> FeatureStatistics:
    """Loads reference statistics and checks, before any feature is computed, that they
    were made with this extractor (name, fingerprint, resize protocol, feature dimension);
    raises :class:`fid_math.StatisticsError` otherwise. The image shape is checked when
    the FID is computed (:func:`fid_math.fid_from_statistics`)."""
    info = (extractor if isinstance(extractor, extractors.ExtractorInfo)
            else extractors.resolve_extractor(extractor, extractor_path, cache_dir))
    reference = FeatureStatistics.load(path)
    fid_math.check_identity(
        reference, against=f"extractor {info.saved_model_dir!r}", extractor=info.name,
        fingerprint=info.fingerprint, resize_protocol=info.resize_protocol,
        dim=info.feature_dim, allow_unverified=allow_unverified)
    return reference


def evaluate(source: Source, extractor: str, extractor_path: str, *,
             reference_stats_path: Optional[str] = None,
             reference_data_dir: Optional[str] = None, reference_split: str = "train",
             batch_size: int = DEFAULT_BATCH_SIZE, kid_samples: int = DEFAULT_KID_SAMPLES,
             kid_subset_size: int = 1000, kid_num_subsets: int = 100,
             output_stats: Optional[str] = None, save_kid_features: bool = False,
             cache_dir: Optional[str] = None, allow_unverified: bool = False,
             pipeline_args: Optional[Sequence[str]] = None) -> dict:
    """FID (vs reference statistics), KID (vs reference features) and IS of a source.

    KID reference features come from ``reference_data_dir`` (run through the same
    extractor) or else from the reference ``.npz``'s ``kid_features``; without either
    KID is None. Reference statistics of another extractor (fingerprint), resize
    protocol or image shape, or without a fingerprint (unless ``allow_unverified``), are
    refused with :class:`fid_math.StatisticsError`: the extractor's identity is checked
    before the pipeline runs, the image shape after it (``output_stats`` is written
    first). Returns the JSON-able dict of the CLI.
    """
    info = extractors.resolve_extractor(extractor, extractor_path, cache_dir)
    reference = (check_reference_stats(reference_stats_path, info,
                                       allow_unverified=allow_unverified)
                 if reference_stats_path else None)
    res = run_features(source, info, batch_size=batch_size, kid_samples=kid_samples,
                       pipeline_args=pipeline_args)
    stats = res.statistics
    if output_stats:
        if save_kid_features:
            stats.kid_features = res.kid_features
        stats.save(output_stats)
        log.info("wrote statistics of %d images to %s", stats.count, output_stats)
    out: dict[str, Any] = {"fid": None, "kid_mean": None, "kid_std": None,
                           "is_mean": res.is_mean, "is_std": res.is_std,
                           "confident_rate": res.confident_rate,
                           "label_coverage": res.label_coverage,
                           "num_samples": stats.count, "feature_dim": stats.dim,
                           "extractor": info.name, "resize_protocol": info.resize_protocol,
                           "extractor_fingerprint": info.fingerprint,
                           "image_shape": stats.image_shape}
    if reference is not None:
        log.info("computing FID against %s", reference_stats_path)
        out["fid"] = fid_math.fid_from_statistics(stats, reference,
                                                  allow_unverified=allow_unverified)
        out["reference_num_samples"] = reference.count
    ref_features = None
    if reference_data_dir:
        ref = run_features(TFRecordSource(reference_data_dir, reference_split), info,
                           batch_size=batch_size, kid_samples=kid_samples,
                           pipeline_args=pipeline_args)
        ref_features = ref.kid_features
    elif reference is not None and reference.kid_features is not None:
        ref_features = reference.kid_features
    if ref_features is not None and res.kid_features is not None:
        log.info("computing KID on %d vs %d feature vectors", len(res.kid_features),
                 len(ref_features))
        out["kid_mean"], out["kid_std"] = fid_math.kernel_inception_distance(
            res.kid_features, ref_features, subset_size=kid_subset_size,
            num_subsets=kid_num_subsets)
    out["undecodable"] = res.undecodable
    out["seconds"] = round(res.seconds, 2)
    return out


def evaluate_samples(saved_model_dir: str, num_samples: int, reference_stats_path: str,
                     extractor: str, extractor_path: str, *, temperature: float = 1.0,
                     seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                     source_kind: str = "saved_model", **kwargs) -> dict:
    """FID/KID/IS of ``num_samples`` samples of a generator (see :func:`evaluate`):
    ``saved_model_dir`` is a SavedModel with a ``sample`` signature, or with
    ``source_kind="model_dir"`` a trained model directory sampled without an export.

    Returns {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "confident_rate"
    (top class probability >= 0.9), "label_coverage" (predicted-label entropy / ln K), "num_samples",
    "feature_dim", "extractor", "resize_protocol", ...}.
    """
    if source_kind not in ("saved_model", "model_dir"):
        raise ValueError(f"source_kind={source_kind!r}: expected 'saved_model' or 'model_dir'")
    kind = SampleSource if source_kind == "saved_model" else ModelDirSampleSource
    source = kind(saved_model_dir, num_samples, temperature, seed, batch_size)
    return evaluate(source, extractor, extractor_path,
                    reference_stats_path=reference_stats_path, batch_size=batch_size, **kwargs)


# --------------------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.fid", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("--data_dir", help="preprocessed TFRecords directory (with --split)")
    src.add_argument("--split", default="train")
    src.add_argument("--saved_model", help="generator SavedModel with a 'sample' signature")
    src.add_argument("--model_dir", help="trained model directory (pipeline.train), sampled "
                                         "without an export")
    src.add_argument("--num_samples", type=int, default=10000)
    src.add_argument("--temperature", type=float, default=1.0)
    src.add_argument("--seed", type=int, default=0)
    src.add_argument("--image_folder", help="folder of image files")
    src.add_argument("--max_member_bytes", type=int, default=DEFAULT_MAX_MEMBER_BYTES,
                     help="--image_folder files larger than this many bytes are skipped as "
                          "undecodable (default 64 MiB)")
    p.add_argument("--extractor", choices=extractors.EXTRACTORS, default="mnist_classifier")
    p.add_argument("--extractor_path", help="extractor SavedModel dir, or Inception .pb/.h5")
    p.add_argument("--extractor_cache", help="where Inception SavedModels are built")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--reference_stats", help=".npz with mu and sigma to compute FID against")
    p.add_argument("--reference_data_dir", help="TFRecords of the reference set, for KID")
    p.add_argument("--reference_split", default="train")
    p.add_argument("--kid_samples", type=int, default=DEFAULT_KID_SAMPLES,
                   help="features kept per side for KID (reservoir size)")
    p.add_argument("--kid_subset_size", type=int, default=1000)
    p.add_argument("--kid_num_subsets", type=int, default=100)
    p.add_argument("--output_stats", help="write this run's statistics (.npz)")
    p.add_argument("--save_kid_features", action="store_true",
                   help="store the KID reservoir in --output_stats (a KID reference)")
    p.add_argument("--compare_stats", help="A.npz,B.npz: print the FID of two statistics files")
    p.add_argument("--allow_unverified_stats", action="store_true",
                   help="accept statistics files without an extractor fingerprint (plain "
                        "TTUR/pytorch-fid mu/sigma files, or files of older versions); "
                        "identities that both sides record are still checked")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI; user errors (missing files, statistics that cannot be compared) print one
    ``error: ...`` line on stderr and return 2."""
    args, pipeline_args = _parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _run(args, pipeline_args)
    except (fid_math.StatisticsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, pipeline_args: Sequence[str]) -> int:
    if args.compare_stats:
        parts = args.compare_stats.split(",")
        if len(parts) != 2 or not all(parts):
            raise SystemExit(f"--compare_stats expects A.npz,B.npz, got {args.compare_stats!r}")
        print(json.dumps({"fid": compare_stats(*parts,
                                               allow_unverified=args.allow_unverified_stats)}))
        return 0
    chosen = [n for n in ("data_dir", "saved_model", "model_dir", "image_folder")
              if getattr(args, n)]
    if len(chosen) != 1:
        raise SystemExit("give exactly one source: --data_dir, --saved_model, --model_dir or "
                         f"--image_folder (got {chosen or 'none'}), or --compare_stats")
    if args.data_dir:
        source: Source = TFRecordSource(args.data_dir, args.split)
    elif args.saved_model:
        source = SampleSource(args.saved_model, args.num_samples, args.temperature, args.seed,
                              args.batch_size)
    elif args.model_dir:
        source = ModelDirSampleSource(args.model_dir, args.num_samples, args.temperature,
                                      args.seed, args.batch_size)
    else:
        source = ImageFolderSource(args.image_folder, args.max_member_bytes)
    if not (args.reference_stats or args.output_stats):
        log.info("no --reference_stats or --output_stats: reporting IS only")
    out = evaluate(source, args.extractor, args.extractor_path,
                   reference_stats_path=args.reference_stats,
                   reference_data_dir=args.reference_data_dir,
                   reference_split=args.reference_split, batch_size=args.batch_size,
                   kid_samples=args.kid_samples, kid_subset_size=args.kid_subset_size,
                   kid_num_subsets=args.kid_num_subsets, output_stats=args.output_stats,
                   save_kid_features=args.save_kid_features, cache_dir=args.extractor_cache,
                   allow_unverified=args.allow_unverified_stats, pipeline_args=pipeline_args)
    print(json.dumps(out))
    return 0


_USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError, ValueError)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` for the command line: a user error (missing input, bad value) is one
    line ``python -m beam_jobs.fid: error: ...`` on stderr and exit code 2, not a
    traceback (``AD_TRACEBACK=1`` shows it)."""
    try:
        return main(argv)
    except _USER_ERRORS as e:
        if os.environ.get("AD_TRACEBACK"):
            raise
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        print(f"python -m beam_jobs.fid: error: {lines[0] if lines else type(e).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
