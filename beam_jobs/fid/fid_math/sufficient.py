"""Running float64 sufficient statistics of feature rows: count, sum [d], sum of outer
products [d, d]; memory O(d^2) whatever the number of rows N."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg.blas

from beam_jobs.fid.fid_math.blas_threads import limited_blas_threads

#: Rows buffered by :class:`SufficientStatistics` before one ``X^T X`` update (1024 rows of
#: 2048-d features are a 16 MB float64 block; larger blocks keep BLAS efficient).
FLUSH_ROWS = 1024


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
        with limited_blas_threads():
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
