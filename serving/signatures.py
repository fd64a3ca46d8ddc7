"""The tf.Module that a SavedModel export serves: `score`, `sample` and `sample_latent`.

Signatures (N is the batch size, H, W, C the model's image shape, D = H * W * C):

* ``score(images uint8 [N, H, W, C])`` -> ``log_likelihood_nats`` float32 [N] and
  ``bits_per_dim`` float32 [N]: a **deterministic point estimate, not a bound**. The
  image is dequantized to its bin centres, x~ = (x + 0.5) / 256, and the latent variants
  use one fixed posterior draw (K fixed draws with ``score_importance_samples=K``) shared
  by every row: ln p(x~) itself for ``flow``/``flow_wgan``/``flowgan`` (the density at the bin
  centres), else the ELBO's (or IW bound's) integrand at that fixed noise. Neither is a
  bound on the log-probability of the discrete image; the value is reproducible and an
  image's score does not depend on its batch, which is what ranking and OOD thresholds
  need.
  With ``importance_samples=K > 0`` (export option) ``score`` also returns the
  **importance-weighted bound** (Burda et al. 2016, with uniform dequantization as part of
  the proposal): ``iw_bound_nats`` [N] = ln (1/K) sum_k p(x + u_k, z_k) / q(z_k | x + u_k)
  with K fresh draws u_k ~ U[0,1)^D, z_k ~ q, whose expectation is a lower bound on
  ln P(x) + D ln 256 (P the probability of the 8-bit image), ``iw_bound_stderr_nats`` [N]
  (its jackknife standard error over the K draws), and the same in bits/dim
  (``iw_bits_per_dim``, an upper bound in expectation, and ``iw_bits_per_dim_stderr``).
  The draws are seeded per row from the image's pixels and the export's seed, so an
  image's bound does not depend on its batch either.
* ``sample(seed int64 [N], temperature float32 [N])`` -> ``images`` uint8 [N, H, W, C];
  row i equals ``HybridModel.sample(1, temperature[i], seed[i])``, whatever the batch.
* ``sample_latent(latent float32 [N, d])`` -> ``images`` uint8 [N, H, W, C]: the decoder
  mean f^-1(mu(z)) for latent variants, f^-1(latent reshaped to [H, W, C]) for flows
  (d = D), for interpolation.

Binary-data models (``decoder='bernoulli'``): the uint8 image is binarized at the
threshold 128 (the mid-bin u = 0.5 of b = 1[u < x / 255]), for ``score`` and for every
draw of the IW bound (which then draws only posterior noise: a bound on ln P(b) of that
one binary image); the nats are -ln P(b) and ``bits_per_dim`` / ``iw_bits_per_dim`` are
-log2 P(b) / D, bits per binary pixel (no ln 256 term: not 8-bit bits/dim). ``sample``
gives binary images (0 or 255) at temperature > 0 and the Bernoulli means (grey levels)
at temperature 0; ``sample_latent`` the means.

Every signature accepts at most ``max_batch`` rows (N <= max_batch, an export setting,
default :data:`DEFAULT_MAX_BATCH`); a larger request fails inside the graph with
"at most M rows per request ...", so one request cannot exhaust the server's memory.
Clients split larger jobs into chunks (serving.client).

``images`` and ``latent`` are declared with unknown shape so that every caller -- TF
Serving's C++ runtime as well as Python -- reaches the in-graph checks, whose messages
name the expected shape (e.g. "images must be uint8 [N, 28, 28, 1]"); TF Serving returns
them as HTTP 400 / gRPC INVALID_ARGUMENT.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfp_models import flows, metrics
from tfp_models.hybrid import HybridModel
from tfp_models.row_seeds import row_noise

SCORE_OUTPUTS = ("log_likelihood_nats", "bits_per_dim")
IW_OUTPUTS = ("iw_bound_nats", "iw_bound_stderr_nats", "iw_bits_per_dim",
              "iw_bits_per_dim_stderr")
DEFAULT_SCORE_SEED = 20190917
DEFAULT_MAX_BATCH = 1024


def score_noise(model: HybridModel, num_samples: int, seed: int = DEFAULT_SCORE_SEED
                ) -> tf.Tensor | None:
    """The fixed posterior noise of ``score``: standard normal [K, d] (None for the flow
    variants, which need none). Every image of a batch uses the same [K, d] draw."""
    if not model.posterior_noise_dim:
        return None
    return tf.random.stateless_normal((num_samples, model.posterior_noise_dim),
                                      seed=tf.constant([seed, 0], tf.int64))


def to_bits_per_dim(model: HybridModel, nats):
    """Per-image bits/dim of ln-likelihoods ``nats``: 8-bit bits/dim (with ln 256 per
    dimension, :func:`tfp_models.metrics.bits_per_dim`), or for a Bernoulli-decoder model
    -nats / (D ln 2), bits per binary pixel (:func:`tfp_models.metrics.decoder_bits_per_dim`)."""
    return metrics.decoder_bits_per_dim(nats, model.config.image_shape,
                                        getattr(model, "binary", False))


def deterministic_score(model: HybridModel, images: tf.Tensor, num_samples: int = 1,
                        seed: int = DEFAULT_SCORE_SEED) -> dict[str, tf.Tensor]:
    """What the exported ``score`` computes, on an in-memory model: uint8 images
    [N, H, W, C] -> {'log_likelihood_nats': [N], 'bits_per_dim': [N]} (float32)."""
    x = flows.dequantize_images(images)
    eps = score_noise(model, num_samples, seed)
    if eps is not None:
        eps = tf.broadcast_to(eps[None], tf.concat([tf.shape(x)[:1], tf.shape(eps)], 0))
    ll = model.log_prob_bound(x, num_samples, eps)
    return {"log_likelihood_nats": ll,
                "bits_per_dim": tf.cast(to_bits_per_dim(model, ll), tf.float32)}


def image_row_seeds(images: tf.Tensor) -> tf.Tensor:
    """One int64 seed per image [N] from its pixels only (a fixed pseudo-random weighted
    sum of the uint8 values, mod 2^31 - 1): the same image gets the same seed in any batch."""
    flat = tf.cast(tf.reshape(images, (tf.shape(images)[0], -1)), tf.int64)
    weights = tf.random.stateless_uniform(tf.shape(flat)[1:], seed=[17, 29], minval=1,
                                          maxval=1 << 20, dtype=tf.int64)
    return tf.math.floormod(tf.reduce_sum(flat * weights[None], axis=1), (1 << 31) - 1)


def jackknife_stderr(log_w: tf.Tensor) -> tf.Tensor:
    """Jackknife standard error [N] of ln (1/K) sum_k w_k from log-weights [N, K] (K >= 2):
    sqrt((K - 1) / K * sum_j (L_-j - mean_j L_-j)^2), L_-j the bound without draw j.

    It accounts for the draw that dominates the sum (the delta-method error
    std(w / mean w) / sqrt(K) misses that and was 2-5x too small on an untrained VAE, whose
    log-weights spread over ~25 nats). With weights that heavy-tailed every K-draw error
    estimate is optimistic; more draws are the remedy. Computed stably in the input dtype:
    leaving out the largest weight uses a masked log-sum-exp, the others ln(s - e_j) with
    s >= e_max."""
    k = tf.shape(log_w)[1]
    top = tf.argmax(log_w, axis=1, output_type=tf.int32)
    m = tf.reduce_max(log_w, axis=1, keepdims=True)
    e = tf.exp(log_w - m)
    s = tf.reduce_sum(e, axis=1, keepdims=True)
    is_top = tf.one_hot(top, k, on_value=True, off_value=False)
    without_top = tf.reduce_logsumexp(
        tf.where(is_top, tf.constant(-math.inf, log_w.dtype), log_w), axis=1, keepdims=True)
    rest = tf.where(is_top, tf.ones_like(s), s - e)  # >= e_max = 1 off the top draw
    loo = tf.where(is_top, without_top, m + tf.math.log(rest))
    loo -= tf.math.log(tf.cast(k - 1, log_w.dtype))
    kf = tf.cast(k, log_w.dtype)
    dev = loo - tf.reduce_mean(loo, axis=1, keepdims=True)
    return tf.sqrt((kf - 1.0) / kf * tf.reduce_sum(tf.square(dev), axis=1))


def importance_weighted_score(model: HybridModel, images: tf.Tensor, num_samples: int,
                              seed: int = DEFAULT_SCORE_SEED) -> dict[str, tf.Tensor]:
    """The importance-weighted bound of uint8 images [N, H, W, C] with K =
    ``num_samples`` draws per image of dequantization noise u_k ~ U[0,1)^D and (latent
    variants) posterior noise, seeded per row by (:func:`image_row_seeds`, ``seed``).

    Returns float32 [N] each: ``iw_bound_nats`` = ln (1/K) sum_k w_k with
    ln w_k = ln p(x~_k, z_k) - ln q(z_k | x~_k), x~_k = (x + u_k) / 256 (flows: ln p(x~_k));
    ``iw_bound_stderr_nats``, the jackknife standard error of the bound over its K draws
    (:func:`jackknife_stderr`; nan for K = 1); ``iw_bits_per_dim`` and ``iw_bits_per_dim_stderr``, the
    same in bits/dim (bpd = (-nats / D + ln 256) / ln 2; its stderr = nats stderr / (D ln 2)).
    Work grows as N * K images through the model."""
    k = int(num_samples)
    n = tf.shape(images)[0]
    shape = tuple(int(d) for d in model.config.image_shape)
    row_seeds = image_row_seeds(images)
    if getattr(model, "binary", False):  # one binarization (threshold 128) for all K draws
        dequant = tf.fill(tf.concat([[n], [k], shape], 0), 0.5)
    else:
        dequant = row_noise(row_seeds, (k,) + shape, seed, tf.random.stateless_uniform)
    x = flows.dequantize_images(
        tf.repeat(images, k, axis=0), tf.reshape(dequant, (-1,) + shape))  # [N*K, ...]
    d = model.posterior_noise_dim  # 0 for flows: their ln w is the exact ln p(x~_k)
    eps = tf.reshape(row_noise(row_seeds, (k, d), seed + 1), [n * k, d])  # [N*K, d]
    log_w = tf.cast(tf.reshape(model.single_draw_log_weights(x, eps), (n, k)), tf.float64)
    bound = tf.reduce_logsumexp(log_w, axis=1) - tf.math.log(tf.cast(k, tf.float64))
    stderr = jackknife_stderr(log_w) if k > 1 else tf.fill([n], tf.constant(math.nan, tf.float64))
    dims = float(np.prod(shape))
    return {"iw_bound_nats": tf.cast(bound, tf.float32),
            "iw_bound_stderr_nats": tf.cast(stderr, tf.float32),
            "iw_bits_per_dim": tf.cast(to_bits_per_dim(model, bound), tf.float32),
            "iw_bits_per_dim_stderr": tf.cast(stderr / (dims * np.log(2.0)), tf.float32)}


def _shape_text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


class ServingModule(tf.Module):
    """Holds a trained :class:`HybridModel` and exposes its serving functions.

    Args:
      model: the trained model (its variables are saved with the module).
      score_importance_samples: K of the score bound (1: the ELBO; ignored by flows).
      score_seed: seed of the fixed posterior noise of ``score``.
      max_batch: the most rows (images, seeds or latents) one call accepts.
      importance_samples: K > 0 adds the importance-weighted bound outputs (IW_OUTPUTS)
        to ``score``; 0: the point estimate only.
    """

    def __init__(self, model: HybridModel, score_importance_samples: int = 1,
                 score_seed: int = DEFAULT_SCORE_SEED, max_batch: int = DEFAULT_MAX_BATCH,
                 importance_samples: int = 0):
        super().__init__(name="hybrid_serving")
        if int(score_importance_samples) < 1:
            raise ValueError(f"score_importance_samples={score_importance_samples}: expected a "
                             "positive integer")
        if int(max_batch) < 1:
            raise ValueError(f"max_batch={max_batch}: expected a positive integer")
        self.max_batch = int(max_batch)
        if int(importance_samples) < 0:
            raise ValueError(f"importance_samples={importance_samples}: expected >= 0")
        self.importance_samples = int(importance_samples)
        self.model = model
        self.image_shape = tuple(int(d) for d in model.config.image_shape)
        self.latent_size = model.latent_code_size
        self.num_samples = int(score_importance_samples)
        self.score_seed = int(score_seed)
        self.has_score = model.spec.has_likelihood
        self._images_msg = f"images must be uint8 {_shape_text(('N',) + self.image_shape)}"
        self._latent_msg = f"latent must be float32 [N, {self.latent_size}]"
        if self.has_score:  # a `gan` has no likelihood: no score function at all
            self.score = tf.function(self._score, input_signature=[
                tf.TensorSpec(None, tf.uint8, name="images")])
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([None], tf.int64, name="seed"),
            tf.TensorSpec([None], tf.float32, name="temperature")])
        self.sample_latent = tf.function(self._sample_latent, input_signature=[
            tf.TensorSpec(None, tf.float32, name="latent")])

    # ------------------------------------------------------------------ validation

    def _check_rows(self, rows: tf.Tensor, tensor: tf.Tensor, what: str) -> tf.Tensor:
        """``tensor`` after an in-graph check that ``rows`` <= max_batch."""
        check = tf.debugging.Assert(rows <= self.max_batch, [
            f"at most {self.max_batch} {what} per request (the export's --max_batch); split "
            "the request into chunks; got", rows], name="check_max_batch")
        with tf.control_dependencies([check]):
            return tf.identity(tensor)

    def _check_images(self, images: tf.Tensor) -> tf.Tensor:
        expected = tf.constant(self.image_shape, tf.int32)
        shape = tf.shape(images)
        rank_ok = tf.equal(tf.size(shape), 4)
        # Compare the trailing dims only when the rank is right (else shapes differ).
        dims_ok = tf.cond(rank_ok, lambda: tf.reduce_all(tf.equal(
            tf.pad(shape, [[0, 4]])[1:4], expected)), lambda: tf.constant(False))
        check = tf.debugging.Assert(tf.logical_and(rank_ok, dims_ok), [
            self._images_msg + "; got shape", shape], summarize=8, name="check_images")
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        return tf.ensure_shape(images, (None,) + self.image_shape)

    def _check_latent(self, latent: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(latent)
        ok = tf.logical_and(tf.equal(tf.size(shape), 2), tf.reduce_all(tf.equal(
            tf.pad(shape, [[0, 2]])[1:2], self.latent_size)))
        finite = tf.reduce_all(tf.math.is_finite(latent))
        check = tf.debugging.Assert(ok, [self._latent_msg + "; got shape", shape],
                                    summarize=8, name="check_latent")
        check_finite = tf.debugging.Assert(finite, ["latent must be finite"], name="check_finite")
        with tf.control_dependencies([check, check_finite]):
            latent = tf.identity(latent)
        return tf.ensure_shape(latent, (None, self.latent_size))

    # ------------------------------------------------------------------ signatures

    def _score(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        if not self.has_score:
            raise ValueError(f"variant {self.model.spec.name!r} defines no likelihood to score")
        images = self._check_images(images)
        images = self._check_rows(tf.shape(images)[0], images, "images")
        out = deterministic_score(self.model, images, self.num_samples, self.score_seed)
        if self.importance_samples:
            out.update(importance_weighted_score(self.model, images, self.importance_samples,
                                                 self.score_seed))
        return out

    def _sample(self, seed: tf.Tensor, temperature: tf.Tensor) -> dict[str, tf.Tensor]:
        same = tf.debugging.Assert(tf.equal(tf.size(seed), tf.size(temperature)), [
            "seed int64 [N] and temperature float32 [N] must have the same length N; got",
            tf.size(seed), tf.size(temperature)], name="check_lengths")
        valid = tf.debugging.Assert(tf.reduce_all(
            tf.logical_and(tf.math.is_finite(temperature), temperature >= 0.0)),
            ["temperature must be finite and >= 0; got", temperature], name="check_temperature")
        with tf.control_dependencies([same, valid]):
            seed = tf.identity(seed)
        seed = self._check_rows(tf.size(seed), seed, "seeds")
        return {"images": self.model.sample_rows(seed, temperature)}

    def _sample_latent(self, latent: tf.Tensor) -> dict[str, tf.Tensor]:
        latent = self._check_latent(latent)
        latent = self._check_rows(tf.shape(latent)[0], latent, "latents")
        return {"images": flows.quantize_images(self.model.latent_codes_to_images(latent))}

    # ------------------------------------------------------------------ export

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The signature map for tf.saved_model.save: score (when the variant has a
        likelihood), sample, sample_latent and serving_default (score, else sample)."""
        sigs = {"sample": self.sample.get_concrete_function(),
                "sample_latent": self.sample_latent.get_concrete_function()}
        if self.has_score:
            sigs["score"] = self.score.get_concrete_function()
        sigs["serving_default"] = sigs["score"] if self.has_score else sigs["sample"]
        return sigs
