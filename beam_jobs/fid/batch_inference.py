"""Model inference in batches that depend only on the keys (generators and the extractor
of the FID job).

Beam's RunInference batches whatever a bundle holds, and float32 conv outputs change by
~1e-7 with a batch's composition; batching by key makes every image and feature vector
bit-identical on every runner and run.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.utils import shared

from beam_jobs.fid.fid_math import subset_key


def batch_index(key: Any, batch_size: int, num_batches: int) -> int:
    """The batch of a key: ``i // batch_size`` for sample indices, else a bucket of the
    key's 64-bit BLAKE2b hash (:func:`~beam_jobs.fid.fid_math.subset_key`) among
    ``num_batches``."""
    if isinstance(key, (int, np.integer)):
        return int(key) // batch_size
    return subset_key(key)[0] % num_batches


def _key_order(key: Any) -> tuple:
    if isinstance(key, (int, np.integer)):
        return (0, int(key), "")
    return (1, 0, str(key))


class _BatchInferenceFn(beam.DoFn):
    """``(batch, [(key, example), ...])`` -> ``(key, PredictionResult)``: the examples in
    key order, in chunks of at most ``batch_size``, through ``handler.run_inference``
    (one model per worker process, shared by its threads)."""

    def __init__(self, handler: ModelHandler, batch_size: int):
        self._handler = handler
        self._batch_size = batch_size
        self._shared = shared.Shared()

    def setup(self) -> None:
        self._model = self._shared.acquire(self._handler.load_model)

    def process(self, element: Any) -> Iterator[tuple[Any, PredictionResult]]:
        items = sorted(element[1], key=lambda kv: _key_order(kv[0]))
        for start in range(0, len(items), self._batch_size):
            chunk = items[start:start + self._batch_size]
            results = self._handler.run_inference([x for _, x in chunk], self._model)
            for (key, _), result in zip(chunk, results):
                yield key, result


class BatchInference(beam.PTransform):
    """``(key, example)`` -> ``(key, PredictionResult)`` like Beam's RunInference over a
    KeyedModelHandler, but in batches that depend only on the keys (:func:`batch_index`
    for ``ceil(size_hint / batch_size)`` batches; a bucket over ``batch_size`` runs in
    key-ordered chunks), so results are the same on every runner."""

    def __init__(self, handler: ModelHandler, batch_size: int, size_hint: int):
        super().__init__()
        self._handler = handler
        self._batch_size = int(batch_size)
        self._num_batches = max(1, math.ceil(max(int(size_hint), 1) / self._batch_size))

    def expand(self, pcoll):
        return (pcoll
                | "BatchKey" >> beam.Map(
                    lambda kv, b, n: (batch_index(kv[0], b, n), kv),
                    self._batch_size, self._num_batches)
                | "GroupBatches" >> beam.GroupByKey()
                | "Infer" >> beam.ParDo(_BatchInferenceFn(self._handler, self._batch_size)))
