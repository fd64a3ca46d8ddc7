"""Drawing images from a :class:`tfp_models.hybrid.HybridModel`: decoding latents through
the decoder and the inverse feature flow, seeded samples (whole batches or row by row),
interpolations. Images are float32 in [0, 1] [N, H, W, C] unless a method says uint8.

    x = f^-1(mu(z) + T * sigma(z) * eps),  z = p.from_noise(n),  n, eps ~ N(0, I)

(latent variants, temperature T; T = 0 gives the decoder mean) and x = f^-1(T * n) for the
flow variants. The Bernoulli decoder draws binary pixels instead (:meth:`decode_to_images`).
"""
from __future__ import annotations

import math

import tensorflow as tf

from tfp_models import flows
from tfp_models.row_seeds import row_noise


class HybridSampling:
    """The sampling methods of :class:`~tfp_models.hybrid.HybridModel` (a mixin: it uses
    the model's ``config``, ``spec``, ``binary``, ``prior``, ``decoder``, ``encoder``,
    ``posterior`` and ``flow``)."""

    def decode_to_images(self, z: tf.Tensor, temperature: tf.Tensor | float = 0.0,
                         eps: tf.Tensor | None = None) -> tf.Tensor:
        """x = f^-1(mu(z) + temperature * sigma(z) * eps) in [0, 1], [N, H, W, C].

        ``temperature`` is a scalar or [N]; 0 gives the decoder mean mapped to pixels.
        Bernoulli decoder: temperature 0 gives the means p = sigmoid(logits(z)) (grey
        levels), temperature t > 0 binary draws b = 1[Phi(eps) < sigmoid(logits / t)]
        (eps standard normal, Phi its CDF: a uniform draw; t = 1 samples the model).
        """
        if self.binary:
            return self._bernoulli_images(self.decoder(z), temperature, eps)
        mu, log_sigma = self.decoder(z)
        if eps is None and isinstance(temperature, (int, float)) and temperature == 0:
            return self.features_to_images(mu)  # the mean: no noise op in the graph
        t = tf.reshape(tf.cast(temperature, mu.dtype), (-1, 1, 1, 1))
        if eps is None:
            eps = tf.random.normal(tf.shape(mu))
        return self.features_to_images(mu + t * tf.exp(log_sigma) * eps)

    def _bernoulli_images(self, logits: tf.Tensor, temperature, eps) -> tf.Tensor:
        means = tf.sigmoid(logits)
        if eps is None and isinstance(temperature, (int, float)) and temperature == 0:
            return means
        t = tf.reshape(tf.cast(temperature, logits.dtype), (-1, 1, 1, 1))
        if eps is None:
            eps = tf.random.normal(tf.shape(logits))
        u = 0.5 * tf.math.erfc(-eps / math.sqrt(2.0))  # Phi(eps) ~ U(0, 1)
        draws = tf.cast(u < tf.sigmoid(logits / tf.maximum(t, 1e-6)), logits.dtype)
        return tf.where(t > 0, draws, means)

    def features_to_images(self, y: tf.Tensor, clip: bool = True) -> tf.Tensor:
        """f^-1(y) [N, H, W, C], clipped to [0, 1] unless ``clip`` is False (then in
        about (-a / (1 - 2a), 1 + a / (1 - 2a)) for the logit step's a)."""
        x = self.flow.inverse(y)
        return tf.clip_by_value(x, 0.0, 1.0) if clip else x

    def generate(self, prior_noise: tf.Tensor, temperature: tf.Tensor | float = 1.0,
                 eps: tf.Tensor | None = None) -> tf.Tensor:
        """Images in [0, 1] from prior noise: [N, noise_dim] for latent variants (z =
        p.from_noise(noise), decoded with ``temperature``), feature noise [N, H, W, C] for
        the flow variants (scaled by ``temperature``)."""
        if self.spec.latent:
            return self.decode_to_images(self.prior.from_noise(prior_noise), temperature, eps)
        t = tf.reshape(tf.cast(temperature, prior_noise.dtype), (-1, 1, 1, 1))
        return self.features_to_images(t * prior_noise)

    def check_generator(self) -> None:
        """Raises ValueError if the model cannot draw samples (a latent variant without a
        decoder, a flow variant without a flow)."""
        if (self.spec.latent and self.decoder is None) or (
                not self.spec.latent and self.flow is None):
            raise ValueError(f"variant {self.spec.name!r} has no generator to draw samples from")

    def prior_noise_shape(self) -> tuple:
        """Per-sample shape of the standard normal noise a sample is made from: the
        prior's noise_dim for latent variants, the image shape for the flow variants."""
        return (self.prior.noise_dim,) if self.spec.latent else self.config.image_shape

    def sample(self, num: int, temperature: float = 1.0, seed: int = 0) -> tf.Tensor:
        """uint8 [num, H, W, C] samples, reproducible for a seed."""
        z = tf.random.stateless_normal((num,) + self.prior_noise_shape(), seed=(seed, 1))
        eps = tf.random.stateless_normal((num,) + self.config.image_shape, seed=(seed, 2))
        return flows.quantize_images(self.generate(z, temperature, eps))

    def generate_rows(self, seeds: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
        """:meth:`sample_rows` before quantization: float32 [N, H, W, C] in [0, 1], row i
        from the noise of row seed ``seeds[i]`` alone."""
        z = row_noise(seeds, self.prior_noise_shape(), 1)
        eps = row_noise(seeds, self.config.image_shape, 2) if self.spec.latent else None
        return self.generate(z, temperature, eps)

    def sample_rows(self, seeds: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
        """uint8 [N, H, W, C] from int64 seeds [N] and float32 temperatures [N]: row i equals
        ``sample(1, temperature[i], seeds[i])`` whatever the batch it is drawn in."""
        return flows.quantize_images(self.generate_rows(seeds, temperature))

    @property
    def latent_code_size(self) -> int:
        """Entries of one row of :meth:`latent_codes_to_images`' input: the latent dimension
        (latent variants), or H * W * C (the flow variants: a flattened feature map)."""
        if self.spec.latent:
            return self.config.latent_dim
        return int(math.prod(self.config.image_shape))

    def latent_codes_to_images(self, codes: tf.Tensor) -> tf.Tensor:
        """Images in [0, 1] [N, H, W, C] from codes [N, :attr:`latent_code_size`]: the decoder
        mean f^-1(mu(z)) of latents z (the Bernoulli means for binary data), or f^-1(y) of
        flattened features y for the flow variants."""
        if self.spec.latent:
            return self.decode_to_images(codes, 0.0)
        return self.features_to_images(tf.reshape(codes, (-1,) + tuple(self.config.image_shape)))

    def encode_mean(self, x: tf.Tensor) -> tf.Tensor:
        """A point latent per image [N, d] (posterior mean pushed through its flow)."""
        return self.posterior.representative(self.encoder(x))

    def interpolate(self, x_a: tf.Tensor, x_b: tf.Tensor, steps: int = 8) -> tf.Tensor:
        """Decoder means along the line between the latents of two images:
        [steps, H, W, C] in [0, 1]."""
        if self.encoder is None:
            raise ValueError(f"variant {self.spec.name!r} has no encoder to interpolate with")
        z = self.encode_mean(tf.stack([x_a, x_b]))
        w = tf.linspace(0.0, 1.0, steps)[:, None]
        return self.decode_to_images((1.0 - w) * z[0] + w * z[1], 0.0)
