"""Pixels <-> the flow's input: uint8 images [N, H, W, C] in [0, 255] and x~ in [0, 1).

Dequantization x~ = (x + u) / 256 maps bin k onto [k/256, (k+1)/256); quantization is its
inverse up to the noise u. These are not bijectors (no log-det): the flow's density is on
[0, 1)^D, and bits/dim of the discrete data add log 256 per dimension
(:mod:`tfp_models.metrics`).
"""
from __future__ import annotations

import tensorflow as tf


def quantize_images(x: tf.Tensor) -> tf.Tensor:
    """[0, 1] floats -> uint8 in [0, 255] (bin k covers [k/256, (k+1)/256))."""
    return tf.cast(tf.clip_by_value(tf.floor(x * 256.0), 0.0, 255.0), tf.uint8)


def dequantize_images(images: tf.Tensor, noise: tf.Tensor | None = None) -> tf.Tensor:
    """uint8 [0, 255] -> x~ = (x + u) / 256 in [0, 1); ``noise`` u in [0, 1) has the
    images' shape (None: mid-bin, u = 0.5, deterministic)."""
    x = tf.cast(images, tf.float32)
    return (x + (0.5 if noise is None else noise)) / 256.0


def straight_through_quantize(x: tf.Tensor) -> tf.Tensor:
    """Continuous images [N, H, W, C] (any real values) -> the bin centres (k + 0.5) / 256
    of the uint8 image they quantize to (clipped to k in [0, 255]), with the gradient of
    the identity (straight-through estimator, Bengio et al. 2013).

    The forward value equals ``dequantize_images(quantize_images(x))``; the backward pass
    lets gradients reach pixels that the clip or the rounding would otherwise cut.
    """
    centres = (tf.clip_by_value(tf.floor(x * 256.0), 0.0, 255.0) + 0.5) / 256.0
    return x + tf.stop_gradient(centres - x)
