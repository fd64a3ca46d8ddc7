"""Keras 3 networks of the hybrid model: coupling nets, encoder, decoder, discriminator.

Keras 3 tracks layers kept in Python lists for its own variable lists, but TensorFlow's
checkpoint graph only sees layers held as attributes; :func:`track_layer` does both, so
``tf.train.Checkpoint(model=...)`` saves every weight.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def track_layer(owner: keras.layers.Layer, layer: keras.layers.Layer, name: str | None = None):
    """Sets ``layer`` as an attribute of ``owner`` (checkpoint-visible) and returns it."""
    setattr(owner, f"_tracked_{name or layer.name}", layer)
    return layer


class ResNetCouplingNet(keras.layers.Layer):
    """The s/t network of an affine coupling: a ResNet of 3x3 convolutions.

    ``call(h)`` with h [N, H, W, C_in] returns (s, t), each [N, H, W, out_channels], with
    s = scale * tanh(raw_s) bounded per channel. The last convolution is zero-initialised,
    so a fresh coupling is the identity (s = t = 0).
    """

    def __init__(self, out_channels: int, hidden_channels: int, num_res_blocks: int, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = out_channels
        self.in_conv = keras.layers.Conv2D(hidden_channels, 3, padding="same")
        self.res_convs = [
            (track_layer(self, keras.layers.Conv2D(hidden_channels, 3, padding="same"), f"res{i}_a"),
             track_layer(self, keras.layers.Conv2D(hidden_channels, 3, padding="same"), f"res{i}_b"))
            for i in range(num_res_blocks)]
        self.out_conv = keras.layers.Conv2D(
            2 * out_channels, 3, padding="same",
            kernel_initializer="zeros", bias_initializer="zeros")

    def build(self, input_shape):
        self.s_scale = self.add_weight(
            name="s_scale", shape=(self.out_channels,), initializer="ones")

    def call(self, h):
        h = self.in_conv(h)
        for conv_a, conv_b in self.res_convs:
            h = h + conv_b(tf.nn.relu(conv_a(tf.nn.relu(h))))
        raw_s, t = tf.split(self.out_conv(tf.nn.relu(h)), 2, axis=-1)
        return self.s_scale * tf.tanh(raw_s), t


