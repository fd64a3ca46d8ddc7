"""The math of FID, KID and IS: sufficient statistics, Frechet distance, MMD, IS.

Everything here is numpy/scipy; the Beam ``CombineFn`` wrappers only subclass
``apache_beam.CombineFn`` (no TensorFlow), so they run on any Beam runner.

* FID (Heusel et al. 2017): ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` of the
  Gaussians fitted to extractor features. The fit is from float64 sufficient statistics
  (count, sum [d], sum of outer products [d, d]); memory is O(d^2), independent of N.
  The trace term comes from symmetric eigendecompositions, not ``sqrtm``.
* KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``,
  averaged over random subsets; needs feature samples (a bounded reservoir).
* IS (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split; per split only
  ``count``, ``sum_x p(y|x)`` [K] and ``sum_x sum_y p log p`` are needed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import warnings
from typing import Iterable, Iterator, Sequence

import apache_beam as beam

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.special
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

#: Rows buffered by :class:`SufficientStatistics` before one ``X^T X`` update (1024 rows of
#: 2048-d features are a 16 MB float64 block; larger blocks keep BLAS efficient).
FLUSH_ROWS = 1024
#: Tolerance of pytorch-fid on the imaginary part of sqrtm(S1 S2).
IMAG_TOL = 1e-3


def blas_threads_for_load() -> int | None:
    """BLAS threads for the O(d^3) steps here: None (the library default) on a machine
    with idle cores, else the cores left free by other work (at least 1).

    Measured on the 2-core development machine with two training jobs running (load
    average ~6): a 2048 x 2048 ``eigh`` took 7-8 s with OpenBLAS's 2 threads and 1.1-1.8 s
    with 1 (threads spinning at barriers on cores other processes hold), ``eigvalsh``
    1.1-4.1 s vs 0.4-0.5 s, the 10k-row ``syrk`` 1.4-1.7 s vs 1.2 s. The 1-minute load
    average (which counts this process's running thread) is the measure of other work.
    """
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return None
    free = cpus - max(load - 1.0, 0.0)
    if free >= cpus - 0.5:
        return None
    return max(1, int(free))


@contextlib.contextmanager
def _blas_threads() -> Iterator[None]:
    """Limits BLAS threads to :func:`blas_threads_for_load` for the enclosed block."""
    threads = blas_threads_for_load()
    if threads is None:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


# --------------------------------------------------------------------------------------
# Sufficient statistics (count, sum, sum of outer products) and their Gaussian fit.
# --------------------------------------------------------------------------------------
class SufficientStatistics:
    """Running float64 ``count``, ``sum`` [d] and ``sum_outer`` [d, d] of feature rows.

    Rows are buffered (in their own dtype) and folded in blocks of :data:`FLUSH_ROWS`
    with one BLAS ``syrk`` (``X^T X``, upper triangle only: half the flops of a matrix
    product), so adding rows one at a time costs the same as adding a matrix. The
    upper-triangular accumulator is kept internally; :attr:`sum_outer` returns the full
    symmetric matrix.
    """

    __slots__ = ("dim", "_count", "_sum", "_upper", "_pending", "_pending_rows")

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self._count = 0
        self._sum: np.ndarray | None = None
        self._upper: np.ndarray | None = None  # float64 [d, d], Fortran order, upper triangle
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def _init(self, dim: int) -> None:
        self.dim = dim
        self._sum = np.zeros(dim, np.float64)
        self._upper = np.zeros((dim, dim), np.float64, order="F")

    @property
    def count(self) -> int:
        """Number of rows added (buffered ones included)."""
        return self._count + self._pending_rows

    @count.setter
    def count(self, value: int) -> None:
        self.flush()
        self._count = int(value)

    @property
    def sum(self) -> np.ndarray | None:
        """float64 [d]: the sum of all rows (None before the first row)."""
        self.flush()
        return self._sum

    @sum.setter
    def sum(self, value: np.ndarray) -> None:
        self.flush()
        self._sum = np.array(value, np.float64)

    @property
    def sum_outer(self) -> np.ndarray | None:
        """float64 [d, d]: the sum of outer products x x^T of all rows (full, symmetric)."""
        self.flush()
        if self._upper is None:
            return None
        upper = np.triu(self._upper)
        return upper + np.triu(upper, 1).T

    @sum_outer.setter
    def sum_outer(self, value: np.ndarray) -> None:
        value = np.asarray(value, np.float64)
        if value.ndim != 2 or value.shape[0] != value.shape[1]:
            raise ValueError(f"sum_outer must be a square [d, d] matrix, got {value.shape}")
        self._upper = np.asfortranarray(np.triu(value))

    def add(self, features: np.ndarray) -> "SufficientStatistics":
        """Adds one feature vector [d] or a batch [B, d] (any float dtype)."""
        x = np.asarray(features)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"features must have shape [d] or [B, d], got {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise ValueError(
                f"feature dimension {x.shape[1]} does not match the statistics' dimension {self.dim}")
        self._pending.append(x)
        self._pending_rows += x.shape[0]
        if self._pending_rows >= FLUSH_ROWS:
            self.flush()
        return self

    def flush(self) -> "SufficientStatistics":
        """Folds buffered rows into the sums (one float64 copy, one ``syrk``)."""
        if not self._pending:
            return self
        x = (np.concatenate(self._pending, axis=0, dtype=np.float64) if len(self._pending) > 1
             else np.asarray(self._pending[0], np.float64))
        self._pending, self._pending_rows = [], 0
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or Inf; the extractor output is broken")
        if self._sum is None:
            self._init(x.shape[1])
        self._count += x.shape[0]
        self._sum += x.sum(axis=0)
        # x.T is Fortran-contiguous [d, B]: syrk reads it without a copy and updates the
        # Fortran-ordered accumulator in place (upper triangle).
        with _blas_threads():
            out = scipy.linalg.blas.dsyrk(1.0, x.T, beta=1.0, c=self._upper, trans=0,
                                          lower=0, overwrite_c=1)
        if out is not self._upper:  # the wrapper copied (unexpected layout): keep its result
            self._upper = np.asfortranarray(out)
        return self

    def merge(self, other: "SufficientStatistics") -> "SufficientStatistics":
        """Adds ``other``'s rows into ``self`` (in place) and returns ``self``."""
        other.flush()
        if other.count == 0:
            return self
        self.flush()
        if self._sum is None:
            self._init(other.dim)
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {self.dim} and {other.dim}")
        self._count += other._count
        self._sum += other._sum
        self._upper += np.triu(other._upper)
        return self

    def __getstate__(self):
        self.flush()
        return (self.dim, self._count, self._sum, self._upper)

    def __setstate__(self, state):
        self.dim, self._count, self._sum, upper = state
        self._upper = None if upper is None else np.asfortranarray(upper)
        self._pending, self._pending_rows = [], 0

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (mu [d], sigma [d, d]) with the unbiased covariance (divided by n - 1)."""
        self.flush()
        n = self._count
        if n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {n}")
        mu = self._sum / n
        sigma = (self.sum_outer - n * np.outer(mu, mu)) / (n - 1)
        sigma = 0.5 * (sigma + sigma.T)  # exact symmetry despite rounding
        if n < self.dim:
            warnings.warn(
                f"only {n} feature vectors for dimension {self.dim}: the covariance is "
                f"singular (rank <= {n - 1}) and FID is biased and unreliable; use at least "
                f"{self.dim} samples (10,000+ is standard)", RuntimeWarning, stacklevel=2)
        return mu, sigma


class StatisticsError(ValueError):
    """Statistics that cannot be used as asked: an unreadable file, or a pair that is not
    comparable (a user error; CLIs print its one-line message, no traceback)."""


class StatisticsMismatchError(StatisticsError):
    """Two statistics from different extractors, protocols, image shapes or dimensions."""


class UnverifiedStatisticsError(StatisticsError):
    """Statistics without an extractor fingerprint, so their origin cannot be checked."""


def _short(fingerprint: str) -> str:
    """``kind-sha256:0123456789ab...`` for messages."""
    head, _, digest = fingerprint.rpartition(":")
    return f"{head}:{digest[:12]}..." if head else fingerprint[:24]


@dataclasses.dataclass
class FeatureStatistics:
    """A Gaussian fit of extractor features: ``mu`` float64 [d], ``sigma`` float64 [d, d].

    Saved as ``.npz`` with keys ``mu`` and ``sigma`` (the TTUR / pytorch-fid format) plus
    the identity of what was measured: ``extractor`` (name), ``extractor_fingerprint``
    (content hash of the extractor, :mod:`beam_jobs.identity`), ``resize_protocol``,
    ``image_shape`` (``"HxWxC"`` of the images fed to the extractor, or
    ``"mixed:..."``), ``count`` (sample count), ``format_version``; and optionally
    ``kid_features`` (a float32 [n, d] sample of the features, for KID against this set).
    ``source`` is the path the statistics were loaded from (not saved).

    Comparisons (:func:`fid_from_statistics`) refuse statistics whose identities differ
    and, unless explicitly allowed, statistics without a fingerprint (files written
    before fingerprints were recorded, plain TTUR files, in-memory fits): see
    :func:`check_comparable`.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None
    extractor: str = ""
    resize_protocol: str = ""
    kid_features: np.ndarray | None = None
    extractor_fingerprint: str = ""
    image_shape: str = ""
    source: str = ""

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def describe(self) -> str:
        """How messages name these statistics: the file, or 'in-memory statistics'."""
        return f"statistics {self.source!r}" if self.source else "in-memory statistics"

    @classmethod
    def from_sufficient(cls, stats: SufficientStatistics, **kwargs) -> "FeatureStatistics":
        mu, sigma = stats.gaussian()
        return cls(mu=mu, sigma=sigma, count=stats.count, **kwargs)

    @classmethod
    def from_features(cls, features: np.ndarray, **kwargs) -> "FeatureStatistics":
        """Fit of a feature matrix [N, d] (in process; the reference computation)."""
        return cls.from_sufficient(SufficientStatistics().add(features), **kwargs)

    def save(self, path: str) -> None:
        """Writes the ``.npz`` (``mu``, ``sigma``, ``count`` and the identity metadata)."""
        arrays = {"mu": self.mu, "sigma": self.sigma,
                  "count": np.int64(-1 if self.count is None else self.count),
                  "extractor": np.str_(self.extractor),
                  "extractor_fingerprint": np.str_(self.extractor_fingerprint),
                  "resize_protocol": np.str_(self.resize_protocol),
                  "image_shape": np.str_(self.image_shape),
                  "format_version": np.int64(STATS_FORMAT_VERSION)}
        if self.kid_features is not None:
            arrays["kid_features"] = np.asarray(self.kid_features, np.float32)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str) -> "FeatureStatistics":
        """Reads a ``.npz`` with at least ``mu`` [d] and ``sigma`` [d, d] (TTUR format).

        Missing metadata reads as "" (unknown); whether such statistics may be compared
        is decided by :func:`check_comparable`, not here.
        """
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"statistics file {path!r} does not exist") from None
        except Exception as e:  # noqa: BLE001 - numpy raises several types for a bad file
            raise StatisticsError(f"{path!r} is not a readable .npz statistics file: {e}") from e
        with data:
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise StatisticsError(f"{path!r} lacks key(s) {sorted(missing)}; expected an "
                                      f".npz with 'mu' [d] and 'sigma' [d, d], found {data.files}")

            def text(key: str) -> str:
                return str(data[key]) if key in data.files else ""

            mu = np.asarray(data["mu"], np.float64)
            sigma = np.asarray(data["sigma"], np.float64)
            count = int(data["count"]) if "count" in data.files else None
            out = cls(
                mu=mu, sigma=sigma,
                count=None if count is None or count < 0 else count,
                extractor=text("extractor"), resize_protocol=text("resize_protocol"),
                kid_features=(np.asarray(data["kid_features"])
                              if "kid_features" in data.files else None),
                extractor_fingerprint=text("extractor_fingerprint"),
                image_shape=text("image_shape"), source=str(path))
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise StatisticsError(f"{path!r}: mu {mu.shape} and sigma {sigma.shape} do not fit "
                                  "(expected [d] and [d, d])")
        return out


#: Version of the statistics ``.npz`` layout; 2 added the extractor fingerprint and the
#: image shape (files without ``format_version`` are version 1 or foreign).
STATS_FORMAT_VERSION = 2


def check_identity(stats: FeatureStatistics, *, against: str, extractor: str,
                   fingerprint: str, resize_protocol: str, image_shape: str = "",
                   dim: int | None = None, allow_unverified: bool = False) -> None:
    """Raises unless ``stats`` were measured like ``against`` (a description for the
    message): same extractor name, fingerprint and resize protocol, and, where both are
    known, the same image shape and feature dimension.

    Without a fingerprint on ``stats`` it raises :class:`UnverifiedStatisticsError`
    (regenerate the file), unless ``allow_unverified``: then only the fields both sides
    record are compared. Mismatches raise :class:`StatisticsMismatchError`. Messages are
    one line.
    """
    what = stats.describe()
    if not stats.extractor_fingerprint and not allow_unverified:
        raise UnverifiedStatisticsError(
            f"{what} record no extractor fingerprint (written before statistics carried "
            "one, or a plain mu/sigma file), so their extractor cannot be checked; "
            "regenerate them with `python -m beam_jobs.fid ... --output_stats=PATH` and the "
            "extractor you compare with (beam_jobs.fid --allow_unverified_stats uses them "
            "unchecked)")
    if stats.extractor and extractor and stats.extractor != extractor:
        raise StatisticsMismatchError(
            f"{what} come from extractor {stats.extractor!r}, {against} from {extractor!r}: "
            "statistics from different extractors cannot be compared")
    if stats.extractor_fingerprint and fingerprint and stats.extractor_fingerprint != fingerprint:
        raise StatisticsMismatchError(
            f"{what} were computed with a different {stats.extractor or 'extractor'} "
            f"(fingerprint {_short(stats.extractor_fingerprint)}) than {against} "
            f"({_short(fingerprint)}): regenerate them with the same extractor weights")
    if stats.resize_protocol and resize_protocol and stats.resize_protocol != resize_protocol:
        raise StatisticsMismatchError(
            f"{what} used resize protocol {stats.resize_protocol!r}, {against} "
            f"{resize_protocol!r}: statistics with different preprocessing cannot be compared")
    if stats.image_shape and image_shape and stats.image_shape != image_shape:
        raise StatisticsMismatchError(
            f"{what} are of {stats.image_shape} images, {against} of {image_shape} images: "
            "the extractor resizes them differently, so FID between them is biased; "
            "preprocess both to one image size")
    if dim is not None and dim > 0 and stats.dim != dim:
        raise StatisticsMismatchError(
            f"{what} have feature dimension {stats.dim}, {against} {dim}")


def check_comparable(a: FeatureStatistics, b: FeatureStatistics, *,
                     allow_unverified: bool = False) -> None:
    """Raises :class:`StatisticsError` unless ``a`` and ``b`` may be compared: both
    fingerprinted (unless ``allow_unverified``) and with equal identities (see
    :func:`check_identity`)."""
    if not b.extractor_fingerprint and not allow_unverified:
        check_identity(b, against=a.describe(), extractor="", fingerprint="",
                       resize_protocol="")  # raises UnverifiedStatisticsError
    check_identity(a, against=b.describe(), extractor=b.extractor,
                   fingerprint=b.extractor_fingerprint, resize_protocol=b.resize_protocol,
                   image_shape=b.image_shape, dim=b.dim, allow_unverified=allow_unverified)


# --------------------------------------------------------------------------------------
# Frechet distance.
# --------------------------------------------------------------------------------------
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


def _clipped_eigenvalues(eig: np.ndarray, name: str) -> np.ndarray:
    """Eigenvalues [d] of a symmetric PSD [d, d] matrix with rounding negatives set to 0.

    Accuracy: ``eigh`` resolves eigenvalues to about ``eps * max|eig|``, so a zero
    eigenvalue of a singular matrix comes back as noise of that size; its square root
    adds ~1e-8 * sqrt(max|eig|) to the trace term. Measured on N < d covariances against
    the exact low-rank computation: ~5e-8 relative, as ``scipy.linalg.sqrtm`` (~6e-8).
    """
    scale = max(float(np.max(np.abs(eig))), np.finfo(np.float64).tiny)
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
    sigma1 = np.asarray(sigma1, np.float64)
    with _blas_threads():
        w, v = np.linalg.eigh(0.5 * (sigma1 + sigma1.T))
        w = _clipped_eigenvalues(w, "sigma1")
        keep = w > 0
        if not keep.any():
            return 0.0
        b = v[:, keep] * np.sqrt(w[keep])
        m = b.T @ (np.asarray(sigma2, np.float64) @ b)
        eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(_clipped_eigenvalues(eig, "sigma1^1/2 sigma2 sigma1^1/2")).sum())


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


# --------------------------------------------------------------------------------------
# KID.
# --------------------------------------------------------------------------------------
def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of samples x [m, d], y [n, d] with k(a, b) = (a.b / d + 1)^3."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    d = x.shape[1]
    m, n = x.shape[0], y.shape[0]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.sum() / (m * n))


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, subset_size: int = 1000,
                              num_subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) over ``num_subsets`` random subsets of x [m, d] and y [n, d].

    Each subset draws ``min(subset_size, m, n)`` rows of each side without replacement;
    a smaller subset than requested is warned about.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"KID needs feature matrices [m, d] and [n, d], got {x.shape}, {y.shape}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per side, got {x.shape[0]} and {y.shape[0]}")
    if size < subset_size:
        warnings.warn(f"KID subset size reduced from {subset_size} to {size} (samples: "
                      f"{x.shape[0]} vs {y.shape[0]})", RuntimeWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], size, replace=False)]
        ys = y[rng.choice(y.shape[0], size, replace=False)]
        values[i] = polynomial_mmd2_unbiased(xs, ys)
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------------------
# Inception score.
# --------------------------------------------------------------------------------------
CONFIDENT_THRESHOLD = 0.9


class InceptionScoreStatistics:
    """Per-split ``count`` [S], ``sum_p`` [S, K] of p(y|x) and ``sum_plogp`` [S] (float64),
    and the classifier's verdicts: ``confident`` [S], how many images have
    max_y p(y|x) >= CONFIDENT_THRESHOLD, and ``label_hist`` [S, K], how many have each
    predicted label argmax_y p(y|x)."""

    def __init__(self, num_splits: int = 10):
        self.num_splits = num_splits
        self.count = np.zeros(num_splits, np.int64)
        self.sum_p: np.ndarray | None = None
        self.sum_plogp = np.zeros(num_splits, np.float64)
        self.confident = np.zeros(num_splits, np.int64)
        self.label_hist: np.ndarray | None = None

    def add(self, split: int, logits: np.ndarray) -> "InceptionScoreStatistics":
        """Adds logits [K] or [B, K] (unnormalized log-probabilities) to split ``split``."""
        z = np.asarray(logits, np.float64)
        if z.ndim == 1:
            z = z[None]
        logp = scipy.special.log_softmax(z, axis=-1)
        p = np.exp(logp)
        if self.sum_p is None:
            self.sum_p = np.zeros((self.num_splits, z.shape[1]), np.float64)
        elif self.sum_p.shape[1] != z.shape[1]:
            raise ValueError(f"logits have {z.shape[1]} classes, expected {self.sum_p.shape[1]}")
        if self.label_hist is None:
            self.label_hist = np.zeros((self.num_splits, z.shape[1]), np.int64)
        s = int(split) % self.num_splits
        self.count[s] += z.shape[0]
        self.sum_p[s] += p.sum(axis=0)
        self.sum_plogp[s] += float(scipy.special.xlogy(p, p).sum())
        self.confident[s] += int((p.max(axis=1) >= CONFIDENT_THRESHOLD).sum())
        self.label_hist[s] += np.bincount(p.argmax(axis=1), minlength=z.shape[1])
        return self

    def merge(self, other: "InceptionScoreStatistics") -> "InceptionScoreStatistics":
        if other.sum_p is None:
            return self
        if self.sum_p is None:
            self.sum_p = np.zeros_like(other.sum_p)
        if self.label_hist is None:
            self.label_hist = np.zeros_like(other.label_hist)
        self.count += other.count
        self.sum_p += other.sum_p
        self.sum_plogp += other.sum_plogp
        self.confident += other.confident
        self.label_hist += other.label_hist
        return self

    def confident_rate(self) -> float:
        """Fraction of images whose top class probability is >= CONFIDENT_THRESHOLD."""
        total = int(self.count.sum())
        if total == 0:
            raise ValueError("no logits were added; no confident-sample rate")
        return float(self.confident.sum()) / total

    def label_coverage(self) -> float:
        """Entropy of the predicted-label histogram / ln K, in [0, 1]: 1 when every class
        is predicted equally often, 0 when all images get one label."""
        if self.label_hist is None or self.label_hist.sum() == 0:
            raise ValueError("no logits were added; no label coverage")
        q = self.label_hist.sum(axis=0).astype(np.float64)
        q /= q.sum()
        return max(0.0, float(-scipy.special.xlogy(q, q).sum() / math.log(q.size)))

    def score(self) -> tuple[float, float]:
        """(mean, std) over the non-empty splits of exp(E_x KL(p(y|x) || p(y)))."""
        used = self.count > 0
        if not used.any():
            raise ValueError("no logits were added; cannot compute the inception score")
        n = self.count[used].astype(np.float64)
        p_y = self.sum_p[used] / n[:, None]
        kl = self.sum_plogp[used] / n - scipy.special.xlogy(p_y, p_y).sum(axis=1)
        scores = np.exp(kl)
        return float(scores.mean()), float(scores.std())


def inception_score(logits: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """IS (mean, std) of logits [N, K] over ``num_splits`` contiguous splits (in process)."""
    logits = np.asarray(logits)
    stats = InceptionScoreStatistics(num_splits)
    for s, chunk in enumerate(np.array_split(logits, num_splits)):
        if len(chunk):
            stats.add(s, chunk)
    return stats.score()


# --------------------------------------------------------------------------------------
# Beam CombineFns.
# --------------------------------------------------------------------------------------
class MeanCovCombineFn(beam.CombineFn):
    """Combines feature vectors [d] (or batches [B, d]) into :class:`SufficientStatistics`.

    The output is the merged accumulator (call ``.gaussian()`` or wrap it with
    :meth:`FeatureStatistics.from_sufficient`). Accumulators are O(d^2) whatever N is.
    """

    def create_accumulator(self) -> SufficientStatistics:
        return SufficientStatistics()

    def add_input(self, acc: SufficientStatistics, features) -> SufficientStatistics:
        return acc.add(features)

    def add_inputs(self, acc: SufficientStatistics, elements: Iterable) -> SufficientStatistics:
        for e in elements:
            acc.add(e)
        return acc

    def merge_accumulators(self, accs: Iterable[SufficientStatistics]) -> SufficientStatistics:
        accs = iter(accs)
        out = next(accs).flush()
        for a in accs:
            out.merge(a)
        return out

    def compact(self, acc: SufficientStatistics) -> SufficientStatistics:
        return acc.flush()

    def extract_output(self, acc: SufficientStatistics) -> SufficientStatistics:
        return acc.flush()


class InceptionScoreCombineFn(beam.CombineFn):
    """Combines ``(split_index, logits [K])`` pairs into :class:`InceptionScoreStatistics`."""

    def __init__(self, num_splits: int = 10):
        self.num_splits = num_splits

    def create_accumulator(self) -> InceptionScoreStatistics:
        return InceptionScoreStatistics(self.num_splits)

    def add_input(self, acc: InceptionScoreStatistics, element) -> InceptionScoreStatistics:
        split, logits = element
        return acc.add(split, logits)

    def merge_accumulators(self, accs: Iterable[InceptionScoreStatistics]):
        accs = iter(accs)
        out = next(accs)
        for a in accs:
            out.merge(a)
        return out

    def extract_output(self, acc: InceptionScoreStatistics) -> InceptionScoreStatistics:
        return acc


def stack_features(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks a list of feature vectors [d] into a float32 [n, d] matrix."""
    if len(rows) == 0:
        raise ValueError("no feature vectors to stack")
    return np.stack([np.asarray(r, np.float32) for r in rows])
