"""Precision and recall of samples (Kynkaanniemi et al. 2019, "Improved Precision and
Recall Metric for Assessing Generative Models"), k-nearest-neighbour manifolds of two
feature samples, real R [N, d] and generated G [M, d].

* The manifold of a set is the union of balls around its points, the ball of x of radius
  ``rad(x)`` = the distance from x to its k-th nearest neighbour in the same set (x
  itself excluded, by index: an exact duplicate of x is a neighbour at distance 0).
* precision = share of g in G inside the manifold of R: ``||g - r|| <= rad_R(r)`` for
  some r in R (how many samples look real);
* recall = share of r in R inside the manifold of G: ``||r - g|| <= rad_G(g)`` for some
  g in G (how much of the real data the samples cover).

Numerics: squared Euclidean distances in float64 as ``||a||^2 - 2 a.b + ||b||^2``
(one BLAS matrix product per block), clipped at 0, and compared as squares (no square
root before a comparison). float32 features are exact in float64 and their products
too, so the only rounding is in the sums (relative ~1e-16 of ``||a||^2``); integer-valued
features of moderate size give exact distances, ties included.

Memory: distances are computed in row blocks of ``chunk_size`` x (the other set's size),
never the full N x M matrix; the k-NN radii come from a partial sort (``np.partition``)
of each block. Besides the two float64 copies of the features ([N, d] and [M, d]) a call
holds O(chunk_size * max(N, M)) floats. Work: three matrix products, N^2 d + M^2 d +
N M d multiply-adds (the R x G block is computed once, for both precision and recall):
2,000 vs 2,000 2048-d features took 2 s on the 2-core development machine at load
average 11, so 10,000 per side (the job's default cap) is about a minute.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from beam_jobs.fid.fid_math.blas_threads import limited_blas_threads

#: k of Kynkaanniemi et al. (their choice for the improved precision and recall).
DEFAULT_K = 3
#: Rows per distance block: 512 x 10,000 float64 distances are 41 MB.
DEFAULT_CHUNK_SIZE = 512


@dataclasses.dataclass(frozen=True)
class PrecisionRecall:
    """Precision and recall of a generated set against a real one, the neighbourhood size
    ``k`` and the number of feature vectors used on each side."""

    precision: float
    recall: float
    k: int
    num_real: int
    num_generated: int


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    """A feature matrix as float64 [n, d]; a ValueError for anything else."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} features must be a matrix [n, d], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} features must be real numbers, got dtype {x.dtype}")
    x = np.asarray(x, np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or Inf")
    return x


def _check_params(k: int, chunk_size: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: expected an integer >= 1")
    if (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
            or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r}: expected an integer >= 1")


def _check_count(x: np.ndarray, k: int, name: str) -> None:
    if x.shape[0] < k + 1:
        raise ValueError(f"precision/recall with k={k} needs at least k + 1 = {k + 1} "
                         f"{name + ' ' if name else ''}feature vectors (each one's k-th "
                         f"neighbour among the others), got {x.shape[0]}")


def _squared_norms(x: np.ndarray) -> np.ndarray:
    """float64 [n]: ||x_i||^2."""
    return np.einsum("ij,ij->i", x, x)


def _squared_distances(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray,
                       b_sq: np.ndarray) -> np.ndarray:
    """float64 [len(a), len(b)]: ||a_i - b_j||^2 = ||a_i||^2 - 2 a_i.b_j + ||b_j||^2,
    clipped at 0 (rounding can make it slightly negative for near-equal rows)."""
    d2 = a @ b.T
    d2 *= -2.0
    d2 += a_sq[:, None]
    d2 += b_sq[None, :]
    np.maximum(d2, 0.0, out=d2)
    return d2


def _kth_neighbour_sq(x: np.ndarray, x_sq: np.ndarray, k: int, chunk_size: int) -> np.ndarray:
    """float64 [n]: squared distance of each row of x to its k-th nearest other row."""
    n = x.shape[0]
    out = np.empty(n, np.float64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        d2 = _squared_distances(x[start:stop], x_sq[start:stop], x, x_sq)
        rows = np.arange(stop - start)
        d2[rows, start + rows] = np.inf  # the row itself is not its own neighbour
        out[start:stop] = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return out


def knn_radii(features: np.ndarray, k: int = DEFAULT_K,
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """float64 [n]: the distance from each row of ``features`` [n, d] to its k-th nearest
    neighbour among the other rows (the radii of its k-NN manifold)."""
    _check_params(k, chunk_size)
    x = _as_features(features, "the")
    _check_count(x, k, "")
    with limited_blas_threads():
        return np.sqrt(_kth_neighbour_sq(x, _squared_norms(x), k, chunk_size))


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = DEFAULT_K,
                     chunk_size: int = DEFAULT_CHUNK_SIZE) -> PrecisionRecall:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of ``generated`` [M, d]
    against ``real`` [N, d] feature vectors, with k-NN radii.

    Both sets need at least k + 1 rows and the same d; anything else is one ValueError
    line. Distances are computed in blocks of ``chunk_size`` rows; the result does not
    depend on it, unless BLAS rounds a product differently in blocks of another shape
    and a pair lies within that rounding (~1e-16 relative) of a radius.
    """
    _check_params(k, chunk_size)
    r = _as_features(real, "real")
    g = _as_features(generated, "generated")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"real features have dimension {r.shape[1]}, generated ones "
                         f"{g.shape[1]}: they must come from the same extractor")
    _check_count(r, k, "real")
    _check_count(g, k, "generated")
    r_sq, g_sq = _squared_norms(r), _squared_norms(g)
    g_in_r = np.zeros(g.shape[0], bool)  # g inside some real ball
    r_in_g = np.zeros(r.shape[0], bool)  # r inside some generated ball
    with limited_blas_threads():
        rad_r = _kth_neighbour_sq(r, r_sq, k, chunk_size)
        rad_g = _kth_neighbour_sq(g, g_sq, k, chunk_size)
        for start in range(0, g.shape[0], chunk_size):
            stop = min(start + chunk_size, g.shape[0])
            d2 = _squared_distances(g[start:stop], g_sq[start:stop], r, r_sq)  # [c, N]
            g_in_r[start:stop] = (d2 <= rad_r[None, :]).any(axis=1)
            r_in_g |= (d2 <= rad_g[start:stop, None]).any(axis=0)
    return PrecisionRecall(precision=float(g_in_r.mean()), recall=float(r_in_g.mean()), k=int(k),
                           num_real=int(r.shape[0]), num_generated=int(g.shape[0]))
