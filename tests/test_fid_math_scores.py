"""beam_jobs.fid.fid_math: KID and the Inception Score against direct formulas, and the IS
combiner in Beam."""
from __future__ import annotations

import numpy as np
import pytest
from test_fid_math import _run_combine

from beam_jobs.fid import fid_math


def _mmd2_loops(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.5, 1.0, size=(25, 5))
    assert fid_math.polynomial_mmd2_unbiased(x, y) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    # With subsets as large as the sets, every subset is the whole set (permuted).
    mean, std = fid_math.kernel_inception_distance(x[:25], y, subset_size=25, num_subsets=3)
    assert mean == pytest.approx(_mmd2_loops(x[:25], y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_and_same_distribution():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    z = rng.normal(1.0, 1.0, size=(400, 8))
    same, _ = fid_math.kernel_inception_distance(x, y, subset_size=100, num_subsets=20)
    diff, diff_std = fid_math.kernel_inception_distance(x, z, subset_size=100, num_subsets=20)
    assert abs(same) < 0.05 < diff and diff_std > 0
    with pytest.warns(RuntimeWarning, match="subset size reduced from 1000 to 400"):
        fid_math.kernel_inception_distance(x, y, num_subsets=2)


def test_inception_score_extremes():
    k = 10
    uniform = np.zeros((200, k))
    mean, std = fid_math.inception_score(uniform)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    labels = np.arange(1000) % k
    one_hot = np.full((1000, k), -1e4)
    one_hot[np.arange(1000), labels] = 0.0
    mean, std = fid_math.inception_score(one_hot)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_direct_formula():
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(500, 7)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for part in np.array_split(p, 10):
        py = part.mean(0)
        scores.append(np.exp(np.mean((part * (np.log(part) - np.log(py))).sum(1))))
    mean, std = fid_math.inception_score(logits, num_splits=10)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)


def test_inception_score_combine_fn_in_beam(tmp_path):
    rng = np.random.default_rng(13)
    logits = rng.normal(size=(120, 5))
    out = [_run_combine([(i % 10, logits[i]) for i in range(120)],
                        fid_math.InceptionScoreCombineFn(10), tmp_path / "is.pkl")]
    direct = fid_math.InceptionScoreStatistics(10)
    for i in range(120):
        direct.add(i % 10, logits[i])
    assert out[0].score() == pytest.approx(direct.score(), rel=1e-10)


def test_confident_rate_and_label_coverage_against_hand_computed_values():
    """Five images over 4 classes: softmax top probabilities 0.97, 0.97, 0.47, 0.97, 0.25
    (the last ties, argmax picks class 0); predicted labels 0, 0, 1, 2, 0."""
    big = np.log(0.97 / 0.01)  # logits [big, 0, 0, 0] give p = (0.97, 0.01, 0.01, 0.01)
    logits = np.array([[big, 0, 0, 0], [big, 0, 0, 0], [0, np.log(0.47 / 0.53 * 3), 0, 0],
                       [0, 0, big, 0], [0, 0, 0, 0]])
    stats = fid_math.InceptionScoreStatistics(3)
    stats.add(0, logits[:2]).add(1, logits[2:4])
    other = fid_math.InceptionScoreStatistics(3).add(2, logits[4])
    stats.merge(other)
    assert stats.confident_rate() == pytest.approx(3 / 5)
    q = np.array([3, 1, 1, 0]) / 5
    expected = -(q[q > 0] * np.log(q[q > 0])).sum() / np.log(4)
    assert stats.label_coverage() == pytest.approx(expected, rel=1e-12)
    uniform = fid_math.InceptionScoreStatistics(1).add(0, np.eye(4) * 20)
    assert uniform.label_coverage() == pytest.approx(1.0)
    single = fid_math.InceptionScoreStatistics(1).add(0, np.tile([20.0, 0, 0, 0], (6, 1)))
    assert single.label_coverage() == 0.0 and single.confident_rate() == 1.0
    with pytest.raises(ValueError, match="no logits"):
        fid_math.InceptionScoreStatistics(2).confident_rate()
