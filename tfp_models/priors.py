"""Priors p(z) of the hybrid model's latent.

Each prior maps standard normal *prior noise* [N, noise_dim] to latents z [N, d]
(:meth:`from_noise`, reparameterized in the prior's own weights) and scores latents
(:meth:`log_prob`, nats, summed over the last axis of z [..., d]). Passing the noise in
keeps a training step independent of how a batch is split over replicas.

- ``standard``: p(z) = N(0, I), the paper's prior; noise_dim = d and z = noise.
- ``mixture``: a learned mixture of K diagonal Gaussians (a deviation from the paper),
  p(z) = sum_k pi_k N(z; m_k, diag s_k^2), trained with the rest of the model through
  the ELBO's E_q[ln p(z)] term (so it fits the aggregate posterior by maximum
  likelihood). noise_dim = d + 1: the first d coordinates e give z = m_k + s_k * e, the
  last one u chooses the component k by inverse-CDF sampling of pi at Phi(u). The choice
  of k is not differentiable; z is differentiable in m_k and s_k.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_models.posteriors import standard_normal_log_prob

tfd = tfp.distributions

PRIORS = ("standard", "mixture")
_MIN_SCALE = 1e-3


class StandardNormalPrior(keras.layers.Layer):
    """p(z) = N(0, I); no weights. z = noise."""

    is_standard = True

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim

    @property
    def noise_dim(self) -> int:
        return self.latent_dim

    def from_noise(self, noise: tf.Tensor) -> tf.Tensor:
        """z [N, d] from standard normal noise [N, d] (the identity)."""
        return noise

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        """ln p(z) [...] nats for z [..., d]."""
        return standard_normal_log_prob(z)


class MixturePrior(StandardNormalPrior):
    """A learned mixture of ``num_components`` diagonal Gaussians over z [d].

    Weights: ``logits`` [K] (pi = softmax(logits), initially uniform), ``locs`` [K, d]
    (initially N(0, 1) draws of a fixed seed), ``raw_scales`` [K, d] with
    s = softplus(raw) + 1e-3 (initially s = 1)."""

    is_standard = False

    def __init__(self, latent_dim: int, num_components: int, seed: int = 0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if num_components < 1:
            raise ValueError(f"num_components={num_components}: expected >= 1")
        self.num_components = num_components
        k, d = num_components, latent_dim
        self.logits = self.add_weight(shape=(k,), initializer="zeros", name="logits")
        self.locs = self.add_weight(
            shape=(k, d), initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed),
            name="locs")
        self.raw_scales = self.add_weight(
            shape=(k, d), initializer=keras.initializers.Constant(
                float(np.log(np.expm1(1.0 - _MIN_SCALE)))), name="raw_scales")

    @property
    def noise_dim(self) -> int:
        return self.latent_dim + 1

    @property
    def scales(self) -> tf.Tensor:
        """s [K, d] > 0."""
        return tf.nn.softplus(self.raw_scales) + _MIN_SCALE

    def assign(self, weights: np.ndarray, locs: np.ndarray, scales: np.ndarray) -> None:
        """Sets pi [K] (positive, summing to 1), m [K, d] and s [K, d] (each > 1e-3)."""
        self.logits.assign(np.log(weights).astype(np.float32))
        self.locs.assign(np.asarray(locs, np.float32))
        raw = np.log(np.expm1(np.maximum(np.asarray(scales) - _MIN_SCALE, 1e-6)))
        self.raw_scales.assign(raw.astype(np.float32))

    def distribution(self) -> tfd.Distribution:
        """The mixture as a TFP distribution with event shape [d]."""
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=self.logits),
            tfd.MultivariateNormalDiag(loc=self.locs, scale_diag=self.scales))

    def components(self, noise: tf.Tensor) -> tf.Tensor:
        """The component index [N] int32 chosen by the last noise coordinate."""
        u = tfd.Normal(0.0, 1.0).cdf(noise[:, self.latent_dim])
        cdf = tf.math.cumsum(tf.nn.softmax(self.logits))
        k = tf.searchsorted(tf.broadcast_to(cdf[None], (tf.shape(u)[0], self.num_components)),
                            u[:, None], side="right")[:, 0]
        return tf.minimum(tf.cast(k, tf.int32), self.num_components - 1)

    def from_noise(self, noise: tf.Tensor) -> tf.Tensor:
        """z = m_k + s_k * e [N, d] from noise [N, d + 1] = (e, u)."""
        # A one-hot product rather than tf.gather: dense gradients for every optimizer
        # and all-reduce.
        one_hot = tf.one_hot(self.components(noise), self.num_components, dtype=noise.dtype)
        return one_hot @ self.locs + (one_hot @ self.scales) * noise[:, :self.latent_dim]

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        return self.distribution().log_prob(z)


def make_prior(kind: str, latent_dim: int, num_components: int = 10) -> StandardNormalPrior:
    """The prior by name: 'standard' or 'mixture'."""
    if kind == "standard":
        return StandardNormalPrior(latent_dim, name="prior")
    if kind == "mixture":
        return MixturePrior(latent_dim, num_components, name="prior")
    raise ValueError(f"unknown prior {kind!r}; expected one of {PRIORS}")
