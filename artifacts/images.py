"""Image grids as PNG files."""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, num_rows: int | None = None, padding: int = 2) -> np.ndarray:
    """uint8 images [N, H, W, C] (C = 1 or 3) -> one uint8 grid image [rows*H', cols*W', C]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    cols = math.ceil(n / num_rows) if num_rows else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), 255,
                   np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[top:top + h, left:left + w] = img
    return grid


def save_grid(images: np.ndarray, path: str, num_rows: int | None = None) -> str:
    """Writes :func:`make_grid` of ``images`` as a PNG; returns the path."""
    grid = make_grid(images, num_rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path
