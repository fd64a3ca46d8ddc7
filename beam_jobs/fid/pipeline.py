"""The FID feature pipeline: a source's images -> extractor features (in deterministic
batches: :class:`~beam_jobs.fid.batch_inference.BatchInference`) ->
FID sufficient statistics, Inception Score statistics, deterministic subsets of features
for KID and for precision/recall and the images' distinct shapes, as one Beam pipeline
(:func:`run_features`).

FID statistics are float64 sufficient statistics merged by a CombineFn (O(d^2) memory
whatever N is), IS per-split softmax statistics, KID and precision/recall the features of
the (at most ``kid_samples`` / ``pr_samples``) records whose keys hash smallest
(:func:`~beam_jobs.fid.fid_math.subset_key`), in that order: the same subset and order on
every runner (a reservoir sample differs from run to run and runner to runner, and so
would KID). The results reach the driver as files (:mod:`beam_jobs.fid.results`).
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
import uuid
import zlib
from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import GoogleCloudOptions

from artifacts import fs_errors
from beam_jobs.fid import fid_math, identity
from beam_jobs.fid import results as fid_results
from beam_jobs.fid.batch_inference import BatchInference
from beam_jobs.fid.extractor_contract import ExtractorInfo
from beam_jobs.fid.fid_math import FeatureStatistics
from beam_jobs.fid.inference_handlers import features_model_handler
from beam_jobs.fid.sources import DEFAULT_BATCH_SIZE, ImageSource, ReadImages
from beam_jobs.runtime import beam_fs
from beam_jobs.runtime.beam_options import pipeline_options, workers_share_driver_files

log = logging.getLogger(__name__)

DEFAULT_KID_SAMPLES = 10000
DEFAULT_PR_SAMPLES = 10000
#: How the precision/recall subset is chosen when a side has more feature vectors.
PR_SUBSET_RULE = ("the records whose keys (sample index, record key or file path) have the "
                  "smallest 64-bit BLAKE2b hashes")
NUM_IS_SPLITS = 10


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

    def process(self, element: Any) -> Iterator[Any]:
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
    # float32 [n <= pr_samples, d], the subset of PR_SUBSET_RULE; None if pr_samples == 0
    pr_features: Optional[np.ndarray] = None


def run_features(source: ImageSource, extractor: ExtractorInfo, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, kid_samples: int = DEFAULT_KID_SAMPLES,
                 num_splits: int = NUM_IS_SPLITS, work_dir: Optional[str] = None,
                 pipeline_args: Optional[Sequence[str]] = None,
                 pr_samples: int = 0) -> FeatureResult:
    """Runs the Beam pipeline source -> features -> (FID statistics, IS, KID reservoir,
    precision/recall features).

    ``kid_samples`` bounds the features kept for KID (0: none), ``pr_samples`` those kept
    for precision/recall (0: none); each side keeps all features if there are no more,
    else those of :data:`PR_SUBSET_RULE`. The combined results reach the driver as files
    under ``work_dir``, else ``--temp_location`` of ``pipeline_args`` (any Beam
    filesystem path every worker can write, e.g. ``gs://bucket/tmp``), else (local
    runners and the Dask runner's own local cluster only) a local temporary directory; a
    distributed runner without either is refused. The run's files are deleted afterwards,
    also after a failure or Ctrl-C; a full or read-only disk where they go raises
    :class:`~artifacts.fs_errors.DiskError` naming the folder.
    """
    start = time.time()
    size = source.size_hint()
    options = pipeline_options(pipeline_args, size)
    work = work_dir or options.view_as(GoogleCloudOptions).temp_location
    local_tmp = None
    if not work:
        if not workers_share_driver_files(options):
            raise ValueError("beam_jobs.fid on a distributed runner needs --temp_location "
                             "(a directory all workers can write, e.g. gs://bucket/tmp) for "
                             "its combined results")
        with fs_errors.disk_errors(f"creating a temporary folder in {tempfile.gettempdir()!r} "
                                   "for the FID pipeline's results"):
            work = local_tmp = tempfile.mkdtemp(prefix="fid-")
    run_dir = beam_fs.join(beam_fs.absolute(work), f"fid-run-{uuid.uuid4().hex[:12]}")
    log.info("FID features of %s with %s (%s); %d image(s) expected; results in %s",
             source.describe(), extractor.name, extractor.saved_model_dir, size, run_dir)
    features = BatchInference(features_model_handler(extractor.saved_model_dir, batch_size),
                              batch_size, size)
    try:
        with fs_errors.disk_errors(f"the FID pipeline writing its results to {run_dir!r}",
                                   after="its temporary results were deleted"):
            return _run(source, features, extractor, options, run_dir, kid_samples,
                        num_splits, start, pr_samples)
    finally:
        beam_fs.delete_tree(run_dir)
        if local_tmp:
            beam_fs.delete_tree(local_tmp)


def _build(p: beam.Pipeline, read: beam.PTransform, features: beam.PTransform,
           paths: dict[str, str],
           kid_samples: int, num_splits: int, pr_samples: int) -> None:
    """Adds the feature pipeline to ``p``: its five results go to the files of ``paths``."""
    feats = (p | "Read" >> read
             | "Features" >> features
             | "Unpack" >> beam.MapTuple(
                 lambda key, r: (key, r.inference["pool"], r.inference["logits"],
                                 np.shape(r.example)))
             | "Progress" >> beam.ParDo(_Progress()))
    (feats | "Shape" >> beam.MapTuple(lambda key, pool, logits, shape: shape)
     | "DistinctShapes" >> beam.CombineGlobally(DistinctShapesCombineFn())
     | "WriteShapes" >> beam.Map(fid_results.write_shapes, paths["shapes"]))
    (feats | "Pool" >> beam.MapTuple(lambda key, pool, logits, shape: pool)
     | "MeanCov" >> beam.CombineGlobally(fid_math.MeanCovCombineFn())
     | "WriteStats" >> beam.Map(fid_results.write_sufficient, paths["stats"]))
    (feats | "SplitLogits" >> beam.MapTuple(
        lambda key, pool, logits, shape, s=num_splits: (_split_index(key, s), logits))
     | "IS" >> beam.CombineGlobally(fid_math.InceptionScoreCombineFn(num_splits))
     | "WriteIS" >> beam.Map(fid_results.write_inception_score, paths["is"]))
    if kid_samples > 0:
        (feats | "RankForKID" >> beam.MapTuple(
            lambda key, pool, logits, shape: (fid_math.subset_key(key), pool))
         | "SubsetForKID" >> beam.CombineGlobally(fid_math.SmallestKeysCombineFn(kid_samples))
         | "WriteKID" >> beam.Map(fid_results.write_features, paths["kid"]))
    if pr_samples > 0:
        (feats | "RankForPR" >> beam.MapTuple(
            lambda key, pool, logits, shape: (fid_math.subset_key(key), pool))
         | "SubsetForPR" >> beam.CombineGlobally(fid_math.SmallestKeysCombineFn(pr_samples))
         | "WritePR" >> beam.Map(fid_results.write_features, paths["pr"]))


def _run(source: ImageSource, features: beam.PTransform, extractor: ExtractorInfo, options, run_dir: str,
         kid_samples: int, num_splits: int, start: float, pr_samples: int = 0) -> FeatureResult:
    paths = {k: beam_fs.join(run_dir, f"{k}.npz")
             for k in ("stats", "is", "kid", "pr", "shapes")}
    p = beam.Pipeline(options=options)  # no `with`: its exit would run the pipeline again
    _build(p, ReadImages(source), features, paths, kid_samples, num_splits, pr_samples)
    result = p.run()
    result.wait_until_finish()
    undecodable = 0
    for c in result.metrics().query(
            beam.metrics.MetricsFilter().with_name("undecodable_records"))["counters"]:
        undecodable += c.committed or 0
    if undecodable:
        log.warning("%d undecodable record(s)/image(s) in %s were skipped", undecodable,
                    source.describe())

    suff = fid_results.read_sufficient(paths["stats"])
    count = suff.count
    if count == 0:
        raise ValueError(f"no images were read from {source.describe()} "
                         f"({undecodable} undecodable)")
    shapes = fid_results.read_shapes(paths["shapes"])
    stats = FeatureStatistics.from_sufficient(
        suff, extractor=extractor.name, resize_protocol=extractor.resize_protocol,
        extractor_fingerprint=extractor.fingerprint,
        image_shape=identity.image_shape_label(shapes))
    is_stats = fid_results.read_inception_score(paths["is"], num_splits)
    is_mean, is_std = is_stats.score()
    kid = fid_results.read_features(paths["kid"]) if kid_samples > 0 else None
    pr = fid_results.read_features(paths["pr"]) if pr_samples > 0 else None
    seconds = time.time() - start
    log.info("%d feature vectors of dimension %d in %.1f s (IS %.3f +- %.3f)", count,
             stats.dim, seconds, is_mean, is_std)
    return FeatureResult(stats, is_mean, is_std, is_stats.confident_rate(),
                         is_stats.label_coverage(), kid, undecodable, seconds, pr)
