"""Per-row randomness of model samples: row i of a batch is a function of its own int64
row seed only, so a sample is the same whatever the batch it is drawn in, in
``pipeline.evaluate``, the FID job and the export's ``sample`` signature alike.

A run's seed s gives rows s * 2^31 + offset + i (:func:`sample_row_seeds`); each row seed
keys its noise streams (stream 1: the prior's noise, stream 2: the flow's eps) through
:func:`row_noise`.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

# Row seeds of model samples: seed * SAMPLE_SEED_STRIDE + offset + i.
SAMPLE_SEED_STRIDE = 1 << 31


def sample_row_seeds(seed: int, offset: int, num: int) -> np.ndarray:
    """int64 row seeds [num]: seed * 2^31 + offset + i."""
    return np.int64(seed) * SAMPLE_SEED_STRIDE + offset + np.arange(num, dtype=np.int64)


def row_noise(seeds: tf.Tensor, shape: tuple, stream: int,
              draw=tf.random.stateless_normal) -> tf.Tensor:
    """Noise [N, *shape] (standard normal unless ``draw`` says otherwise, e.g.
    tf.random.stateless_uniform), row i keyed on (seeds[i], stream) only: the same as
    ``draw((1,) + shape, seed=(seeds[i], stream))[0]``, whatever the batch."""
    seeds = tf.cast(seeds, tf.int64)
    return tf.map_fn(
        lambda s: draw(shape, seed=tf.stack([s, tf.constant(stream, tf.int64)])),
        seeds, fn_output_signature=tf.TensorSpec(shape, tf.float32))
