"""FID (Heusel et al. 2017): the Frechet distance of two Gaussians fitted to features.

```none
FID = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})    (squared feature units)
```

for means [d] and covariances [d, d], in float64; the trace term comes from symmetric
eigendecompositions (:func:`trace_sqrt_product`), not ``sqrtm``, and
:func:`frechet_distance_sqrtm` is the pytorch-fid / TTUR reference it agrees with.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.linalg

from beam_jobs.fid.fid_math.blas_threads import limited_blas_threads
from beam_jobs.fid.fid_math.comparability import check_comparable
from beam_jobs.fid.fid_math.feature_stats import FeatureStatistics

log = logging.getLogger(__name__)

#: Tolerance of pytorch-fid on the imaginary part of sqrtm(S1 S2).
IMAG_TOL = 1e-3

#: Relative size (to the largest eigenvalue) of a negative eigenvalue that rounding can
#: explain (float64 one-pass covariances of features with a large mean offset lose
#: digits to cancellation); a matrix with a more negative one is not a covariance.
PSD_TOL = 1e-4


def _check_gaussians(mu1, sigma1, mu2, sigma2) -> tuple[np.ndarray, ...]:
    """float64 copies of (mu1 [d], sigma1 [d, d], mu2 [d], sigma2 [d, d]), shapes checked."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes {mu1.shape} and {mu2.shape} "
                         "(statistics from different extractors?)")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"covariances {sigma1.shape} and {sigma2.shape} do not fit means "
                         f"of shape {mu1.shape}")
    for name, v in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(v).all():
            raise ValueError(f"{name} contains NaN or Inf")
    return mu1, sigma1, mu2, sigma2


def _clipped_eigenvalues(eig: np.ndarray, name: str, scale: float = 0.0) -> np.ndarray:
    """Eigenvalues [d] of a symmetric PSD [d, d] matrix with rounding negatives set to 0.

    A negative eigenvalue is rounding if it is within ``PSD_TOL`` of the larger of the
    matrix's own largest |eigenvalue| and ``scale`` (the size of the problem it belongs
    to: a covariance that is zero up to rounding, from identical samples, has only
    rounding-sized eigenvalues of either sign).

    Accuracy: ``eigh`` resolves eigenvalues to about ``eps * max|eig|``, so a zero
    eigenvalue of a singular matrix comes back as noise of that size; its square root
    adds ~1e-8 * sqrt(max|eig|) to the trace term. Measured on N < d covariances against
    the exact low-rank computation: ~5e-8 relative, as ``scipy.linalg.sqrtm`` (~6e-8).
    """
    scale = max(float(np.max(np.abs(eig))), scale, np.finfo(np.float64).tiny)
    if eig.min() < -PSD_TOL * scale:
        raise ValueError(f"{name} is not positive semi-definite (eigenvalue {eig.min():.3g}, "
                         f"largest {scale:.3g}); it is not a covariance matrix")
    return np.maximum(eig, 0.0)


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root [d, d] of a symmetric PSD ``sigma`` [d, d] (float64).

    From ``eigh``: ``V diag(sqrt(max(w, 0))) V^T``; rounding negatives are clipped to 0,
    so singular covariances (fewer samples than dimensions) are fine.
    """
    sigma = np.asarray(sigma, np.float64)
    w, v = np.linalg.eigh(0.5 * (sigma + sigma.T))
    w = _clipped_eigenvalues(w, "the covariance")
    return (v * np.sqrt(w)) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((sigma1 sigma2)^{1/2})`` of symmetric PSD [d, d] matrices (float64).

    ``sigma1 sigma2`` is similar to the symmetric PSD ``M = R sigma2 R`` with
    ``R = sigma1^{1/2}`` (``R^{-1} M R = sigma1 sigma2`` where R is invertible, and by
    continuity otherwise), so its eigenvalues are M's and the trace of its principal
    root is ``sum_i sqrt(max(eig_i(M), 0))``. With ``sigma1 = V diag(w) V^T`` (``eigh``,
    rounding negatives clipped), M is orthogonally similar to ``B^T sigma2 B``,
    ``B = V diag(sqrt(w))`` restricted to the r non-zero eigenvalues: an [r, r] matrix,
    so a singular sigma1 (N < d samples) makes the second step smaller. One ``eigh``,
    two matrix products and one ``eigvalsh``, real float64 arithmetic throughout, with
    BLAS threads fitted to the machine's load (:func:`blas_threads_for_load`).
    """
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    # Both covariances set the scale of rounding: a zero-variance sample set (all images
    # alike, e.g. a flow's temperature-0 samples) has a zero sigma up to rounding noise.
    scale = float(max(np.abs(np.diagonal(sigma1)).max(), np.abs(np.diagonal(sigma2)).max()))
    with limited_blas_threads():
        w, v = np.linalg.eigh(0.5 * (sigma1 + sigma1.T))
        w = _clipped_eigenvalues(w, "sigma1", scale)
        keep = w > 0
        if not keep.any():
            return 0.0
        b = v[:, keep] * np.sqrt(w[keep])
        m = b.T @ (sigma2 @ b)
        eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    # M's eigenvalues are at most max(w) * max eig(sigma2): its rounding scale.
    eig = _clipped_eigenvalues(eig, "sigma1^1/2 sigma2 sigma1^1/2", float(w.max()) * scale)
    return float(np.sqrt(eig).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2) (float, squared feature units).

    ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^{1/2})`` for means
    [d] and covariances [d, d], in float64, with the trace term from symmetric
    eigendecompositions (:func:`trace_sqrt_product`): at d = 2048 seconds instead of the
    minute of ``scipy.linalg.sqrtm``, no complex intermediate, no ``eps * I`` offset, and
    valid for singular covariances. :func:`frechet_distance_sqrtm` is the pytorch-fid
    computation it agrees with.
    """
    mu1, sigma1, mu2, sigma2 = _check_gaussians(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                 - 2.0 * trace_sqrt_product(sigma1, sigma2))


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return np.asarray(covmean)


def frechet_distance_sqrtm(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                           sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """The reference Frechet distance of pytorch-fid / TTUR, with ``scipy.linalg.sqrtm``.

    Same inputs and value as :func:`frechet_distance`, but ``sqrtm(sigma1 @ sigma2)`` of a
    non-symmetric product (a minute at d = 2048). As in pytorch-fid: if the root is not
    finite ``eps * I`` is added to both diagonals; a complex root whose diagonal has an
    imaginary part above 1e-3 is retried with that offset and then rejected with
    ValueError; a small imaginary part is dropped. Kept as the baseline of tests and
    ``benchmarks/bench_fid.py``.
    """
    mu1, sigma1, mu2, sigma2 = _check_gaussians(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    covmean = _sqrtm_product(sigma1, sigma2)
    offset = np.eye(sigma1.shape[0]) * eps

    def too_complex(c: np.ndarray) -> float:
        """max |imag| on the diagonal (what enters the trace; pytorch-fid's criterion)."""
        return float(np.max(np.abs(np.diagonal(c).imag))) if np.iscomplexobj(c) else 0.0

    if not np.isfinite(covmean).all() or too_complex(covmean) > IMAG_TOL:
        log.warning("sqrtm(sigma1 sigma2) is singular or complex (max |imag| %.3g); adding "
                    "%g to the covariance diagonals", too_complex(covmean), eps)
        covmean = _sqrtm_product(sigma1 + offset, sigma2 + offset)
    if not np.isfinite(covmean).all():
        raise ValueError("sqrtm(sigma1 sigma2) is not finite even with eps * I added; "
                         "the covariances are degenerate")
    imag = too_complex(covmean)
    if imag > IMAG_TOL:
        raise ValueError(f"sqrtm(sigma1 sigma2) has an imaginary diagonal component of {imag:.3g} "
                         f"(> {IMAG_TOL}); the covariances are badly conditioned (too few "
                         "samples for the feature dimension?)")
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_statistics(a: FeatureStatistics, b: FeatureStatistics, *,
                        allow_unverified: bool = False) -> float:
    """FID of two :class:`FeatureStatistics` after :func:`check_comparable`: refuses
    statistics of different extractors (name or fingerprint), resize protocols, image
    shapes or dimensions, and ones without a fingerprint unless ``allow_unverified``.
    For bare arrays use :func:`frechet_distance`."""
    check_comparable(a, b, allow_unverified=allow_unverified)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
