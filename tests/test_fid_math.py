"""beam_jobs.fid.fid_math: sufficient statistics (Beam combiners, accumulation, pickling) and
the closed-form FID, against direct numpy. Also: test_fid_math_frechet.py (the matrix
square root), test_fid_math_identity.py (identity, .npz), test_fid_math_scores.py (KID, IS)."""
from __future__ import annotations

import pickle
import warnings

import apache_beam as beam
import numpy as np
import pytest
import scipy.linalg
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.fid import fid_math
from beam_jobs.fid.fid_math import FeatureStatistics

LOCAL = PipelineOptions(["--runner=FnApiRunner", "--direct_running_mode=in_memory"])


def _features(n=600, d=16, seed=0, offset=100.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) @ mix + offset).astype(np.float32)


def _numpy_fid(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _dump(value, path):
    with open(path, "wb") as f:
        pickle.dump(value, f)


def _run_combine(elements, combine_fn, path):
    """Runs CombineGlobally in a real Beam pipeline; returns its single output."""
    with beam.Pipeline(options=LOCAL) as p:
        (p | beam.Create(list(elements), reshuffle=True)
         | beam.CombineGlobally(combine_fn)
         | beam.Map(_dump, str(path)))
    with open(path, "rb") as f:
        return pickle.load(f)


def _beam_statistics(rows, path):
    return FeatureStatistics.from_sufficient(
        _run_combine(rows, fid_math.MeanCovCombineFn(), path))


def test_beam_combine_matches_numpy(tmp_path):
    x = _features(n=700, d=24, seed=1).astype(np.float64)
    stats = _beam_statistics(x, tmp_path / "out.pkl")  # one row per element: exercises buffering and merging
    assert stats.count == 700
    np.testing.assert_allclose(stats.mu, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-6, atol=1e-9)
    y = _features(n=500, d=24, seed=2, offset=99.0).astype(np.float64)
    other = FeatureStatistics.from_features(y)
    fid = fid_math.frechet_distance(stats.mu, stats.sigma, other.mu, other.sigma)
    assert fid == pytest.approx(_numpy_fid(x, y), rel=1e-6)


def test_float64_accumulation_survives_large_mean_offset():
    x = _features(n=2000, d=8, seed=3, offset=1e4)
    stats = FeatureStatistics.from_features(x)
    np.testing.assert_allclose(stats.sigma, np.cov(x.astype(np.float64), rowvar=False),
                               rtol=1e-6, atol=1e-6)


def test_merge_of_split_batches_equals_whole():
    x = _features(n=300, d=5, seed=4)
    a = fid_math.SufficientStatistics().add(x[:17]).add(x[17:200])
    b = fid_math.SufficientStatistics().add(x[200:])
    merged = a.merge(b)
    whole = fid_math.SufficientStatistics().add(x)
    assert merged.count == whole.count == 300
    np.testing.assert_allclose(merged.gaussian()[1], whole.gaussian()[1], rtol=1e-9)


def test_fid_of_set_with_itself_is_zero():
    x = _features(n=400, d=12, seed=5)
    s = FeatureStatistics.from_features(x)
    assert abs(fid_math.frechet_distance(s.mu, s.sigma, s.mu, s.sigma)) < 1e-6


def test_fid_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([1.0, 1.0, 0.5, -1.0])
    v1, v2 = np.array([1.0, 4.0, 0.25, 9.0]), np.array([2.0, 1.0, 0.25, 16.0])
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    got = fid_math.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_fid_closed_form_for_rotated_gaussians():
    # Same rotation on both: (S1 S2)^{1/2} = R diag(sqrt(v1 v2)) R^T, trace unchanged.
    rng = np.random.default_rng(6)
    r, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    v1, v2 = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    s1, s2 = r @ np.diag(v1) @ r.T, r @ np.diag(v2) @ r.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert fid_math.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_sum_outer_is_symmetric_and_survives_pickling():
    x = _features(n=FLUSH_PLUS, d=7, seed=14)
    s = fid_math.SufficientStatistics()
    for row in x:  # row by row: several syrk blocks plus a pending remainder
        s.add(row)
    expected = x.astype(np.float64).T @ x.astype(np.float64)
    np.testing.assert_allclose(s.sum_outer, expected, rtol=1e-12)
    np.testing.assert_array_equal(s.sum_outer, s.sum_outer.T)
    back = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(back.sum_outer, s.sum_outer)
    assert back.count == len(x)
    copy = fid_math.SufficientStatistics(7)
    copy.count, copy.sum, copy.sum_outer = s.count, s.sum, s.sum_outer
    np.testing.assert_array_equal(copy.gaussian()[1], s.gaussian()[1])
    with pytest.raises(ValueError, match="NaN or Inf"):
        fid_math.SufficientStatistics().add(np.array([[1.0, np.inf]])).flush()


FLUSH_PLUS = fid_math.FLUSH_ROWS * 2 + 37


def test_fewer_samples_than_dimensions_warns():
    x = _features(n=10, d=32, seed=7)
    with pytest.warns(RuntimeWarning, match=r"only 10 feature vectors for dimension 32"):
        FeatureStatistics.from_features(x)


def test_enough_samples_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FeatureStatistics.from_features(_features(n=100, d=8, seed=8))
