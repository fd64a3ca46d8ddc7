"""beam_jobs.fid.fid_math: the trace of the matrix square root in the Frechet distance against
scipy's sqrtm and brute force, full rank and singular, and its BLAS thread limit."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg

from beam_jobs.fid import fid_math
from beam_jobs.fid.fid_math import FeatureStatistics, blas_threads


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
