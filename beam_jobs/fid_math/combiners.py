"""Beam ``CombineFn`` wrappers of the statistics (the only Beam code here: no TensorFlow,
so they run on any Beam runner)."""
from __future__ import annotations

from typing import Iterable, Sequence

import apache_beam as beam
import numpy as np

from beam_jobs.fid_math.inception import InceptionScoreStatistics
from beam_jobs.fid_math.sufficient import SufficientStatistics


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


def stack_features(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks a list of feature vectors [d] into a float32 [n, d] matrix."""
    if len(rows) == 0:
        raise ValueError("no feature vectors to stack")
    return np.stack([np.asarray(r, np.float32) for r in rows])
