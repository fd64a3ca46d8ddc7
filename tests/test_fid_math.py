"""beam_jobs.fid.fid_math: statistics, Frechet distance, KID and IS against direct numpy."""
from __future__ import annotations

import pickle
import warnings

import apache_beam as beam
import numpy as np
import pytest
import scipy.linalg
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.fid import fid_math
from beam_jobs.fid.fid_math import FeatureStatistics, blas_threads

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


def _correlated_features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Inception-like features [n, d]: a 64-factor low-rank part plus noise, rectified
    (exact zeros, as after a ReLU) and offset; float64."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(d).normal(size=(min(64, d), d)) / 8.0
    low = rng.normal(size=(n, mix.shape[0])) @ mix
    return np.maximum(low + 0.5 * rng.normal(size=(n, d)) + shift, 0.0)


def _fit(x: np.ndarray) -> FeatureStatistics:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # N < d: singular on purpose
        return FeatureStatistics.from_features(x)


def _random_psd(d: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(d, rank)) * rng.uniform(0.1, 3.0, size=rank)
    return a @ a.T


@pytest.mark.parametrize("d,rank1,rank2", [(1, 1, 1), (2, 2, 1), (5, 5, 5), (8, 3, 8),
                                           (12, 4, 6), (12, 12, 12)])
def test_trace_sqrt_product_matches_brute_force(d, rank1, rank2):
    """Against the eigenvalues of the non-symmetric product itself (numpy's general
    eig) and against scipy's sqrtm, full rank and singular."""
    rng = np.random.default_rng(100 + d + rank1)
    s1, s2 = _random_psd(d, rank1, rng), _random_psd(d, rank2, rng)
    eig = np.linalg.eigvals(s1 @ s2)
    assert np.abs(eig.imag).max() <= 1e-8 * np.abs(eig).max()  # real, as the theory says
    brute = np.sqrt(np.clip(eig.real, 0, None)).sum()
    got = fid_math.trace_sqrt_product(s1, s2)
    assert got == pytest.approx(brute, rel=1e-7, abs=1e-9)
    assert got == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real, rel=1e-6)
    assert fid_math.trace_sqrt_product(s2, s1) == pytest.approx(got, rel=1e-7)
    root = fid_math.psd_sqrt(s1)
    np.testing.assert_allclose(root @ root, s1, atol=1e-9 * np.abs(s1).max())
    np.testing.assert_allclose(root, root.T, atol=0)


@pytest.mark.parametrize("d,n1,n2", [
    (64, 1000, 800),    # full rank
    (64, 40, 30),       # both singular (N < d)
    (256, 2000, 1500),
    (256, 100, 200),    # both singular
    (512, 300, 5000),   # one singular
])
def test_fid_agrees_with_sqrtm_on_correlated_features(d, n1, n2):
    a = _fit(_correlated_features(n1, d, seed=1))
    b = _fit(_correlated_features(n2, d, seed=2, shift=0.05))
    fast = fid_math.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    reference = fid_math.frechet_distance_sqrtm(a.mu, a.sigma, b.mu, b.sigma)
    assert fast == pytest.approx(reference, rel=1e-6)
    assert fast > 0


def test_singular_trace_term_matches_exact_low_rank_formula():
    """S1 = Xc^T Xc / (n - 1) with n < d: the non-zero eigenvalues of S1 S2 are those of
    the small symmetric Xc S2 Xc^T / (n - 1) [n, n], an independent exact computation.
    The d - n zero eigenvalues come back as rounding noise whose square roots bias the
    trace by ~5e-8 relative (sqrtm's bias is of the same size)."""
    d, n = 384, 60
    x = _correlated_features(n, d, seed=3)
    s1 = _fit(x).sigma
    s2 = _fit(_correlated_features(2000, d, seed=4, shift=0.1)).sigma
    xc = x - x.mean(0)
    small = np.linalg.eigvalsh(xc @ s2 @ xc.T / (n - 1))
    exact = np.sqrt(np.clip(small, 0, None)).sum()
    assert fid_math.trace_sqrt_product(s1, s2) == pytest.approx(exact, rel=2e-7)
    assert fid_math.trace_sqrt_product(s2, s1) == pytest.approx(exact, rel=2e-7)
    sqrtm_value = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert abs(fid_math.trace_sqrt_product(s1, s2) - exact) <= 2 * abs(sqrtm_value - exact)


def test_fid_agrees_with_sqrtm_on_mnist_classifier_features(mnist_dir):
    """Real features: the project's MNIST-classifier architecture (128-d ReLU layer, some
    units dead: exactly singular covariances) on the real digits, N > d and N < d."""
    from beam_jobs.fid import extractors
    from beam_jobs.sources import mnist_idx
    images, _ = mnist_idx.load_mnist(str(mnist_dir))
    _, features_model = extractors.build_mnist_classifier(seed=0)
    x = images[:3000, :, :, None].astype(np.float32) / 255.0
    pool = np.asarray(features_model.predict(x, batch_size=500, verbose=0)[0], np.float64)
    assert pool.shape == (3000, 128)
    cases = [(pool[:1500], pool[1500:]), (pool[:100], pool[1500:]), (pool[:60], pool[100:150])]
    for xa, xb in cases:
        a, b = _fit(xa), _fit(xb)
        fast = fid_math.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
        reference = fid_math.frechet_distance_sqrtm(a.mu, a.sigma, b.mu, b.sigma)
        assert fast == pytest.approx(reference, rel=1e-6), (len(xa), len(xb))


@pytest.mark.slow  # two scipy sqrtm of 2048 x 2048: one to several minutes on 2 cores
@pytest.mark.parametrize("n1,n2", [(3000, 2500), (1000, 3000)])
def test_fid_agrees_with_sqrtm_at_inception_dimension(n1, n2):
    a = _fit(_correlated_features(n1, 2048, seed=5))
    b = _fit(_correlated_features(n2, 2048, seed=6, shift=0.05))
    fast = fid_math.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    reference = fid_math.frechet_distance_sqrtm(a.mu, a.sigma, b.mu, b.sigma)
    assert fast == pytest.approx(reference, rel=1e-6)


def test_frechet_distance_refuses_non_covariances():
    with pytest.raises(ValueError, match="not positive semi-definite"):
        fid_math.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="sigma2 contains NaN"):
        fid_math.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.nan))


def test_frechet_distance_of_identical_samples_is_the_closed_form():
    """All samples alike (a flow's T=0 samples): their covariance is zero up to rounding,
    with eigenvalues of either sign; FID = ||mu1 - mu2||^2 + Tr(sigma2) (to the trace
    term's ~5e-8 relative rounding)."""
    one = np.random.default_rng(3).normal(5.0, 3.0, size=64)
    a = _fit(np.repeat(one[None], 1000, axis=0))
    assert np.linalg.eigvalsh(a.sigma).min() <= 0.0 and np.abs(a.sigma).max() < 1e-9
    b = _fit(_correlated_features(500, 64, seed=4))
    want = float((a.mu - b.mu) @ (a.mu - b.mu) + np.trace(b.sigma))
    assert fid_math.frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(want, rel=1e-7)
    assert fid_math.frechet_distance(b.mu, b.sigma, a.mu, a.sigma) == pytest.approx(want, rel=1e-7)


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


def _identified(seed: int = 0, **identity) -> FeatureStatistics:
    """Statistics of random features with a full identity (overridable per field)."""
    fields = dict(extractor="inception_v3", extractor_fingerprint="pb-sha256:" + "ab" * 32,
                  resize_protocol="protocol A", image_shape="64x64x3")
    fields.update(identity)
    return FeatureStatistics.from_features(_features(n=200, d=6, seed=seed), **fields)


def test_fid_rejects_mismatched_shapes_and_extractors():
    with pytest.raises(ValueError, match="different shapes"):
        fid_math.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    a = FeatureStatistics(np.zeros(2), np.eye(2), 5, extractor="mnist_classifier",
                          extractor_fingerprint="savedmodel-sha256:" + "0" * 64)
    b = FeatureStatistics(np.zeros(2), np.eye(2), 5, extractor="inception_v3",
                          extractor_fingerprint="pb-sha256:" + "0" * 64)
    with pytest.raises(fid_math.StatisticsMismatchError, match="different extractors"):
        fid_math.fid_from_statistics(a, b)
    with pytest.raises(fid_math.StatisticsMismatchError, match="different extractors"):
        fid_math.fid_from_statistics(a, b, allow_unverified=True)


def test_same_identity_is_compared():
    a, b = _identified(seed=1), _identified(seed=2)
    assert fid_math.fid_from_statistics(a, b) == pytest.approx(
        fid_math.frechet_distance(a.mu, a.sigma, b.mu, b.sigma), rel=1e-12)


@pytest.mark.parametrize("field,value,message", [
    # Same name, other weights: e.g. the TTUR .pb vs the Keras .h5 Inception.
    ("extractor_fingerprint", "keras_h5-sha256:" + "cd" * 32, "different inception_v3"),
    ("extractor_fingerprint", "pb-sha256:" + "ef" * 32, "different inception_v3"),
    ("resize_protocol", "protocol B", "resize protocol"),
    ("image_shape", "32x32x3", "64x64x3 images"),
    ("extractor", "mnist_classifier", "different extractors"),
])
def test_statistics_of_different_identities_are_refused(field, value, message):
    a, b = _identified(seed=1), _identified(seed=2, **{field: value})
    for x, y in ((a, b), (b, a)):
        with pytest.raises(fid_math.StatisticsMismatchError, match=message) as err:
            fid_math.fid_from_statistics(x, y)
        assert "\n" not in str(err.value)  # one line, printable by a CLI
        with pytest.raises(fid_math.StatisticsMismatchError):  # not an "unverified" issue
            fid_math.fid_from_statistics(x, y, allow_unverified=True)


def test_identity_survives_save_and_load(tmp_path):
    a = _identified(seed=3)
    path = str(tmp_path / "a.npz")
    a.save(path)
    back = FeatureStatistics.load(path)
    assert (back.extractor, back.extractor_fingerprint, back.resize_protocol,
            back.image_shape, back.count) == (a.extractor, a.extractor_fingerprint,
                                              a.resize_protocol, a.image_shape, 200)
    assert back.source == path
    with np.load(path) as data:
        assert int(data["format_version"]) == fid_math.STATS_FORMAT_VERSION
    other = str(tmp_path / "b.npz")
    _identified(seed=4, extractor_fingerprint="keras_h5-sha256:" + "12" * 32).save(other)
    with pytest.raises(fid_math.StatisticsMismatchError, match=r"statistics '.*a\.npz'"):
        fid_math.fid_from_statistics(FeatureStatistics.load(path), FeatureStatistics.load(other))


def test_statistics_without_fingerprint_must_be_regenerated(tmp_path):
    """Old project files (name and protocol, no fingerprint) and plain TTUR files are
    refused with a message saying to regenerate; explicitly allowed, they are compared,
    but what both sides record is still checked."""
    good = _identified(seed=5)
    x = _features(n=200, d=6, seed=6)
    old = str(tmp_path / "old.npz")
    np.savez(old, mu=x.mean(0), sigma=np.cov(x.astype(np.float64), rowvar=False),
             count=np.int64(200), extractor=np.str_("inception_v3"),
             resize_protocol=np.str_("protocol A"))
    ttur = str(tmp_path / "ttur.npz")
    np.savez(ttur, mu=x.mean(0), sigma=np.cov(x.astype(np.float64), rowvar=False))
    for path in (old, ttur):
        loaded = FeatureStatistics.load(path)
        for pair in ((good, loaded), (loaded, good)):
            with pytest.raises(fid_math.UnverifiedStatisticsError,
                               match=rf"{path}.*no extractor fingerprint.*regenerate") as err:
                fid_math.fid_from_statistics(*pair)
            assert "\n" not in str(err.value)
        assert np.isfinite(fid_math.fid_from_statistics(good, loaded, allow_unverified=True))
    stale = FeatureStatistics.load(old)
    stale.resize_protocol = "protocol B"
    with pytest.raises(fid_math.StatisticsMismatchError, match="resize protocol"):
        fid_math.fid_from_statistics(good, stale, allow_unverified=True)
    fresh = FeatureStatistics.from_features(x)  # in memory, no identity at all
    with pytest.raises(fid_math.UnverifiedStatisticsError, match="in-memory statistics"):
        fid_math.fid_from_statistics(fresh, fresh)


def test_npz_roundtrip_and_ttur_format(tmp_path):
    x = _features(n=50, d=4, seed=9)
    s = FeatureStatistics.from_features(x, extractor="mnist_classifier", resize_protocol="p")
    s.kid_features = x[:10]
    s.save(str(tmp_path / "a.npz"))
    loaded = FeatureStatistics.load(str(tmp_path / "a.npz"))
    np.testing.assert_array_equal(loaded.mu, s.mu)
    assert loaded.count == 50 and loaded.extractor == "mnist_classifier"
    assert loaded.kid_features.shape == (10, 4)
    np.savez(tmp_path / "ttur.npz", mu=s.mu, sigma=s.sigma)  # only the TTUR keys
    assert FeatureStatistics.load(str(tmp_path / "ttur.npz")).count is None
    np.savez(tmp_path / "bad.npz", mean=s.mu)
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['mu', 'sigma'\]"):
        FeatureStatistics.load(str(tmp_path / "bad.npz"))


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


def test_blas_threads_follow_the_load(monkeypatch):
    """Library default on idle cores; the free cores (at least 1) when other processes
    keep them busy (the load average counts this process's own thread)."""
    monkeypatch.setattr(blas_threads.os, "cpu_count", lambda: 4)
    for load, expected in [(0.2, None), (1.3, None), (2.0, 3), (3.2, 1), (9.0, 1)]:
        monkeypatch.setattr(blas_threads.os, "getloadavg", lambda load=load: (load, load, load))
        assert fid_math.blas_threads_for_load() == expected, load
    # Under a limit the result is unchanged.
    rng = np.random.default_rng(15)
    s1, s2 = _random_psd(30, 30, rng), _random_psd(30, 10, rng)
    limited = fid_math.trace_sqrt_product(s1, s2)
    monkeypatch.setattr(blas_threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert fid_math.trace_sqrt_product(s1, s2) == pytest.approx(limited, rel=1e-12)
