"""Likelihood bookkeeping: nats <-> bits/dim, ELBO and importance-weighted bounds.

Densities here are on dequantized images x~ = (x + u) / 256 in [0, 1)^D, D = H * W * C.
The discrete data's bits/dim is then (-log p(x~) / D + ln 256) / ln 2, so a uniform
density on [0, 1)^D (log p = 0) scores exactly 8.0.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

LN2 = math.log(2.0)
LN256 = math.log(256.0)


def num_dims(image_shape: Sequence[int]) -> int:
    """D = H * W * C."""
    return int(np.prod([int(d) for d in image_shape]))


def bits_per_dim(log_prob_nats, image_shape: Sequence[int]):
    """log p(x~) in nats for a density on [0, 1)^D ([N] or scalar) -> bits/dim of the 8-bit
    data, (-log p / D + ln 256) / ln 2. Works on tensors and numpy arrays."""
    d = num_dims(image_shape)
    return (-log_prob_nats / d + LN256) / LN2


def bits_per_binary_dim(log_prob_nats, image_shape: Sequence[int]):
    """ln P(b) in nats of a binary image b ([N] or scalar) -> bits per binary pixel,
    -log2 P(b) / D (no ln 256 term: these are not bits/dim of 8-bit data). Works on
    tensors and numpy arrays."""
    return -log_prob_nats / (num_dims(image_shape) * LN2)


def decoder_bits_per_dim(log_prob_nats, image_shape: Sequence[int], binary: bool):
    """Bits/dim of ln-likelihoods in nats for either decoder: :func:`bits_per_binary_dim`
    for a Bernoulli decoder of binary images (``binary``), else :func:`bits_per_dim`."""
    if binary:
        return bits_per_binary_dim(log_prob_nats, image_shape)
    return bits_per_dim(log_prob_nats, image_shape)


def bits_per_dim_to_nats(bpd, image_shape: Sequence[int]):
    """Inverse of :func:`bits_per_dim`: bits/dim -> log p(x~) in nats on [0, 1)^D."""
    d = num_dims(image_shape)
    return -(bpd * LN2 - LN256) * d


def importance_weighted_bound(log_weights: tf.Tensor) -> tf.Tensor:
    """log (1/K) sum_k w_k for log-weights [K, N] -> [N] nats (Burda et al., 2016).

    With w_k = p(x, z_k) / q(z_k | x), z_k ~ q, this is a lower bound on log p(x) that
    tightens as K grows; K = 1 is the ELBO.
    """
    k = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(k)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean of a 1-D sample."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_and_stderr needs at least one value")
    stderr = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")
    return float(values.mean()), stderr
