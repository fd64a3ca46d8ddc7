"""The math of FID, KID, IS and precision/recall: sufficient statistics, Frechet
distance, MMD, IS, k-NN manifolds.

Everything here is numpy/scipy; the Beam ``CombineFn`` wrappers only subclass
``apache_beam.CombineFn`` (no TensorFlow), so they run on any Beam runner.

* FID (Heusel et al. 2017): ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` of the
  Gaussians fitted to extractor features. The fit is from float64 sufficient statistics
  (count, sum [d], sum of outer products [d, d]); memory is O(d^2), independent of N.
  The trace term comes from symmetric eigendecompositions, not ``sqrtm``.
* KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``,
  averaged over random subsets; needs feature samples (a bounded reservoir).
* Precision and recall (Kynkaanniemi et al. 2019): the share of samples inside the
  k-NN manifold of the real features and vice versa; needs feature samples (a bounded,
  deterministic subset per side), distances in row blocks.
* IS (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split; per split only
  ``count``, ``sum_x p(y|x)`` [K] and ``sum_x sum_y p log p`` are needed.

Modules: :mod:`~beam_jobs.fid.fid_math.sufficient` (running sums),
:mod:`~beam_jobs.fid.fid_math.feature_stats` (the Gaussian fit and its ``.npz``),
:mod:`~beam_jobs.fid.fid_math.comparability` (errors and identity checks),
:mod:`~beam_jobs.fid.fid_math.frechet` (FID), :mod:`~beam_jobs.fid.fid_math.kid`,
:mod:`~beam_jobs.fid.fid_math.inception` (IS),
:mod:`~beam_jobs.fid.fid_math.precision_recall`, :mod:`~beam_jobs.fid.fid_math.combiners` (Beam),
:mod:`~beam_jobs.fid.fid_math.blas_threads`. Every name is importable from
``beam_jobs.fid.fid_math``.
"""
from beam_jobs.fid.fid_math.blas_threads import blas_threads_for_load, limited_blas_threads
from beam_jobs.fid.fid_math.combiners import (
    InceptionScoreCombineFn,
    MeanCovCombineFn,
    SmallestKeysCombineFn,
    stack_features,
    subset_key,
)
from beam_jobs.fid.fid_math.comparability import (
    StatisticsError,
    StatisticsMismatchError,
    UnverifiedStatisticsError,
    check_comparable,
    check_identity,
)
from beam_jobs.fid.fid_math.feature_stats import STATS_FORMAT_VERSION, FeatureStatistics
from beam_jobs.fid.fid_math.frechet import (
    IMAG_TOL,
    PSD_TOL,
    fid_from_statistics,
    frechet_distance,
    frechet_distance_sqrtm,
    psd_sqrt,
    trace_sqrt_product,
)
from beam_jobs.fid.fid_math.inception import (
    CONFIDENT_THRESHOLD,
    InceptionScoreStatistics,
    inception_score,
)
from beam_jobs.fid.fid_math.kid import kernel_inception_distance, polynomial_mmd2_unbiased
from beam_jobs.fid.fid_math.precision_recall import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_K,
    PrecisionRecall,
    knn_radii,
    precision_recall,
)
from beam_jobs.fid.fid_math.sufficient import FLUSH_ROWS, SufficientStatistics

__all__ = [
    "blas_threads_for_load", "limited_blas_threads",
    "InceptionScoreCombineFn", "MeanCovCombineFn", "SmallestKeysCombineFn", "stack_features",
    "subset_key",
    "StatisticsError", "StatisticsMismatchError", "UnverifiedStatisticsError",
    "check_comparable", "check_identity",
    "STATS_FORMAT_VERSION", "FeatureStatistics",
    "IMAG_TOL", "PSD_TOL", "fid_from_statistics", "frechet_distance",
    "frechet_distance_sqrtm", "psd_sqrt", "trace_sqrt_product",
    "CONFIDENT_THRESHOLD", "InceptionScoreStatistics", "inception_score",
    "kernel_inception_distance", "polynomial_mmd2_unbiased",
    "DEFAULT_CHUNK_SIZE", "DEFAULT_K", "PrecisionRecall", "knn_radii", "precision_recall",
    "FLUSH_ROWS", "SufficientStatistics",
]
