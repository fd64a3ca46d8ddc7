"""The Real NVP steps: affine coupling, ActNorm, squeeze, multi-scale factor-out, logit.

Each is a :class:`~tfp_models.flows.base.FlowStep` on [N, H, W, C] float32 with log-dets
[N] in nats; the weights live in Keras layers (:class:`ActNormLayer`, the coupling nets of
:mod:`tfp_models.networks`) that the steps reference.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfp_models.flows.base import FlowStep, sum_event
from tfp_models.networks import ResNetCouplingNet

LOGIT_ALPHA = 0.05
# Evaluate a 1x1 checkerboard coupling's net on one zero pixel (AffineCoupling's docstring);
# False: on the whole masked image, as for k x k nets (the benchmarks' baseline). Read when
# a step is traced.
CONSTANT_1X1_CHECKERBOARD = True


# --------------------------------------------------------------------------- Keras layers


class ActNormLayer(keras.layers.Layer):
    """Per-channel affine y = (x + bias) * exp(log_scale) (Glow's ActNorm).

    Data-dependent init: :meth:`initialize_from` sets bias = -mean and
    log_scale = -log(std) from a batch, once (``initialized`` is checkpointed).
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=(channels,), initializer="zeros")
        self.initialized = self.add_weight(
            name="initialized", shape=(), initializer="zeros", trainable=False)

    def initialize_from(self, x: tf.Tensor, eps: float = 1e-6) -> None:
        """Sets the statistics from x [N, H, W, C] unless already initialised (eager only)."""
        if float(keras.ops.convert_to_numpy(self.initialized)) > 0.5:
            return
        mean, var = tf.nn.moments(x, axes=[0, 1, 2])
        self.bias.assign(-mean)
        self.log_scale.assign(-0.5 * tf.math.log(var + eps))
        self.initialized.assign(1.0)


# --------------------------------------------------------------------------- bijectors


class AffineCoupling(FlowStep):
    """Real NVP affine coupling y_b = x_b * exp(s(x_a)) + t(x_a), identity on x_a.

    ``mask='checkerboard'``: x_a are the pixels with (row + col) % 2 == parity (all
    channels); the net sees x * mask and the mask itself. ``mask='channel'``: x_a is one
    half of the channels (the first half for parity 0, the second for parity 1).

    A checkerboard coupling whose net has 1x1 kernels is a constant affine map: at every
    pixel of x_b the net sees only that pixel's input, (x * mask, mask) = (0, 0), so s and t
    there are one vector each, net(0), whatever x is (and 0 on x_a). Its forward pass
    evaluates the net once, on a single zero pixel, instead of on the whole image
    (:data:`CONSTANT_1X1_CHECKERBOARD`; the same values up to float rounding, tested against
    the whole-image evaluation).
    """

    def __init__(self, net: ResNetCouplingNet, mask: str, parity: int, name: str):
        if mask not in ("checkerboard", "channel"):
            raise ValueError(f"coupling mask must be 'checkerboard' or 'channel', got {mask!r}")
        super().__init__(name=name)
        self.net = net
        self.mask = mask
        self.parity = parity

    def _checkerboard(self, x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        rows = tf.range(shape[1])[:, None]
        cols = tf.range(shape[2])[None, :]
        board = tf.cast(tf.equal((rows + cols) % 2, self.parity), x.dtype)
        return board[None, :, :, None]

    def _split_channels(self, x):
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return (a, b) if self.parity == 0 else (b, a)

    def _join_channels(self, a, b):
        return tf.concat([a, b] if self.parity == 0 else [b, a], axis=-1)

    def _checker_params(self, x):
        m = self._checkerboard(x)
        if CONSTANT_1X1_CHECKERBOARD and self.net.kernel_size == 1:
            s, t = self.net(tf.zeros([1, 1, 1, x.shape[-1] + 1], x.dtype))  # net(0)
            shape = tf.shape(x)
            return m, tf.broadcast_to(s * (1.0 - m), shape), tf.broadcast_to(t * (1.0 - m), shape)
        net_in = tf.concat([x * m, tf.broadcast_to(m, tf.shape(x[..., :1]))], axis=-1)
        s, t = self.net(net_in)
        return m, s * (1.0 - m), t * (1.0 - m)

    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.mask == "checkerboard":
            _, s, t = self._checker_params(x)
            return x * tf.exp(s) + t, sum_event(s)
        a, b = self._split_channels(x)
        s, t = self.net(a)
        return self._join_channels(a, b * tf.exp(s) + t), sum_event(s)

    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.mask == "checkerboard":
            _, s, t = self._checker_params(y)  # y * mask == x * mask
            return (y - t) * tf.exp(-s), -sum_event(s)
        a, b = self._split_channels(y)
        s, t = self.net(a)
        return self._join_channels(a, (b - t) * tf.exp(-s)), -sum_event(s)


class ActNorm(FlowStep):
    """Bijector view of an :class:`ActNormLayer`; log-det = H * W * sum(log_scale)."""

    def __init__(self, layer: ActNormLayer, name: str):
        super().__init__(name=name)
        self.layer = layer
        self.pending_data_init = False

    def _log_det(self, x):
        hw = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype)
        return tf.fill(tf.shape(x)[:1], hw * tf.reduce_sum(self.layer.log_scale))

    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.pending_data_init:
            self.layer.initialize_from(x)
            self.pending_data_init = False
        return (x + self.layer.bias) * tf.exp(self.layer.log_scale), self._log_det(x)

    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return y * tf.exp(-self.layer.log_scale) - self.layer.bias, -self._log_det(y)


class Squeeze(FlowStep):
    """Space-to-depth by 2: [N, H, W, C] -> [N, H/2, W/2, 4C]; a permutation, log-det 0."""

    def __init__(self, name: str = "squeeze"):
        super().__init__(name=name, is_constant_jacobian=True)

    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.nn.space_to_depth(x, 2), tf.zeros(tf.shape(x)[:1], x.dtype)

    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.nn.depth_to_space(y, 2), tf.zeros(tf.shape(y)[:1], y.dtype)


class Unsqueeze(Squeeze):
    """Depth-to-space by 2, the inverse of :class:`Squeeze`; log-det 0."""

    def __init__(self, name: str = "unsqueeze"):
        super().__init__(name=name)

    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return super().inverse_and_log_det(x)

    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return super().forward_and_log_det(y)


class FactorOut(FlowStep):
    """Multi-scale factor-out: the first half of the channels leaves unchanged (it is a
    final feature), the second half goes through ``inner`` (the next scale)."""

    def __init__(self, inner: FlowStep, name: str = "factor_out"):
        super().__init__(name=name)
        self.inner = inner

    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        half = x.shape[-1] // 2
        h, ldj = self.inner.forward_and_log_det(x[..., half:])
        return tf.concat([x[..., :half], h], axis=-1), ldj

    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        half = y.shape[-1] // 2
        h, ldj = self.inner.inverse_and_log_det(y[..., half:])
        return tf.concat([y[..., :half], h], axis=-1), ldj


class LogitPreprocess(FlowStep):
    """v = logit(alpha + (1 - 2 alpha) x) for x in [0, 1) (Real NVP), with its log-det.

    Written out rather than chained from tfb.Sigmoid: TFP's stable sigmoid selects
    between exp branches with tf.where, whose unused branch overflows for |v| > ~88 and
    turns the gradient into NaN; generator samples f^-1(mu(z)) reach such features.
    tf.sigmoid / tf.math.log_sigmoid have finite gradients everywhere.
    """

    def __init__(self, alpha: float = LOGIT_ALPHA):
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
        super().__init__(name="logit_preprocess")
        self.alpha = alpha
        self._log_scale = math.log1p(-2.0 * alpha)

    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        log_p, log_1mp = tf.math.log(p), tf.math.log1p(-p)
        return log_p - log_1mp, sum_event(self._log_scale - log_p - log_1mp)

    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = (tf.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)
        return x, sum_event(tf.math.log_sigmoid(y) + tf.math.log_sigmoid(-y) - self._log_scale)


def logit_preprocess(alpha: float = LOGIT_ALPHA) -> LogitPreprocess:
    """The logit preprocessing step (see :class:`LogitPreprocess`)."""
    return LogitPreprocess(alpha)
