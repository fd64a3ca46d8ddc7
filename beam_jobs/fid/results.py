"""How the FID pipeline hands its combined results to the driver: one ``.npz`` per
statistics class on any Beam filesystem, written by the pipeline's last step
(``write_*``, used as ``beam.Map(write_x, path)``) and read back by the driver
(``read_*``).

* :class:`~beam_jobs.fid.fid_math.SufficientStatistics`: ``count``, ``dim`` and, if
  ``count`` > 0, float64 ``sum`` [d] and ``sum_outer`` [d, d];
* :class:`~beam_jobs.fid.fid_math.InceptionScoreStatistics`: per-split ``count``,
  ``sum_plogp``, ``confident`` and, once logits were seen, ``sum_p`` and
  ``label_hist`` [splits, K];
* image shapes: int64 ``shapes`` [n, 3] (H, W, C);
* feature samples (the KID reservoir, the precision/recall subset): float32
  ``features`` [n, d] ([0, 0] when empty).

Every file is written whole under a temporary name next to its final one and then renamed
(:func:`write_atomically`), so a reader never sees a partial file and a failed write (a
full disk) leaves whatever was at the final name untouched.
"""
from __future__ import annotations

import io
import uuid
from typing import Callable, Sequence

import numpy as np
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from beam_jobs.fid import fid_math
from beam_jobs.fid.fid_math import npz_limits


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp)`` to write the whole file at a temporary name in ``path``'s
    directory (``.<name>.tmp-<random>``), then renames it to ``path``: on a local or
    mounted file system an atomic ``rename`` that replaces any old file in one step; on
    object stores Beam's rename (copy, then delete; the object appears whole). If writing
    or renaming fails, the temporary file is removed and the error propagates: an old file
    at ``path`` is left as it was."""
    parent, name = FileSystems.split(path)
    tmp = FileSystems.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}") if parent else (
        f".{name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        write(tmp)
        FileSystems.rename([tmp], [path])
    except BaseException:
        try:
            if FileSystems.exists(tmp):
                FileSystems.delete([tmp])
        except (BeamIOError, OSError):
            pass
        raise


def _write(path: str, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)

    def write(target: str) -> None:
        with FileSystems.create(target) as f:
            f.write(buf.getvalue())

    write_atomically(path, write)


def _read(path: str) -> dict[str, np.ndarray]:
    with FileSystems.open(path) as f:
        raw = f.read()
    with npz_limits.load_npz(raw, path) as data:  # headers checked before any allocation
        return {k: data[k] for k in data.files}


def write_sufficient(stats: fid_math.SufficientStatistics, path: str) -> None:
    """Writes FID sufficient statistics (pending rows are folded in first)."""
    stats.flush()
    arrays = {"count": np.int64(stats.count), "dim": np.int64(stats.dim or 0)}
    if stats.count:
        arrays.update(sum=stats.sum, sum_outer=stats.sum_outer)
    _write(path, arrays)


def read_sufficient(path: str) -> fid_math.SufficientStatistics:
    """The statistics :func:`write_sufficient` wrote (count 0: no sums)."""
    raw = _read(path)
    stats = fid_math.SufficientStatistics(int(raw["dim"]))
    stats.count = int(raw["count"])
    if stats.count:
        stats.sum, stats.sum_outer = raw["sum"], raw["sum_outer"]
    return stats


def write_inception_score(stats: fid_math.InceptionScoreStatistics, path: str) -> None:
    """Writes per-split Inception Score statistics."""
    arrays = {"count": stats.count, "sum_plogp": stats.sum_plogp, "confident": stats.confident}
    if stats.sum_p is not None:
        arrays.update(sum_p=stats.sum_p, label_hist=stats.label_hist)
    _write(path, arrays)


def read_inception_score(path: str, num_splits: int) -> fid_math.InceptionScoreStatistics:
    """The statistics :func:`write_inception_score` wrote, over ``num_splits`` splits."""
    raw = _read(path)
    stats = fid_math.InceptionScoreStatistics(num_splits)
    stats.count, stats.sum_plogp, stats.confident = (
        raw["count"], raw["sum_plogp"], raw["confident"])
    stats.sum_p, stats.label_hist = raw.get("sum_p"), raw.get("label_hist")
    return stats


def write_shapes(shapes: Sequence[Sequence[int]], path: str) -> None:
    """Writes image shapes (H, W, C)."""
    _write(path, {"shapes": np.asarray(shapes, np.int64).reshape(-1, 3)})


def read_shapes(path: str) -> list[tuple[int, ...]]:
    """The shapes :func:`write_shapes` wrote, as tuples."""
    return [tuple(s) for s in _read(path)["shapes"]]


def write_features(rows: Sequence[np.ndarray], path: str) -> None:
    """Writes feature vectors [d] (the KID reservoir, the precision/recall subset) stacked
    to float32 [n, d]."""
    _write(path, {"features": (fid_math.stack_features(rows) if len(rows)
                               else np.zeros((0, 0), np.float32))})


def read_features(path: str) -> np.ndarray:
    """The features :func:`write_features` wrote, float32 [n, d]."""
    return _read(path)["features"]
