"""The math of FID, KID and IS: sufficient statistics, Frechet distance, MMD, IS.

Everything here is numpy/scipy; the Beam ``CombineFn`` wrappers only subclass
``apache_beam.CombineFn`` (no TensorFlow), so they run on any Beam runner.

* FID (Heusel et al. 2017): ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` of the
  Gaussians fitted to extractor features. The fit is from float64 sufficient statistics
  (count, sum [d], sum of outer products [d, d]); memory is O(d^2), independent of N.
* KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``,
  averaged over random subsets; needs feature samples (a bounded reservoir).
* IS (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split; per split only
  ``count``, ``sum_x p(y|x)`` [K] and ``sum_x sum_y p log p`` are needed.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from typing import Iterable, Sequence

import apache_beam as beam

import numpy as np
import scipy.linalg
import scipy.special

log = logging.getLogger(__name__)

#: Rows buffered by :class:`SufficientStatistics` before one ``X^T X`` update.
FLUSH_ROWS = 256
#: Tolerance of pytorch-fid on the imaginary part of sqrtm(S1 S2).
IMAG_TOL = 1e-3


# --------------------------------------------------------------------------------------
# Sufficient statistics (count, sum, sum of outer products) and their Gaussian fit.
# --------------------------------------------------------------------------------------
class SufficientStatistics:
    """Running float64 ``count``, ``sum`` [d] and ``sum_outer`` [d, d] of feature rows.

    Rows are buffered and folded in blocks of :data:`FLUSH_ROWS` with one BLAS
    ``X^T X``, so adding rows one at a time costs the same as adding a matrix.
    """

    __slots__ = ("dim", "count", "sum", "sum_outer", "_pending", "_pending_rows")

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.count = 0
        self.sum: np.ndarray | None = None
        self.sum_outer: np.ndarray | None = None
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def _init(self, dim: int) -> None:
        self.dim = dim
        self.sum = np.zeros(dim, np.float64)
        self.sum_outer = np.zeros((dim, dim), np.float64)

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
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or Inf; the extractor output is broken")
        self._pending.append(x.astype(np.float64, copy=False))
        self._pending_rows += x.shape[0]
        if self._pending_rows >= FLUSH_ROWS:
            self.flush()
        return self

    def flush(self) -> "SufficientStatistics":
        """Folds buffered rows into the sums."""
        if not self._pending:
            return self
        x = np.concatenate(self._pending, axis=0) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_rows = [], 0
        if self.sum is None:
            self._init(x.shape[1])
        self.count += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sum_outer += x.T @ x
        return self

    def merge(self, other: "SufficientStatistics") -> "SufficientStatistics":
        """Adds ``other``'s rows into ``self`` (in place) and returns ``self``."""
        other.flush()
        if other.count == 0:
            return self
        self.flush()
        if self.sum is None:
            self._init(other.dim)
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {self.dim} and {other.dim}")
        self.count += other.count
        self.sum += other.sum
        self.sum_outer += other.sum_outer
        return self

    def __getstate__(self):
        self.flush()
        return (self.dim, self.count, self.sum, self.sum_outer)

    def __setstate__(self, state):
        self.dim, self.count, self.sum, self.sum_outer = state
        self._pending, self._pending_rows = [], 0

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (mu [d], sigma [d, d]) with the unbiased covariance (divided by n - 1)."""
        self.flush()
        n = self.count
        if n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {n}")
        mu = self.sum / n
        sigma = (self.sum_outer - n * np.outer(mu, mu)) / (n - 1)
        sigma = 0.5 * (sigma + sigma.T)  # exact symmetry despite rounding
        if n < self.dim:
            warnings.warn(
                f"only {n} feature vectors for dimension {self.dim}: the covariance is "
                f"singular (rank <= {n - 1}) and FID is biased and unreliable; use at least "
                f"{self.dim} samples (10,000+ is standard)", RuntimeWarning, stacklevel=2)
        return mu, sigma


@dataclasses.dataclass
class FeatureStatistics:
    """A Gaussian fit of extractor features: ``mu`` float64 [d], ``sigma`` float64 [d, d].

    Saved as ``.npz`` with keys ``mu`` and ``sigma`` (the TTUR / pytorch-fid format) plus
    ``count``, ``extractor``, ``resize_protocol`` and optionally ``kid_features`` (a
    float32 [n, d] sample of the features, for KID against this set).
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None
    extractor: str = ""
    resize_protocol: str = ""
    kid_features: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @classmethod
    def from_sufficient(cls, stats: SufficientStatistics, **kwargs) -> "FeatureStatistics":
        mu, sigma = stats.gaussian()
        return cls(mu=mu, sigma=sigma, count=stats.count, **kwargs)

    @classmethod
    def from_features(cls, features: np.ndarray, **kwargs) -> "FeatureStatistics":
        """Fit of a feature matrix [N, d] (in process; the reference computation)."""
        return cls.from_sufficient(SufficientStatistics().add(features), **kwargs)

    def save(self, path: str) -> None:
        """Writes the ``.npz`` (``mu``, ``sigma``, ``count`` and metadata)."""
        arrays = {"mu": self.mu, "sigma": self.sigma,
                  "count": np.int64(-1 if self.count is None else self.count),
                  "extractor": np.str_(self.extractor),
                  "resize_protocol": np.str_(self.resize_protocol)}
        if self.kid_features is not None:
            arrays["kid_features"] = np.asarray(self.kid_features, np.float32)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str) -> "FeatureStatistics":
        """Reads a ``.npz`` with at least ``mu`` [d] and ``sigma`` [d, d] (TTUR format)."""
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"statistics file {path!r} does not exist") from None
        except Exception as e:  # noqa: BLE001 - numpy raises several types for a bad file
            raise ValueError(f"{path!r} is not a readable .npz statistics file: {e}") from e
        with data:
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise ValueError(f"{path!r} lacks key(s) {sorted(missing)}; expected an .npz "
                                 f"with 'mu' [d] and 'sigma' [d, d], found {data.files}")
            mu = np.asarray(data["mu"], np.float64)
            sigma = np.asarray(data["sigma"], np.float64)
            count = int(data["count"]) if "count" in data.files else None
            out = cls(
                mu=mu, sigma=sigma,
                count=None if count is None or count < 0 else count,
                extractor=str(data["extractor"]) if "extractor" in data.files else "",
                resize_protocol=(str(data["resize_protocol"])
                                 if "resize_protocol" in data.files else ""),
                kid_features=(np.asarray(data["kid_features"])
                              if "kid_features" in data.files else None))
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"{path!r}: mu {mu.shape} and sigma {sigma.shape} do not fit "
                             "(expected [d] and [d, d])")
        return out


# --------------------------------------------------------------------------------------
# Frechet distance.
# --------------------------------------------------------------------------------------
def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return np.asarray(covmean)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2) (float, squared feature units).

    ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^{1/2})`` with
    ``scipy.linalg.sqrtm``. As in pytorch-fid: if the product is singular (non-finite
    root) ``eps * I`` is added to both diagonals; a complex root whose diagonal has an
    imaginary part above 1e-3 is retried with that offset and then rejected with
    ValueError; a small imaginary part is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes {mu1.shape} and {mu2.shape} "
                         "(statistics from different extractors?)")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"covariances {sigma1.shape} and {sigma2.shape} do not fit means "
                         f"of shape {mu1.shape}")
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


def fid_from_statistics(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """FID of two :class:`FeatureStatistics`; refuses ones from different extractors."""
    if a.extractor and b.extractor and a.extractor != b.extractor:
        raise ValueError(f"statistics come from different extractors ({a.extractor!r} vs "
                         f"{b.extractor!r}); FID between them is meaningless")
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
