"""Beam ``CombineFn`` wrappers of the statistics (the only Beam code here: no TensorFlow,
so they run on any Beam runner)."""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np

from beam_jobs.fid.fid_math.inception import InceptionScoreStatistics
from beam_jobs.fid.fid_math.sufficient import SufficientStatistics


class MeanCovCombineFn(beam.CombineFn):
    """Combines feature vectors [d] (or batches [B, d]) into :class:`SufficientStatistics`.

    The output is the merged accumulator (call ``.gaussian()`` or wrap it with
    :meth:`FeatureStatistics.from_sufficient`). Accumulators are O(d^2) whatever N is.
    """

    def create_accumulator(self) -> SufficientStatistics:
        return SufficientStatistics()

    def add_input(self, acc: SufficientStatistics, features: np.ndarray) -> SufficientStatistics:
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

    def add_input(self, acc: InceptionScoreStatistics,
                  element: tuple[int, np.ndarray]) -> InceptionScoreStatistics:
        split, logits = element
        return acc.add(split, logits)

    def merge_accumulators(self, accs: Iterable[InceptionScoreStatistics]
                           ) -> InceptionScoreStatistics:
        accs = iter(accs)
        out = next(accs)
        for a in accs:
            out.merge(a)
        return out

    def extract_output(self, acc: InceptionScoreStatistics) -> InceptionScoreStatistics:
        return acc


def subset_key(key: Any) -> tuple[int, str]:
    """The rank of a record key in :class:`SmallestKeysCombineFn`'s subset: (a 64-bit
    BLAKE2b hash of ``str(key)``, ``str(key)``): the same on every runner, worker and run,
    and spread uniformly over the keys (sample indices, record keys, file paths)."""
    text = str(key)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big"), text


class SmallestKeysCombineFn(beam.CombineFn):
    """Combines ``(rank, value)`` pairs into the values of the ``max_size`` smallest ranks
    (e.g. :func:`subset_key` of a record key), in rank order: a deterministic subset,
    whatever the runner's bundling and order (a reservoir sample is not).

    Ranks are compared, values never (they may be numpy arrays). An accumulator holds at
    most ``2 * max_size`` pairs (pruned to ``max_size`` when it reaches that).
    """

    def __init__(self, max_size: int):
        if max_size < 1:
            raise ValueError(f"max_size={max_size}: expected >= 1")
        self.max_size = max_size

    def _prune(self, acc: list) -> list:
        if len(acc) > self.max_size:
            acc.sort(key=lambda pair: pair[0])
            del acc[self.max_size:]
        return acc

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, element: tuple[Any, Any]) -> list:
        acc.append(tuple(element))
        if len(acc) >= 2 * self.max_size:
            self._prune(acc)
        return acc

    def merge_accumulators(self, accs: Iterable[list]) -> list:
        out: list = []
        for a in accs:
            out.extend(a)
            if len(out) >= 2 * self.max_size:
                self._prune(out)
        return self._prune(out)

    def compact(self, acc: list) -> list:
        return self._prune(acc)

    def extract_output(self, acc: list) -> list:
        acc = sorted(acc, key=lambda pair: pair[0])[:self.max_size]
        return [value for _, value in acc]


def stack_features(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks a list of feature vectors [d] into a float32 [n, d] matrix."""
    if len(rows) == 0:
        raise ValueError("no feature vectors to stack")
    return np.stack([np.asarray(r, np.float32) for r in rows])
