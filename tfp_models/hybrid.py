"""The hybrid generative model of "Adaptive Density Estimation for Generative Models"
(Lucas et al., NeurIPS 2019) and its ablations, as one Keras 3 model.

Notation (DESIGN.md, "The math"): images x~ in [0, 1)^(H, W, C) (dequantized), the
feature map y = f(x~) (logit preprocessing, then Real NVP when the variant has a flow),
latent z with prior p(z) (N(0, I), or a learned mixture: ``prior``), encoder q(z|x),
decoder mu(z), sigma(z) in feature space.

    L_MLE(x) = -E_q[ln N(f(x); mu(z), sigma(z))] + KL(q(z|x) || p(z)) - ln |det df/dx|
    L_adv    = -E_{z~p}[logit D(f^-1(mu(z)))]                         (log-ratio loss)

The model gives these terms (:meth:`HybridModel.mle_terms`,
:meth:`HybridModel.generator_adversarial_losses`); the training objective that combines
them, L_G = L_MLE + lambda_adv * L_adv and the discriminator's loss with its penalties, is
:class:`tfp_models.objective.Objective`. Settings, how images meet the discriminator (``disc_inputs``) and the deviations from
the paper's objective: :mod:`tfp_models.hybrid_config`.

All log-likelihoods are in nats per image; :func:`tfp_models.metrics.bits_per_dim`
turns them into bits/dim.

Binary data (``decoder='bernoulli'``, variant ``vae`` only): the model still takes
dequantized images x~ = (x + u) / 256 and binarizes them itself, b = 1[u < x / 255]
(:func:`tfp_models.networks.binarize_dequantized`), so every caller that dequantizes
(training with fresh noise each step: dynamic binarization; evaluation with seeded noise:
a fixed seeded binarization; the export's mid-bin u = 0.5: threshold at 128) gets the
binarization its noise implies. Then L_MLE(b) = -E_q[ln Bernoulli(b; sigmoid(logits(z)))]
+ KL(q(z|b) || p(z)), no feature map and no log-det: bounds are on ln P(b) of the binary
image in nats (a discrete probability, <= 0), not on a density of x~, and
:func:`tfp_models.metrics.bits_per_dim` (the 8-bit bits/dim) does not apply to them.

Random noise can be passed in explicitly (``noise`` dicts):
the training pipeline draws it per example so results do not depend on how a batch is
split across replicas.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfp_models import flows
from tfp_models.hybrid_config import (  # noqa: F401 -- re-exported: the settings live there
    DECODERS,
    DISC_INPUTS,
    GRADIENT_PENALTIES,
    VARIANTS,
    HybridConfig,
    Variant,
)
from tfp_models.hybrid_sampling import HybridSampling
from tfp_models.metrics import importance_weighted_bound
from tfp_models.networks import (
    BernoulliConvDecoder,
    ConvDecoder,
    ConvEncoder,
    Discriminator,
    bernoulli_log_prob,
    binarize_dequantized,
)
from tfp_models.posteriors import make_posterior, standard_normal_log_prob
from tfp_models.priors import make_prior

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(y: tf.Tensor, mu: tf.Tensor, log_sigma: tf.Tensor) -> tf.Tensor:
    """ln N(y; mu, diag exp(log_sigma)^2) summed over the trailing 3 axes (nats)."""
    per_dim = -0.5 * (((y - mu) * tf.exp(-log_sigma)) ** 2 + _LOG_2PI) - log_sigma
    return tf.reduce_sum(per_dim, axis=[-3, -2, -1])


class HybridModel(HybridSampling, keras.Model):
    """Encoder, decoder, feature flow f and discriminator of one variant.

    Images are float32 [N, H, W, C] in [0, 1) (dequantized) unless a method says uint8.
    Drawing images (``sample``, ``sample_rows``, ``generate``, ``interpolate``, ...) is
    :class:`tfp_models.hybrid_sampling.HybridSampling`'s.

    ``compute_dtype`` ('float32' or 'bfloat16') is the arithmetic of the convolutions and
    dense layers of the flow's coupling nets, encoder, decoder and discriminator
    (:mod:`tfp_models.networks`); it is not part of the config: variables are float32 in
    both, so a model trained in bfloat16 is restored, evaluated and exported in float32.
    """

    def __init__(self, config: HybridConfig, compute_dtype: str = "float32", **kwargs):
        super().__init__(name=f"hybrid_{config.variant}", **kwargs)
        self.config = config
        self.network_dtype = compute_dtype
        spec = config.spec
        self.spec = spec
        shape = config.image_shape
        self.flow = flows.build_feature_flow(
            shape, config.flow_scales if spec.learned_flow else 0, config.flow_hidden,
            config.flow_res_blocks, use_actnorm=config.use_actnorm,
            logit_alpha=config.logit_alpha, kernel_size=config.flow_kernel_size,
            compute_dtype=compute_dtype)
        self.flow_nets = self.flow.nets
        self.posterior = self.encoder = self.decoder = self.discriminator = None
        self.prior = None
        self.binary = config.decoder == "bernoulli"
        if spec.latent:
            self.prior = make_prior(config.prior, config.latent_dim, config.prior_components)
            if self.binary:
                self.decoder = BernoulliConvDecoder(shape, config.enc_dec_channels,
                                                    config.enc_dec_downsamples,
                                                    compute_dtype=compute_dtype, name="decoder")
            else:
                self.decoder = ConvDecoder(shape, config.enc_dec_channels,
                                           config.enc_dec_downsamples,
                                           config.decoder_min_log_sigma,
                                           compute_dtype=compute_dtype, name="decoder")
        if spec.latent and spec.mle:
            self.posterior = make_posterior(config.posterior, config.latent_dim,
                                            config.posterior_steps, config.posterior_hidden)
            self.encoder = ConvEncoder(self.posterior.param_size, shape, config.enc_dec_channels,
                                       config.enc_dec_downsamples, binarize_inputs=self.binary,
                                       compute_dtype=compute_dtype, name="encoder")
        if spec.adversarial:
            self.discriminator = Discriminator(shape, config.disc_channels, config.spectral_norm,
                                               compute_dtype=compute_dtype, name="discriminator")
        self._build_all()

    # ------------------------------------------------------------------ structure

    def _build_all(self) -> None:
        x = tf.fill((1,) + self.config.image_shape, 0.5)
        if self.encoder is not None:
            self.posterior.sample_and_log_prob(self.encoder(x), 1)
        if self.decoder is not None:
            self.decoder(tf.zeros((1, self.config.latent_dim)))
        if self.discriminator is not None:
            self.discriminator(x)

    @property
    def generator_variables(self) -> list:
        """Encoder, prior, decoder, posterior and flow weights (everything but D); without an MLE
        term ('gan') the decoder's log-sigma bias is unused and left out."""
        skip = {id(v) for v in self.discriminator_variables}
        if self.decoder is not None and not self.spec.mle and not self.binary:
            skip.add(id(self.decoder.sigma_bias))
        return [v for v in self.trainable_variables if id(v) not in skip]

    def generator_variable_groups(self) -> dict[str, list]:
        """The generator's trainable weights by network: 'encoder' (with the posterior's
        own weights), 'decoder', 'flow' (only the networks the variant has)."""
        groups = {}
        if self.encoder is not None:
            groups["encoder"] = (list(self.encoder.trainable_variables)
                                 + list(self.posterior.trainable_variables))
        if self.decoder is not None:
            groups["decoder"] = list(self.decoder.trainable_variables)
        if self.prior is not None and self.prior.trainable_variables:
            groups["prior"] = list(self.prior.trainable_variables)
        if self.flow.trainable_variables:
            groups["flow"] = list(self.flow.trainable_variables)
        return groups

    @property
    def discriminator_variables(self) -> list:
        return list(self.discriminator.trainable_variables) if self.discriminator else []

    def data_init(self, x: tf.Tensor, prior_noise: tf.Tensor | None = None) -> None:
        """Data-dependent init from a dequantized batch x [N, H, W, C]: ActNorm, then
        (``decoder_data_init``, variants without a learned flow) the decoder's
        per-dimension mean and log sigma from the features f(x), with latents
        z = p.from_noise(``prior_noise``) of prior noise [N, noise_dim] (default: standard
        normal draws). Bernoulli decoder: the logit bias from the per-pixel mean of the
        batch binarized (:func:`~tfp_models.networks.binarize_dequantized`).

        With a learned flow the decoder keeps sigma = 1: the features move as the flow
        trains, and per-pixel sigmas fitted to the initial features (down to ~0.01 for
        MNIST's background) make every flow update expensive; measured on the quickstart
        `cqf`, validation bits/dim 3.88 after 500 steps with that init."""
        self.flow.data_init(x)
        if (self.decoder is not None and self.config.decoder_data_init
                and not self.spec.learned_flow):
            if self.binary:
                y = binarize_dequantized(x)
            else:
                y, _ = self.flow.forward_and_log_det(x)
            if prior_noise is None:
                prior_noise = tf.random.normal((tf.shape(x)[0],) + self.prior_noise_shape())
            self.decoder.initialize_from(y, self.prior.from_noise(prior_noise))

    def noise_shapes(self, num_samples: int = 1) -> dict[str, tuple]:
        """Per-example shapes of the noise one training step consumes."""
        shapes = {"dequant": self.config.image_shape}
        if self.encoder is not None:
            shapes["posterior"] = (num_samples, self.config.latent_dim)
        if self.spec.adversarial:
            shapes["prior"] = self.prior_noise_shape()
            shapes["mix"] = (1, 1, 1)
        return shapes

    # ------------------------------------------------------------------ likelihood

    def log_weights(self, x: tf.Tensor, num_samples: int = 1, eps: tf.Tensor | None = None,
                    extra_z: tf.Tensor | None = None):
        """Importance log-weights ln p(x, z_k) - ln q(z_k|x), [K, N] nats, with z_k ~ q.

        Also returns the terms: ``recon`` [K, N] = ln N(f(x); mu(z_k), sigma(z_k)) (Bernoulli
        decoder: ln p(b|z_k) of the binarized x), ``log_prior`` and ``log_q`` [K, N],
        ``log_det`` [N] = ln |det df/dx| (0 for the Bernoulli decoder).
        ``eps`` [N, K, d] (or None) is the posterior's standard normal noise.
        ``extra_z`` [M, d] (or None): more latents decoded in the same decoder call (the
        decoder is per-example: no batch statistics); their output is ``extra_decoded``.
        """
        if not self.spec.latent or self.encoder is None:
            raise ValueError(f"variant {self.spec.name!r} has no encoder/posterior")
        if self.binary:  # b = 1[u < x/255]; the encoder binarizes the same way
            y, log_det = binarize_dequantized(x), tf.zeros(tf.shape(x)[:1])
        else:
            y, log_det = self.flow.forward_and_log_det(x)
        params = self.encoder(x)
        if eps is not None:
            eps = tf.transpose(eps, (1, 0, 2))
        z, log_q = self.posterior.sample_and_log_prob(params, num_samples, eps)
        k, n = tf.shape(z)[0], tf.shape(z)[1]
        flat_z = tf.reshape(z, (-1, self.config.latent_dim))
        extra_decoded = None
        if extra_z is None:
            out = self.decoder(flat_z)
        else:
            m = tf.shape(flat_z)[0]
            both = self.decoder(tf.concat([flat_z, tf.cast(extra_z, flat_z.dtype)], 0))
            out = tf.nest.map_structure(lambda t: t[:m], both)
            extra_decoded = tf.nest.map_structure(lambda t: t[m:], both)
        target_shape = tf.shape(out) if self.binary else tf.shape(out[0])
        y_k = tf.reshape(tf.broadcast_to(y, tf.concat([[k], tf.shape(y)], 0)), target_shape)
        if self.binary:
            recon = tf.reshape(bernoulli_log_prob(y_k, out), (k, n))
        else:
            recon = tf.reshape(gaussian_log_prob(y_k, *out), (k, n))
        log_prior = self.prior.log_prob(z)
        return {"log_w": recon + log_prior - log_q + log_det, "recon": recon,
                "log_prior": log_prior, "log_q": log_q, "log_det": log_det, "params": params,
                "extra_decoded": extra_decoded}

    def mle_terms(self, x: tf.Tensor, eps: tf.Tensor | None = None,
                  extra_z: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Per-image terms of the MLE objective, each [N] nats: ``nll`` (= L_MLE, an upper
        bound on -ln p(x); exact for the flow variants; -ln P(b) of the binarized image for
        the Bernoulli decoder), ``recon``, ``kl``, ``log_det``; ``extra_decoded`` as
        :meth:`log_weights` gives it for ``extra_z`` (latent variants)."""
        if not self.spec.latent:
            y, log_det = self.flow.forward_and_log_det(x)
            prior = standard_normal_log_prob(tf.reshape(y, (tf.shape(y)[0], -1)))
            return {"nll": -(prior + log_det), "recon": -prior,
                    "kl": tf.zeros_like(log_det), "log_det": log_det}
        terms = self.log_weights(x, 1, eps, extra_z)
        recon = terms["recon"][0]
        if self.has_analytic_kl:
            kl_dims = self.posterior.analytic_kl_per_dim(terms["params"])
            kl = tf.reduce_sum(kl_dims, axis=-1)
        else:  # single-sample Monte Carlo KL for flow posteriors or a learned prior
            kl = terms["log_q"][0] - terms["log_prior"][0]
            kl_dims = None
        return {"nll": -recon + kl - terms["log_det"], "recon": -recon, "kl": kl,
                "log_det": terms["log_det"], "kl_dims": kl_dims,
                "extra_decoded": terms["extra_decoded"]}

    @property
    def posterior_noise_dim(self) -> int:
        """Dimensions of one posterior draw's standard normal noise: the latent dimension,
        0 for the flow variants (no posterior)."""
        return self.config.latent_dim if self.spec.latent else 0

    def single_draw_log_weights(self, x: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """ln w [N] nats of one importance draw per image: ln p(x, z) - ln q(z|x) with z from
        the posterior noise ``eps`` [N, :attr:`posterior_noise_dim`]; for the flow variants
        the exact ln p(x) (``eps`` is [N, 0] and unused)."""
        if not self.spec.latent:
            return self.log_prob_bound(x)
        return self.log_weights(x, 1, eps[:, None, :])["log_w"][0]

    @property
    def has_analytic_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) is computed in closed form (a diagonal posterior
        against the standard prior) rather than by one Monte Carlo draw."""
        return (self.posterior is not None and self.posterior.has_analytic_kl
                and self.prior.is_standard)

    def log_prob_bound(self, x: tf.Tensor, num_samples: int = 1,
                       eps: tf.Tensor | None = None) -> tf.Tensor:
        """A lower bound on ln p(x~) [N] nats: exact for 'flow'/'flow_wgan'/'flowgan', the ELBO for
        K = 1, the importance-weighted bound for K > 1 (tighter, still a bound). Bernoulli
        decoder: a bound on ln P(b) of the binarized x~ (:mod:`tfp_models.hybrid`)."""
        if not self.spec.has_likelihood:
            raise ValueError(f"variant {self.spec.name!r} defines no likelihood")
        if not self.spec.latent or num_samples == 1:
            return -self.mle_terms(x, eps)["nll"]
        return importance_weighted_bound(self.log_weights(x, num_samples, eps)["log_w"])

    # ------------------------------------------------------------------ adversarial

    def adversarial_samples(self, prior_noise: tf.Tensor) -> tf.Tensor:
        """The discriminator's fakes [N, H, W, C]: x_s = f^-1(mu(z)) for latent variants,
        f^-1(eps) for flows, prepared as ``disc_inputs`` says (:mod:`tfp_models.hybrid_config`):
        straight-through quantized to bin centres, or clipped to [0, 1]. Latent variants
        take prior noise [N, noise_dim] (z = p.from_noise(noise))."""
        if self.spec.latent:
            y, _ = self.decoder(self.prior.from_noise(prior_noise))
        else:
            y = prior_noise
        return self._discriminator_fakes(y)

    def mle_terms_and_adversarial_samples(self, x: tf.Tensor, eps: tf.Tensor | None,
                                          prior_noise: tf.Tensor) -> tuple[dict, tf.Tensor]:
        """(:meth:`mle_terms` of ``x``, :meth:`adversarial_samples` of ``prior_noise``) for
        variants trained by both. Latent variants (Gaussian decoder) decode the posterior's
        and the prior's latents in one decoder call of 2N rows instead of two calls of N;
        the decoder is per-example, so the values and gradients are those of the two calls."""
        if not self.spec.latent or self.binary:
            return self.mle_terms(x, eps), self.adversarial_samples(prior_noise)
        terms = self.mle_terms(x, eps, extra_z=self.prior.from_noise(prior_noise))
        mu, _ = terms["extra_decoded"]
        return terms, self._discriminator_fakes(mu)

    def _discriminator_fakes(self, y: tf.Tensor) -> tf.Tensor:
        """f^-1(y) prepared as ``disc_inputs`` says, [N, H, W, C]."""
        if self.config.disc_inputs == "quantized":
            return flows.straight_through_quantize(self.features_to_images(y, clip=False))
        return self.features_to_images(y)

    def discriminator_real_inputs(self, images: tf.Tensor, dequantized: tf.Tensor) -> tf.Tensor:
        """The discriminator's real inputs [N, H, W, C] from uint8 ``images`` and their
        training dequantization ``dequantized``: bin centres for 'quantized' inputs, the
        dequantized images for 'dequantized'."""
        if self.config.disc_inputs == "quantized":
            return flows.dequantize_images(images)
        return dequantized

    def generator_adversarial_losses(self, fake: tf.Tensor) -> tf.Tensor:
        """Per-example L_adv [N]: -logit D(x_s) = -ln(D/(1-D)) (log-ratio), or -critic."""
        return -self.discriminator(fake)

    def call(self, x, training=False):
        """Keras entry point: the per-image likelihood bound (nats) of images in [0, 1)."""
        return self.log_prob_bound(x)
