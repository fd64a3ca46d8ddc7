"""Keras 3 networks of the hybrid model: coupling nets, encoder, decoder, discriminator.

Keras 3 tracks layers kept in Python lists for its own variable lists, but TensorFlow's
checkpoint graph only sees layers held as attributes; :func:`track_layer` does both, so
``tf.train.Checkpoint(model=...)`` saves every weight.

Compute precision (``compute_dtype``, one of :data:`COMPUTE_DTYPES`): the coupling nets,
encoder, decoder and discriminator run their convolutions and dense layers in
``compute_dtype`` under Keras's ``mixed_bfloat16`` policy for ``'bfloat16'`` (variables
stay float32, so checkpoints are the same either way), except each network's last layer,
which is float32 (it takes the bfloat16 activations cast up): a bfloat16 output layer
would quantize the decoder's mean to ~1/256 of its size, coarser than the smallest decoder
sigma (e^-4 for MNIST's background); with every layer in bfloat16 the quickstart model
was 0.28 bits/dim behind float32 after 200 steps (experiments/results/bf16_check*.md). Every network takes float32
inputs and returns float32 outputs: the casts are at the network's edges, and what follows
a network (the coupling's affine map and its log-determinant, the decoder's biases and
Gaussian, the losses) is float32. Spectral normalization's power iteration runs on the
float32 kernel. The posterior's small dense nets (:mod:`tfp_models.posterior_networks`)
are float32 always.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

COMPUTE_DTYPES = ("float32", "bfloat16")


def layer_policy(compute_dtype: str) -> str:
    """The Keras dtype policy of the conv and dense layers computing in ``compute_dtype``:
    'float32', or 'mixed_bfloat16' (float32 variables, bfloat16 inputs and arithmetic)."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    return "float32" if compute_dtype == "float32" else "mixed_bfloat16"


def track_layer(owner: keras.layers.Layer, layer: keras.layers.Layer, name: str | None = None):
    """Sets ``layer`` as an attribute of ``owner`` (checkpoint-visible) and returns it."""
    setattr(owner, f"_tracked_{name or layer.name}", layer)
    return layer


class ResNetCouplingNet(keras.layers.Layer):
    """The s/t network of an affine coupling: a ResNet of k x k convolutions (k =
    ``kernel_size``, 3 by default; 1 makes the coupling see only its own position).

    ``call(h)`` with h [N, H, W, C_in] returns (s, t), each [N, H, W, out_channels], with
    s = scale * tanh(raw_s) bounded per channel. The last convolution is zero-initialised,
    so a fresh coupling is the identity (s = t = 0). The convolutions compute in
    ``compute_dtype``; s and t are float32 (module docstring).
    """

    def __init__(self, out_channels: int, hidden_channels: int, num_res_blocks: int,
                 kernel_size: int = 3, compute_dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.out_channels = out_channels
        self.kernel_size = k = kernel_size
        policy = layer_policy(compute_dtype)
        self.in_conv = keras.layers.Conv2D(hidden_channels, k, padding="same", dtype=policy)
        self.res_convs = [
            (track_layer(self, keras.layers.Conv2D(hidden_channels, k, padding="same",
                                                   dtype=policy), f"res{i}_a"),
             track_layer(self, keras.layers.Conv2D(hidden_channels, k, padding="same",
                                                   dtype=policy), f"res{i}_b"))
            for i in range(num_res_blocks)]
        self.out_conv = keras.layers.Conv2D(
            2 * out_channels, k, padding="same",
            kernel_initializer="zeros", bias_initializer="zeros", dtype="float32")

    def build(self, input_shape):
        self.s_scale = self.add_weight(
            name="s_scale", shape=(self.out_channels,), initializer="ones")

    def call(self, h):
        h = self.in_conv(tf.cast(h, self.in_conv.compute_dtype))
        for conv_a, conv_b in self.res_convs:
            h = h + conv_b(tf.nn.relu(conv_a(tf.nn.relu(h))))
        out = tf.cast(self.out_conv(tf.nn.relu(h)), tf.float32)
        raw_s, t = tf.split(out, 2, axis=-1)
        return self.s_scale * tf.tanh(raw_s), t



def downsample_steps(image_shape, max_steps: int) -> int:
    """How many stride-2 halvings (at most ``max_steps``) H and W both allow."""
    h, w = int(image_shape[0]), int(image_shape[1])
    k = 0
    while k < max_steps and h % 2 == 0 and w % 2 == 0 and h > 4 and w > 4:
        h, w, k = h // 2, w // 2, k + 1
    return k


class ResidualBlock(keras.layers.Layer):
    """h + conv(relu(conv(relu(h)))), channel count kept; the convolutions use the block's
    dtype policy."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.conv_a = keras.layers.Conv2D(channels, 3, padding="same", dtype=self.dtype_policy)
        self.conv_b = keras.layers.Conv2D(channels, 3, padding="same", dtype=self.dtype_policy)

    def call(self, h):
        return h + self.conv_b(tf.nn.relu(self.conv_a(tf.nn.relu(h))))


class ConvEncoder(keras.layers.Layer):
    """Residual conv encoder: images in [0, 1) [N, H, W, C] -> a vector [N, out_dim].

    The output holds the posterior's parameters (and any context for flow posteriors).
    With ``binarize_inputs`` the images are first binarized (:func:`binarize_dequantized`):
    the encoder then sees exactly the binary image the Bernoulli decoder scores (binarized
    in float32, before the cast to ``compute_dtype``). The output is float32.
    """

    def __init__(self, out_dim: int, image_shape, base_channels: int, num_downsamples: int = 2,
                 binarize_inputs: bool = False, compute_dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.binarize_inputs = binarize_inputs
        policy = layer_policy(compute_dtype)
        self.stem = keras.layers.Conv2D(base_channels, 3, padding="same", dtype=policy)
        steps = downsample_steps(image_shape, num_downsamples)
        self.stages = []
        channels = base_channels
        for i in range(steps):
            block = track_layer(self, ResidualBlock(channels, dtype=policy), f"res_{i}")
            channels *= 2
            down = track_layer(self, keras.layers.Conv2D(channels, 3, strides=2, padding="same",
                                                         dtype=policy), f"down_{i}")
            self.stages.append((block, down))
        self.last_block = ResidualBlock(channels, dtype=policy)
        self.flatten = keras.layers.Flatten(dtype=policy)
        self.head = keras.layers.Dense(out_dim, dtype="float32")

    def call(self, x):
        if self.binarize_inputs:  # q(z|b) of the binarized image b (Bernoulli decoder)
            x = binarize_dequantized(x)
        h = self.stem(tf.cast(2.0 * x - 1.0, self.stem.compute_dtype))
        for block, down in self.stages:
            h = down(tf.nn.relu(block(h)))
        h = tf.nn.relu(self.last_block(h))
        return tf.cast(self.head(self.flatten(h)), tf.float32)


def binarize_dequantized(x: tf.Tensor) -> tf.Tensor:
    """Binary images b [N, H, W, C] in {0, 1} from dequantized images x~ = (x + u) / 256
    (x uint8 pixel values, u ~ U[0, 1) the dequantization noise): b = 1[u < x / 255].

    So b ~ Bernoulli(x / 255) per pixel, drawn with the noise the pipeline already supplies
    (a fresh u per training step: dynamic binarization; u = 0.5, the mid-bin
    dequantization, thresholds at x >= 128). Reads x = floor(256 x~) and u = 256 x~ - x
    back exactly (256 is a power of two); only u within float32 rounding of 1 (about
    2^-17 for x >= 128, once per ~10^5 pixels) is read as the next bin with u = 0. Pixels
    0 and 255 stay 0 and 1."""
    scaled = x * 256.0
    level = tf.floor(scaled)
    u = scaled - level
    return tf.cast(u < level / 255.0, x.dtype)


class _DecoderTrunk:
    """The dense projection and residual up-sampling stages shared by the decoders:
    z [N, d] float32 -> [N, H, W, out_channels] float32, computed in ``compute_dtype``."""

    def _build_trunk(self, image_shape, base_channels: int, num_upsamples: int,
                     out_channels: int, compute_dtype: str) -> None:
        h, w, _ = (int(d) for d in image_shape)
        steps = downsample_steps(image_shape, num_upsamples)
        policy = layer_policy(compute_dtype)
        self.start_shape = (h // 2 ** steps, w // 2 ** steps, base_channels * 2 ** steps)
        self.project = keras.layers.Dense(
            self.start_shape[0] * self.start_shape[1] * self.start_shape[2], dtype=policy)
        self.stages = []
        channels = self.start_shape[2]
        for i in range(steps):
            block = track_layer(self, ResidualBlock(channels, dtype=policy), f"res_{i}")
            channels //= 2
            up = track_layer(self, keras.layers.Conv2DTranspose(
                channels, 4, strides=2, padding="same", dtype=policy), f"up_{i}")
            self.stages.append((block, up))
        self.last_block = ResidualBlock(channels, dtype=policy)
        self.out = keras.layers.Conv2D(out_channels, 3, padding="same", dtype="float32")

    def _trunk(self, z):
        h = self.project(tf.cast(z, self.project.compute_dtype))
        h = tf.reshape(h, (-1,) + self.start_shape)
        for block, up in self.stages:
            h = up(tf.nn.relu(block(h)))
        return tf.cast(self.out(tf.nn.relu(self.last_block(h))), tf.float32)


class ConvDecoder(_DecoderTrunk, keras.layers.Layer):
    """Residual conv decoder: z [N, d] -> (mu, log_sigma), each [N, H, W, C].

    mu = mu_raw(z) + mu_bias and log_sigma = min_log_sigma + softplus(raw(z) + sigma_bias),
    with per-dimension biases ``mu_bias`` and ``sigma_bias`` [H, W, C]; the lower bound
    keeps the Gaussian from collapsing. A fresh decoder has sigma ~ 1 everywhere;
    :meth:`initialize_from` moves both biases to the data's per-dimension mean and
    standard deviation, so the variance does not have to travel there one optimizer step
    at a time (for logit-pixel features of MNIST the background's log sigma is about -4).
    """

    def __init__(self, image_shape, base_channels: int, num_upsamples: int = 2,
                 min_log_sigma: float = -6.0, compute_dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        h, w, c = (int(d) for d in image_shape)
        self.min_log_sigma = min_log_sigma
        # softplus(raw + offset) = -min_log_sigma at raw = 0: a fresh decoder has sigma = 1.
        self._sigma_offset = math.log(math.expm1(-min_log_sigma))
        self._build_trunk(image_shape, base_channels, num_upsamples, 2 * c, compute_dtype)
        self.mu_bias = self.add_weight(name="mu_bias", shape=(h, w, c), initializer="zeros")
        self.sigma_bias = self.add_weight(
            name="sigma_bias", shape=(h, w, c),
            initializer=keras.initializers.Constant(self._sigma_offset))

    def _raw(self, z):
        return tf.split(self._trunk(z), 2, axis=-1)

    def call(self, z):
        mu, raw = self._raw(z)
        return mu + self.mu_bias, self.min_log_sigma + tf.nn.softplus(raw + self.sigma_bias)

    def initialize_from(self, y: tf.Tensor, z: tf.Tensor) -> None:
        """Data-dependent init: features y [N, H, W, C] of a data batch, latents z [N, d]
        (e.g. prior draws). Sets the biases so that, averaged over the batch, mu equals the
        per-dimension mean of y and log_sigma its log standard deviation (floored 0.05
        above min_log_sigma)."""
        mu_raw, raw = self._raw(z)
        mean, var = tf.nn.moments(y, axes=[0])
        target = tf.maximum(0.5 * tf.math.log(var + 1e-12) - self.min_log_sigma, 0.05)
        inv_softplus = target + tf.math.log(-tf.math.expm1(-target))
        self.mu_bias.assign(mean - tf.reduce_mean(mu_raw, axis=0))
        self.sigma_bias.assign(inv_softplus - tf.reduce_mean(raw, axis=0))


class BernoulliConvDecoder(_DecoderTrunk, keras.layers.Layer):
    """Residual conv decoder of binary images: z [N, d] -> logits [N, H, W, C] of
    p(b|z) = prod Bernoulli(b; sigmoid(logits)); logits = raw(z) + ``logit_bias`` [H, W, C]
    (same trunk as :class:`ConvDecoder`)."""

    def __init__(self, image_shape, base_channels: int, num_upsamples: int = 2,
                 compute_dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        h, w, c = (int(d) for d in image_shape)
        self._build_trunk(image_shape, base_channels, num_upsamples, c, compute_dtype)
        self.logit_bias = self.add_weight(name="logit_bias", shape=(h, w, c),
                                          initializer="zeros")

    def call(self, z):
        return self._trunk(z) + self.logit_bias

    def initialize_from(self, b: tf.Tensor, z: tf.Tensor) -> None:
        """Data-dependent init from binary images b [N, H, W, C] and latents z [N, d]: the
        logits averaged over the batch become logit(p), p the per-pixel mean of b clipped
        to [1e-3, 1 - 1e-3]."""
        p = tf.clip_by_value(tf.reduce_mean(b, axis=0), 1e-3, 1.0 - 1e-3)
        target = tf.math.log(p) - tf.math.log1p(-p)
        self.logit_bias.assign(target - tf.reduce_mean(self._trunk(z), axis=0))


def bernoulli_log_prob(b: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """ln prod Bernoulli(b; sigmoid(logits)) summed over the trailing 3 axes [N] (nats)."""
    return -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=b, logits=logits),
                          axis=[-3, -2, -1])


class Discriminator(keras.layers.Layer):
    """Conv discriminator/critic on images in [0, 1] [N, H, W, C] -> logits [N].

    With ``spectral_norm`` every conv/dense is wrapped in keras.layers.SpectralNormalization
    (the wrapper is float32 without autocasting, so the power iteration and the kernel's
    normalization are float32 whatever ``compute_dtype`` the wrapped layer computes in).
    The logits are float32.
    """

    def __init__(self, image_shape, base_channels: int, spectral_norm: bool = False,
                 num_downsamples: int = 3, compute_dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        policy = layer_policy(compute_dtype)

        def wrap(layer):
            if not spectral_norm:
                return layer
            return keras.layers.SpectralNormalization(layer, dtype="float32", autocast=False)

        self.stem = wrap(keras.layers.Conv2D(base_channels, 3, padding="same", dtype=policy))
        self.downs = []
        channels = base_channels
        for i in range(downsample_steps(image_shape, num_downsamples)):
            channels *= 2
            self.downs.append(track_layer(self, wrap(keras.layers.Conv2D(
                channels, 4, strides=2, padding="same", dtype=policy)), f"down_{i}"))
        self.flatten = keras.layers.Flatten(dtype=policy)
        self.head = wrap(keras.layers.Dense(1, dtype="float32"))
        self._inputs_dtype = keras.DTypePolicy(policy).compute_dtype

    def call(self, x, training=True):
        # training=True by default: the discriminator only runs in training steps, and
        # keras.layers.SpectralNormalization normalizes the kernel only when training.
        h = tf.cast(2.0 * x - 1.0, self._inputs_dtype)
        h = tf.nn.leaky_relu(self.stem(h, training=training), 0.2)
        for down in self.downs:
            h = tf.nn.leaky_relu(down(h, training=training), 0.2)
        logits = tf.cast(self.head(self.flatten(h), training=training), tf.float32)
        return tf.squeeze(logits, axis=-1)
