"""The invertible feature map f_psi: a multi-scale Real NVP (Dinh et al., 2017) as TFP bijectors.

Images enter dequantized, x in [0, 1)^(H, W, C), as float32 tensors [N, H, W, C]; features
leave with the same shape. Every step is a ``tfp.bijectors.Bijector`` on event rank 3
whose ``forward_log_det_jacobian(x, event_ndims=3)`` has shape [N] and is in nats.

Two rules from Keras 3 / TFP shape this module:

* Keras 3 does not track variables created inside TFP objects, so every weight lives in a
  Keras layer (:class:`FeatureFlowNets` owns them all) and the bijectors are thin wrappers
  that reference those layers.
* TFP caches forward/inverse results by input-tensor identity; after a weight update a
  cached result is stale. The steps here do not cache (each public call sees a fresh
  ``tf.identity`` of its input), and :meth:`FlowStep.forward_and_log_det` computes the
  output and the log-det in one pass so training never runs a coupling net twice.
"""
from __future__ import annotations

import abc
import math
from typing import Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_models.networks import ResNetCouplingNet, track_layer

tfb = tfp.bijectors

LOGIT_ALPHA = 0.05
_EVENT_NDIMS = 3


def _sum_event(t: tf.Tensor) -> tf.Tensor:
    """Sums a [N, H, W, C] tensor over its event dims -> [N]."""
    return tf.reduce_sum(t, axis=[1, 2, 3])


class FlowStep(tfb.Bijector, metaclass=abc.ABCMeta):
    """A bijector on image batches [N, H, W, C] that computes its output and log-det in
    one pass and never caches (see the module docstring)."""

    def __init__(self, name: str, is_constant_jacobian: bool = False):
        super().__init__(
            forward_min_event_ndims=_EVENT_NDIMS,
            is_constant_jacobian=is_constant_jacobian,
            validate_args=False,
            parameters={"name": name},
            name=name)

    @abc.abstractmethod
    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (y = f(x) [N, H, W, C], log |det df/dx| [N] in nats)."""

    @abc.abstractmethod
    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (x = f^-1(y) [N, H, W, C], log |det df^-1/dy| [N] in nats)."""

    # TFP's hooks, all served by the single-pass methods.
    def _forward(self, x):
        return self.forward_and_log_det(x)[0]

    def _inverse(self, y):
        return self.inverse_and_log_det(y)[0]

    def _forward_log_det_jacobian(self, x):
        return self.forward_and_log_det(x)[1]

    def _inverse_log_det_jacobian(self, y):
        return self.inverse_and_log_det(y)[1]

    # Public entry points without TFP's identity cache.
    def forward(self, x, name="forward", **kwargs):
        return super().forward(tf.identity(x), name=name, **kwargs)

    def inverse(self, y, name="inverse", **kwargs):
        return super().inverse(tf.identity(y), name=name, **kwargs)

    def forward_log_det_jacobian(self, x, event_ndims=None, name="forward_log_det_jacobian",
                                 **kwargs):
        return super().forward_log_det_jacobian(
            tf.identity(x), event_ndims=event_ndims, name=name, **kwargs)

    def inverse_log_det_jacobian(self, y, event_ndims=None, name="inverse_log_det_jacobian",
                                 **kwargs):
        return super().inverse_log_det_jacobian(
            tf.identity(y), event_ndims=event_ndims, name=name, **kwargs)


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
        net_in = tf.concat([x * m, tf.broadcast_to(m, tf.shape(x[..., :1]))], axis=-1)
        s, t = self.net(net_in)
        return m, s * (1.0 - m), t * (1.0 - m)

    def forward_and_log_det(self, x):
        if self.mask == "checkerboard":
            _, s, t = self._checker_params(x)
            return x * tf.exp(s) + t, _sum_event(s)
        a, b = self._split_channels(x)
        s, t = self.net(a)
        return self._join_channels(a, b * tf.exp(s) + t), _sum_event(s)

    def inverse_and_log_det(self, y):
        if self.mask == "checkerboard":
            _, s, t = self._checker_params(y)  # y * mask == x * mask
            return (y - t) * tf.exp(-s), -_sum_event(s)
        a, b = self._split_channels(y)
        s, t = self.net(a)
        return self._join_channels(a, (b - t) * tf.exp(-s)), -_sum_event(s)


class ActNorm(FlowStep):
    """Bijector view of an :class:`ActNormLayer`; log-det = H * W * sum(log_scale)."""

    def __init__(self, layer: ActNormLayer, name: str):
        super().__init__(name=name)
        self.layer = layer
        self.pending_data_init = False

    def _log_det(self, x):
        hw = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype)
        return tf.fill(tf.shape(x)[:1], hw * tf.reduce_sum(self.layer.log_scale))

    def forward_and_log_det(self, x):
        if self.pending_data_init:
            self.layer.initialize_from(x)
            self.pending_data_init = False
        return (x + self.layer.bias) * tf.exp(self.layer.log_scale), self._log_det(x)

    def inverse_and_log_det(self, y):
        return y * tf.exp(-self.layer.log_scale) - self.layer.bias, -self._log_det(y)


class Squeeze(FlowStep):
    """Space-to-depth by 2: [N, H, W, C] -> [N, H/2, W/2, 4C]; a permutation, log-det 0."""

    def __init__(self, name: str = "squeeze"):
        super().__init__(name=name, is_constant_jacobian=True)

    def forward_and_log_det(self, x):
        return tf.nn.space_to_depth(x, 2), tf.zeros(tf.shape(x)[:1], x.dtype)

    def inverse_and_log_det(self, y):
        return tf.nn.depth_to_space(y, 2), tf.zeros(tf.shape(y)[:1], y.dtype)


class Unsqueeze(Squeeze):
    """Depth-to-space by 2, the inverse of :class:`Squeeze`; log-det 0."""

    def __init__(self, name: str = "unsqueeze"):
        super().__init__(name=name)

    def forward_and_log_det(self, x):
        return super().inverse_and_log_det(x)

    def inverse_and_log_det(self, y):
        return super().forward_and_log_det(y)


class FactorOut(FlowStep):
    """Multi-scale factor-out: the first half of the channels leaves unchanged (it is a
    final feature), the second half goes through ``inner`` (the next scale)."""

    def __init__(self, inner: FlowStep, name: str = "factor_out"):
        super().__init__(name=name)
        self.inner = inner

    def forward_and_log_det(self, x):
        half = x.shape[-1] // 2
        h, ldj = self.inner.forward_and_log_det(x[..., half:])
        return tf.concat([x[..., :half], h], axis=-1), ldj

    def inverse_and_log_det(self, y):
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

    def forward_and_log_det(self, x):
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        log_p, log_1mp = tf.math.log(p), tf.math.log1p(-p)
        return log_p - log_1mp, _sum_event(self._log_scale - log_p - log_1mp)

    def inverse_and_log_det(self, y):
        x = (tf.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)
        return x, _sum_event(tf.math.log_sigmoid(y) + tf.math.log_sigmoid(-y) - self._log_scale)


def logit_preprocess(alpha: float = LOGIT_ALPHA) -> LogitPreprocess:
    """The logit preprocessing step (see :class:`LogitPreprocess`)."""
    return LogitPreprocess(alpha)


class Sequential(FlowStep):
    """Composition of steps, applied first to last in the forward direction."""

    def __init__(self, steps: Sequence[FlowStep], name: str):
        super().__init__(name=name)
        self.steps = list(steps)

    def forward_and_log_det(self, x):
        total = tf.zeros(tf.shape(x)[:1], x.dtype)
        for step in self.steps:
            x, ldj = step.forward_and_log_det(x)
            total += ldj
        return x, total

    def inverse_and_log_det(self, y):
        total = tf.zeros(tf.shape(y)[:1], y.dtype)
        for step in reversed(self.steps):
            y, ldj = step.inverse_and_log_det(y)
            total += ldj
        return y, total


# --------------------------------------------------------------------------- the feature flow


class FeatureFlowNets(keras.layers.Layer):
    """Owns every weight of a feature flow (so ``model.trainable_variables`` and
    checkpoints see them); the :class:`FeatureFlow` bijector references these layers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coupling_nets: list[ResNetCouplingNet] = []
        self.actnorms: list[ActNormLayer] = []

    def add(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        """Registers a sub-layer (as an attribute too, so tf.train.Checkpoint sees it)."""
        track_layer(self, layer)
        kind = self.actnorms if isinstance(layer, ActNormLayer) else self.coupling_nets
        kind.append(layer)
        return layer

    def call(self, inputs):  # pragma: no cover - the layer is a container, not a computation
        raise TypeError("FeatureFlowNets holds weights; call FeatureFlow.forward_and_log_det")


class FeatureFlow(Sequential):
    """The whole feature map f: logit preprocessing, then the multi-scale Real NVP.

    ``forward(x)`` maps images in [0, 1)^(H, W, C) ([N, H, W, C] float32) to features of
    the same shape; ``forward_and_log_det(x)`` also returns log |det df/dx| [N] in nats.
    ``nets`` is the Keras layer that owns the weights: attach it to a Keras model.
    """

    def __init__(self, steps: Sequence[FlowStep], nets: FeatureFlowNets,
                 image_shape: tuple[int, int, int], num_scales: int):
        super().__init__(steps, name="feature_flow")
        self.nets = nets
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_scales = num_scales

    @property
    def trainable_variables(self):
        return self.nets.trainable_variables

    @property
    def actnorm_steps(self) -> list[ActNorm]:
        found = []

        def visit(step):
            if isinstance(step, ActNorm):
                found.append(step)
            for child in getattr(step, "steps", []):
                visit(child)
            if isinstance(step, FactorOut):
                visit(step.inner)

        visit(self)
        return found

    def data_init(self, x: tf.Tensor) -> None:
        """Data-dependent ActNorm init from a batch x [N, H, W, C] in [0, 1) (eager; a
        no-op for layers already initialised, e.g. after a checkpoint restore)."""
        for step in self.actnorm_steps:
            step.pending_data_init = True
        try:
            self.forward_and_log_det(tf.convert_to_tensor(x, tf.float32))
        finally:
            for step in self.actnorm_steps:
                step.pending_data_init = False

    def build_weights(self) -> None:
        """Creates every variable by running a dummy batch (no ActNorm init)."""
        self.forward_and_log_det(tf.fill((1,) + self.image_shape, 0.5))


def check_squeezable(image_shape: Sequence[int], num_scales: int) -> None:
    """Raises ValueError unless H and W are divisible by 2^(num_scales - 1)."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    h, w, c = (int(d) for d in image_shape)
    factor = 2 ** max(num_scales - 1, 0)
    if h % factor or w % factor or min(h, w, c) < 1:
        raise ValueError(
            f"image size {h}x{w} cannot be squeezed {num_scales - 1} times by a "
            f"{num_scales}-scale flow: height and width must be divisible by {factor} "
            f"(use fewer scales, or pad/crop the data to a multiple of {factor})")


def build_feature_flow(image_shape: Sequence[int], num_scales: int, hidden_channels: int,
                       num_res_blocks: int, *, use_actnorm: bool = True,
                       logit_alpha: float = LOGIT_ALPHA,
                       couplings_per_scale: int = 3,
                       final_couplings: int = 4,
                       kernel_size: int = 3) -> FeatureFlow:
    """Builds the multi-scale Real NVP feature map f for images of ``image_shape``.

    Per scale (Real NVP section 3.6): ``couplings_per_scale`` checkerboard couplings,
    squeeze, ``couplings_per_scale`` channel-wise couplings, factor out half of the
    channels; the last scale has ``final_couplings`` checkerboard couplings. Each coupling
    is preceded by an ActNorm when ``use_actnorm``. After a factor-out the output is
    un-squeezed, so the features have the image's shape. ``num_scales=0`` gives the logit
    preprocessing alone (the feature space of the no-flow variants). ``kernel_size`` is
    the coupling nets' convolution size; with 1 a coupling conditions only on its own
    (squeezed) position, so f couples pixels within 2^s x 2^s blocks at most, s =
    num_scales - 1 (a local flow: image-level structure is left to the latent).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if num_scales < 0:
        raise ValueError(f"num_scales must be >= 0, got {num_scales}")
    check_squeezable(image_shape, num_scales)
    nets = FeatureFlowNets(name="feature_flow_nets")
    counter = iter(range(10**6))

    def coupling(channels_in: int, channels_out: int, mask: str, parity: int) -> list[FlowStep]:
        i = next(counter)
        steps: list[FlowStep] = []
        if use_actnorm:
            layer = nets.add(ActNormLayer(channels_in, name=f"actnorm_{i}"))
            steps.append(ActNorm(layer, name=f"actnorm_{i}"))
        net = nets.add(ResNetCouplingNet(
            channels_out, hidden_channels, num_res_blocks, kernel_size,
            name=f"coupling_net_{i}"))
        steps.append(AffineCoupling(net, mask, parity, name=f"coupling_{i}"))
        return steps

    def scale(level: int, channels: int) -> FlowStep:
        steps: list[FlowStep] = []
        if level == num_scales - 1:
            for k in range(final_couplings):
                steps += coupling(channels, channels, "checkerboard", k % 2)
            return Sequential(steps, name=f"scale_{level}")
        for k in range(couplings_per_scale):
            steps += coupling(channels, channels, "checkerboard", k % 2)
        steps.append(Squeeze(name=f"squeeze_{level}"))
        c4 = 4 * channels
        for k in range(couplings_per_scale):
            steps += coupling(c4, c4 - c4 // 2, "channel", k % 2)
        steps.append(FactorOut(scale(level + 1, c4 - c4 // 2), name=f"factor_out_{level}"))
        steps.append(Unsqueeze(name=f"unsqueeze_{level}"))
        return Sequential(steps, name=f"scale_{level}")

    steps: list[FlowStep] = [logit_preprocess(logit_alpha)]
    if num_scales > 0:
        steps.append(scale(0, int(image_shape[-1])))
    flow = FeatureFlow(steps, nets, tuple(image_shape), num_scales)
    flow.build_weights()
    return flow


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
