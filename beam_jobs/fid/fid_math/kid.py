"""KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged
over random subsets of two feature samples [m, d] and [n, d]."""
from __future__ import annotations

import warnings

import numpy as np


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
