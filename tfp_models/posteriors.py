"""Families of the approximate posterior q(z|x) of the hybrid model: 'diag' (diagonal
Gaussian), 'iaf' (inverse autoregressive flow), 'planar' (planar flows), 'realnvp'
(affine couplings with alternating masks), the flows conditioned on the encoder.

Each posterior reads a parameter vector [N, param_size] produced by the encoder and
draws reparameterized samples z [K, N, d] with their log-density log q(z|x) [K, N] in
nats. ``eps`` [K, N, d] is standard normal noise; passing it makes the draw
deterministic (the training input pipeline supplies it so that a step does not depend on
how the batch is split over replicas).
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_models.networks import track_layer
from tfp_models.posterior_networks import MADE, ConditionalCouplingNet

tfb = tfp.bijectors
tfd = tfp.distributions

POSTERIORS = ("diag", "iaf", "planar", "realnvp")
_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: tf.Tensor) -> tf.Tensor:
    """log N(z; 0, I) summed over the last axis (nats)."""
    return -0.5 * tf.reduce_sum(z ** 2 + _LOG_2PI, axis=-1)


class DiagonalGaussian(keras.layers.Layer):
    """q(z|x) = N(mu(x), diag sigma(x)^2); params = [mu, raw_sigma] -> 2d."""

    has_analytic_kl = True

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim

    @property
    def param_size(self) -> int:
        return 2 * self.latent_dim

    def base(self, params: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mu, sigma), each [N, d]."""
        mu, raw = params[:, :self.latent_dim], params[:, self.latent_dim:2 * self.latent_dim]
        return mu, tf.nn.softplus(raw) + 1e-4

    def _base_sample(self, params, num_samples, eps):
        mu, sigma = self.base(params)
        if eps is None:
            eps = tf.random.normal(tf.concat([[num_samples], tf.shape(mu)], 0))
        z = mu + sigma * eps
        log_q = tf.reduce_sum(tfd.Normal(mu, sigma).log_prob(z), axis=-1)
        return z, log_q

    def sample_and_log_prob(self, params, num_samples: int = 1, eps=None):
        """z [K, N, d] and log q(z|x) [K, N]."""
        return self._base_sample(params, num_samples, eps)

    def representative(self, params) -> tf.Tensor:
        """A point latent for x, [N, d]: the posterior mean (for interpolation)."""
        return self.base(params)[0]

    def analytic_kl_per_dim(self, params) -> tf.Tensor:
        """KL(q(z_j|x) || N(0, 1)) per latent dimension, [N, d] nats."""
        mu, sigma = self.base(params)
        return tfd.kl_divergence(tfd.Normal(mu, sigma), tfd.Normal(0.0, 1.0))

    def analytic_kl(self, params) -> tf.Tensor:
        """KL(q(z|x) || N(0, I)) [N] nats."""
        return tf.reduce_sum(self.analytic_kl_per_dim(params), axis=-1)


class ContextFlowPosterior(DiagonalGaussian):
    """A diagonal Gaussian q0(z_0|x) pushed through invertible steps conditioned on an
    encoder context h(x): params = [mu, raw_sigma, context] -> 2d + context_dim, and
    ln q(z|x) = ln q0(z_0|x) - sum of the steps' log |det|. Subclasses define
    ``_push(z [M, d], context [M, c]) -> (z [M, d], log-det [M])``."""

    has_analytic_kl = False

    def __init__(self, latent_dim: int, context_dim: int = 32, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.context_dim = context_dim

    @property
    def param_size(self) -> int:
        return 2 * self.latent_dim + self.context_dim

    def _push(self, z, context):
        raise NotImplementedError

    def sample_and_log_prob(self, params, num_samples: int = 1, eps=None):
        z0, log_q0 = self._base_sample(params, num_samples, eps)
        k, n = tf.shape(z0)[0], tf.shape(z0)[1]
        context = params[:, 2 * self.latent_dim:]
        context = tf.reshape(tf.broadcast_to(context, tf.concat([[k], tf.shape(context)], 0)),
                             (-1, self.context_dim))
        z, ldj = self._push(tf.reshape(z0, (-1, self.latent_dim)), context)
        return (tf.reshape(z, (k, n, self.latent_dim)),
                log_q0 - tf.reshape(ldj, (k, n)))

    def representative(self, params):
        mu, _ = self.base(params)
        return self._push(mu, params[:, 2 * self.latent_dim:])[0]


class InverseAutoregressiveFlow(ContextFlowPosterior):
    """Diagonal Gaussian followed by IAF steps (Kingma et al., 2016), each a
    ``tfb.Invert(tfb.MaskedAutoregressiveFlow)`` conditioned on an encoder context,
    with the latent order reversed between steps. params = [mu, raw_sigma, context]."""

    def __init__(self, latent_dim: int, num_steps: int = 2, hidden_units: int = 128,
                 context_dim: int = 32, **kwargs):
        super().__init__(latent_dim, context_dim, **kwargs)
        self.mades = [track_layer(self, MADE(latent_dim, hidden_units, name=f"made_{i}"))
                      for i in range(num_steps)]
        self.reverse = tfb.Permute(list(range(latent_dim))[::-1])

    def _flow(self, made):
        # MAF's inverse, x = (y - shift(y)) * exp(-log_scale(y)), runs in one parallel
        # pass; inverting the MAF makes that the sampling direction (an IAF step).
        return tfb.Invert(tfb.MaskedAutoregressiveFlow(
            shift_and_log_scale_fn=lambda y, context: made(y, context)))

    def _push(self, z, context):
        """z [M, d] -> (flowed z [M, d], sum of log-dets [M])."""
        total = tf.zeros(tf.shape(z)[:1])
        for i, made in enumerate(self.mades):
            if i > 0:
                z = self.reverse.forward(z)
            flow = self._flow(made)
            z_in = tf.identity(z)
            z = flow.forward(z_in, context=context)
            total += flow.forward_log_det_jacobian(z_in, event_ndims=1, context=context)
        return z, total


class PlanarFlows(DiagonalGaussian):
    """Diagonal Gaussian followed by amortized planar flows (Rezende & Mohamed, 2015):
    z' = z + u^ tanh(w.z + b), with u^ constrained so each step is invertible.
    params = [mu, raw_sigma, (u, w, b) per step]."""

    has_analytic_kl = False

    def __init__(self, latent_dim: int, num_steps: int = 2, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_steps = num_steps

    @property
    def param_size(self) -> int:
        return 2 * self.latent_dim + self.num_steps * (2 * self.latent_dim + 1)

    def _step_params(self, params, i):
        d = self.latent_dim
        start = 2 * d + i * (2 * d + 1)
        u, w, b = params[:, start:start + d], params[:, start + d:start + 2 * d], params[:, start + 2 * d]
        wu = tf.reduce_sum(w * u, axis=-1, keepdims=True)
        u_hat = u + (-1.0 + tf.nn.softplus(wu) - wu) * w / (
            tf.reduce_sum(w ** 2, axis=-1, keepdims=True) + 1e-8)
        return u_hat, w, b

    def _push(self, z, params):
        """z [K, N, d] -> (z' [K, N, d], sum of log-dets [K, N])."""
        total = tf.zeros(tf.shape(z)[:2])
        for i in range(self.num_steps):
            u_hat, w, b = self._step_params(params, i)
            a = tf.tanh(tf.reduce_sum(w * z, axis=-1) + b)
            psi_u = (1.0 - a ** 2) * tf.reduce_sum(w * u_hat, axis=-1)
            z = z + u_hat * a[..., None]
            total += tf.math.log(tf.abs(1.0 + psi_u) + 1e-8)
        return z, total

    def sample_and_log_prob(self, params, num_samples: int = 1, eps=None):
        z0, log_q0 = self._base_sample(params, num_samples, eps)
        z, ldj = self._push(z0, params)
        return z, log_q0 - ldj

    def representative(self, params):
        mu, _ = self.base(params)
        return self._push(mu[None], params)[0][0]


class RealNVPPosterior(ContextFlowPosterior):
    """Diagonal Gaussian followed by k affine coupling steps on z (Real NVP, Dinh et al.
    2017, as a posterior flow), each conditioned on an encoder context h(x).
    params = [mu, raw_sigma, context] -> 2d + context_dim.

    z_0 = mu(x) + sigma(x) * eps, eps ~ N(0, I); step i splits z into a conditioning half
    a and a transformed half b (alternating: the first floor(d/2) coordinates condition
    the rest at even i, the last floor(d/2) condition the rest at odd i) and maps

        b' = b * exp(s_i(a, h)) + t_i(a, h),    a' = a,

    with s_i = s_scale * tanh(raw_s) bounded (:class:`~tfp_models.posterior_networks.ConditionalCouplingNet`,
    zero-initialised: a fresh step is the identity). The Jacobian of a step is triangular
    with diagonal exp(s_i) on b, so

        ln q(z_k | x) = ln q0(z_0 | x) - sum_i sum_j s_i,j(a_i, h)      (nats).

    Each step is a ``tfb.RealNVP`` (``num_masked`` = floor(d/2), negative at odd steps for
    the reversed mask) whose ``shift_and_log_scale_fn`` calls the Keras net with the
    context as a condition kwarg; the Keras layers own the weights (DESIGN.md, "Keras 3
    does not track variables created inside TFP objects")."""

    def __init__(self, latent_dim: int, num_steps: int = 2, hidden_units: int = 128,
                 context_dim: int = 32, **kwargs):
        if latent_dim < 2:
            raise ValueError(f"a Real NVP posterior needs latent_dim >= 2, got {latent_dim}")
        super().__init__(latent_dim, context_dim, **kwargs)
        self.num_masked = latent_dim // 2
        # Both masks transform the d - floor(d/2) coordinates that do not condition.
        self.nets = [track_layer(self, ConditionalCouplingNet(
            latent_dim - self.num_masked, hidden_units, name=f"coupling_{i}"))
            for i in range(num_steps)]

    def _step(self, i: int) -> tfb.Bijector:
        net = self.nets[i]
        return tfb.RealNVP(
            num_masked=self.num_masked if i % 2 == 0 else -self.num_masked,
            shift_and_log_scale_fn=lambda a, units, context: net(a, context))

    def _push(self, z, context):
        """z [M, d] -> (flowed z [M, d], sum of log-dets [M])."""
        total = tf.zeros(tf.shape(z)[:1])
        for i in range(len(self.nets)):
            step = self._step(i)
            z_in = tf.identity(z)  # no stale bijector cache across weight updates
            z = step.forward(z_in, context=context)
            total += step.forward_log_det_jacobian(z_in, event_ndims=1, context=context)
        return z, total


def make_posterior(kind: str, latent_dim: int, num_steps: int = 2,
                   hidden_units: int = 128) -> DiagonalGaussian:
    """The posterior family by name: 'diag', 'iaf', 'planar' or 'realnvp'."""
    if kind == "diag":
        return DiagonalGaussian(latent_dim, name="posterior")
    if kind == "iaf":
        return InverseAutoregressiveFlow(latent_dim, num_steps, hidden_units, name="posterior")
    if kind == "planar":
        return PlanarFlows(latent_dim, num_steps, name="posterior")
    if kind == "realnvp":
        return RealNVPPosterior(latent_dim, num_steps, hidden_units, name="posterior")
    raise ValueError(f"unknown posterior {kind!r}; expected one of {POSTERIORS}")
