"""The posterior's networks on latent vectors: MADE (the IAF's autoregressive net) and the
conditional coupling net of the Real NVP posterior. Small dense layers, float32 always
(unlike the image networks of :mod:`tfp_models.networks`, which may compute in bfloat16).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class MaskedDense(keras.layers.Dense):
    """Dense layer whose kernel is multiplied by a fixed 0/1 mask [in, out] (MADE)."""

    def __init__(self, units: int, mask, **kwargs):
        super().__init__(units, **kwargs)
        self._mask_value = mask

    def build(self, input_shape):
        super().build(input_shape)
        self.mask = self.add_weight(name="mask", shape=self._mask_value.shape,
                                    initializer=keras.initializers.Constant(self._mask_value),
                                    trainable=False)

    def call(self, x):
        y = tf.matmul(x, self.kernel * self.mask) + self.bias
        return self.activation(y)


class MADE(keras.layers.Layer):
    """Masked autoencoder (Germain et al., 2015) with an unmasked context input.

    ``call(z [N, d], context [N, c])`` returns (shift, log_scale), each [N, d], where
    output i depends only on z_<i (and the context): the shift_and_log_scale_fn of
    ``tfb.MaskedAutoregressiveFlow``. Output layers are zero-initialised (identity).
    """

    def __init__(self, dim: int, hidden_units: int, **kwargs):
        super().__init__(**kwargs)
        degrees_in = np.arange(1, dim + 1)
        degrees_hidden = (np.arange(hidden_units) % max(dim - 1, 1)) + 1
        hidden_mask = (degrees_hidden[None, :] >= degrees_in[:, None]).astype("float32")
        out_mask = (degrees_in[None, :] > degrees_hidden[:, None]).astype("float32")
        self.hidden = MaskedDense(hidden_units, hidden_mask)
        self.context_proj = keras.layers.Dense(hidden_units, use_bias=False)
        self.shift = MaskedDense(dim, out_mask, kernel_initializer="zeros")
        self.log_scale = MaskedDense(dim, out_mask, kernel_initializer="zeros")

    def call(self, z, context):
        h = tf.nn.elu(self.hidden(z) + self.context_proj(context))
        return self.shift(h), self.log_scale(h)


class ConditionalCouplingNet(keras.layers.Layer):
    """The shift/log-scale net of an affine coupling on a latent vector, conditioned on a
    context (the Real NVP posterior's s_i, t_i).

    ``call(a [N, m], context [N, c])`` returns (shift, log_scale), each [N, out_dim]:
    h = elu(W_a a + W_c context + b), h = elu(dense(h)), then a zero-initialised dense
    layer gives (t, raw_s) and log_scale = s_scale * tanh(raw_s) (bounded per unit, s_scale
    learned, 1 at init). A fresh net gives shift = log_scale = 0: the identity coupling.
    """

    def __init__(self, out_dim: int, hidden_units: int, **kwargs):
        super().__init__(**kwargs)
        self.out_dim = out_dim
        self.hidden = keras.layers.Dense(hidden_units)
        self.context_proj = keras.layers.Dense(hidden_units, use_bias=False)
        self.hidden_2 = keras.layers.Dense(hidden_units)
        self.out = keras.layers.Dense(2 * out_dim, kernel_initializer="zeros",
                                      bias_initializer="zeros")
        self.s_scale = self.add_weight(name="s_scale", shape=(out_dim,), initializer="ones")

    def call(self, a, context):
        h = tf.nn.elu(self.hidden(a) + self.context_proj(context))
        h = tf.nn.elu(self.hidden_2(h))
        shift, raw_s = tf.split(self.out(h), 2, axis=-1)
        return shift, self.s_scale * tf.tanh(raw_s)
