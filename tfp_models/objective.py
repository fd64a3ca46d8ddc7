"""The training objective of a :class:`~tfp_models.hybrid.HybridModel`, every variant:
the generator's and the discriminator's losses and the gradient penalties. No I/O, no flags.

Per example, in nats (x~ a dequantized image, x_s = f^-1(mu(z)), z ~ p(z), a fake; D the
discriminator's logit, or the critic's score for 'wgan'):

    L_G    = L_MLE(x~) + lambda_adv * L_adv(x_s)   (lambda_adv = 1 without an MLE term:
             'gan', 'flow_wgan'; no L_adv without an adversarial term)
    L_MLE  = -recon + kl_weight * KL_fb - ln |det df/dx|   (:meth:`Objective.training_loss`)
    L_adv  = -D(x_s)                                 (log-ratio loss; -critic for 'wgan')
    L_D    = softplus(-D(x_r)) + softplus(D(x_s))    (BCE of real x_r vs fake: log-ratio)
             D(x_s) - D(x_r)                         ('wgan')
           + gp_weight / 2 * ||grad D(x_r)||^2       (R1)
           + gp_weight * (||grad D(x_hat)|| - 1)^2, x_hat = m x_r + (1 - m) x_s, m ~ U[0, 1)
                                                     (WGAN-GP; always for 'wgan')

One step alternates (:meth:`Objective.losses`): the generator's forward pass makes x_s, the
discriminator is updated on (x_r, x_s) first (no gradient to G), then L_adv uses the
updated D. The penalties are shared with the independent critic (:mod:`tfp_models.critic`).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

import tensorflow as tf

if TYPE_CHECKING:
    from tfp_models.hybrid import HybridModel

Critic = Callable[[tf.Tensor], tf.Tensor]
LIKELIHOOD_TERMS = ("nll", "recon", "kl", "log_det")


def sum_over_example(x: tf.Tensor) -> tf.Tensor:
    """Sum over every axis but the first: [N, ...] -> [N]."""
    rank = x.shape.rank
    return tf.reduce_sum(x, axis=list(range(1, rank)) if rank is not None
                         else tf.range(1, tf.rank(x)))


def interpolates(real: tf.Tensor, fake: tf.Tensor, mix: tf.Tensor) -> tf.Tensor:
    """x_hat = m * real + (1 - m) * fake for per-example weights ``mix`` ([N] or [N, 1, ...])
    in [0, 1]."""
    m = tf.reshape(tf.cast(mix, real.dtype), tf.concat([[-1], tf.ones([tf.rank(real) - 1],
                                                                       tf.int32)], 0))
    return m * real + (1.0 - m) * fake


def squared_gradient_norms(critic: Critic, x: tf.Tensor) -> tf.Tensor:
    """||grad_x D(x)||_2^2 per example [N] (D applied to the batch; examples independent)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(critic(x))
    return sum_over_example(tape.gradient(out, x) ** 2)


def gradient_norms(critic: Critic, x: tf.Tensor) -> tf.Tensor:
    """||grad_x D(x)||_2 per example [N] (+1e-12 under the root: finite gradient at 0)."""
    return tf.sqrt(squared_gradient_norms(critic, x) + 1e-12)


def wgan_gp_penalty(critic: Critic, real: tf.Tensor, fake: tf.Tensor,
                    mix: tf.Tensor) -> tf.Tensor:
    """WGAN-GP penalty per example [N], unweighted: (||grad D(x_hat)||_2 - 1)^2 at the
    interpolates x_hat (:func:`interpolates`)."""
    return (gradient_norms(critic, interpolates(real, fake, mix)) - 1.0) ** 2


@dataclasses.dataclass
class Losses:
    """One step's losses (:meth:`Objective.losses`): ``generator`` L_G [N]; ``terms`` the
    MLE terms with 'loss' (variants with an MLE term, else None); ``adv`` L_adv [N] and
    ``discriminator`` (what the discriminator update returned) for adversarial variants."""
    generator: tf.Tensor
    terms: dict | None = None
    adv: tf.Tensor | None = None
    discriminator: tf.Tensor | None = None


class Objective:
    """The losses of ``model``'s variant (its ``spec``) and settings (its ``config``).

    ``fused`` (default): one decoder call for the posterior's and the prior's latents
    (:meth:`~tfp_models.hybrid.HybridModel.mle_terms_and_adversarial_samples`) and one
    discriminator call of 2N rows for real and fake, whose tape also gives R1's gradient;
    the networks are per-example, so values and gradients are those of separate calls.
    False: separate calls (the step before 2026-12-06, kept as a benchmark baseline).
    """

    def __init__(self, model: "HybridModel", fused: bool = True):
        self.model, self.spec, self.config, self.fused = model, model.spec, model.config, fused
        penalty = self.config.gradient_penalty
        if self.spec.adversarial == "wgan" and penalty == "none":
            penalty = "wgan-gp"  # a WGAN critic needs its Lipschitz penalty
        self.penalty = penalty
        self.lambda_adv = self.config.lambda_adv if self.spec.mle else 1.0

    # ------------------------------------------------------------------ generator

    def training_loss(self, terms: dict, kl_weight: tf.Tensor | float = 1.0) -> dict:
        """``terms`` of :meth:`~tfp_models.hybrid.HybridModel.mle_terms` plus ``loss`` [N]
        nats, the MLE part of L_G: -recon + kl_weight * KL_fb - log_det, where KL_fb =
        sum_j max(free_bits, KL_j) (flow posteriors, without per-dimension KLs:
        max(free_bits * d, KL)). With kl_weight = 1 and free_bits = 0 it is ``nll``."""
        if not self.spec.latent:
            return {**terms, "loss": terms["nll"]}
        kl, fb = terms["kl"], self.config.free_bits
        if fb > 0:
            if terms["kl_dims"] is not None:
                kl = tf.reduce_sum(tf.maximum(terms["kl_dims"], fb), axis=-1)
            else:
                kl = tf.maximum(kl, fb * self.config.latent_dim)
        loss = terms["recon"] + tf.cast(kl_weight, kl.dtype) * kl - terms["log_det"]
        return {**terms, "loss": loss}

    def mle_training_loss(self, x: tf.Tensor, eps: tf.Tensor | None = None,
                          kl_weight: tf.Tensor | float = 1.0) -> dict:
        """:meth:`training_loss` of the model's MLE terms of images ``x``."""
        return self.training_loss(self.model.mle_terms(x, eps), kl_weight)

    def generator_forward(self, x: tf.Tensor, eps: tf.Tensor | None,
                          kl_weight: tf.Tensor | float,
                          prior_noise: tf.Tensor | None) -> tuple[dict | None, tf.Tensor | None]:
        """The generator's forward pass: (MLE terms with 'loss' of ``x``, or None without an
        MLE term; the discriminator's fakes from ``prior_noise``, or None without an
        adversarial term)."""
        model, spec = self.model, self.spec
        if self.fused and spec.mle and spec.adversarial:
            terms, fake = model.mle_terms_and_adversarial_samples(x, eps, prior_noise)
        else:
            terms = model.mle_terms(x, eps) if spec.mle else None
            fake = model.adversarial_samples(prior_noise) if spec.adversarial else None
        return (None if terms is None else self.training_loss(terms, kl_weight)), fake

    def losses(self, x: tf.Tensor, batch: dict,
               update_discriminator: Callable[[Callable[[], tf.Tensor]], tf.Tensor]) -> Losses:
        """One step's losses, to be called inside the generator's gradient tape.

        ``x``: the dequantized images [N, H, W, C]; ``batch``: 'images' (uint8, the same
        images), the noise of :meth:`~tfp_models.hybrid.HybridModel.noise_shapes` and
        'kl_weight'. Adversarial variants call ``update_discriminator`` with a function
        that returns :meth:`discriminator_losses` [N] of this batch's real and fake images
        (the caller's optimizer updates D on it, possibly several times); L_adv is then
        computed with the updated D."""
        terms, fake = self.generator_forward(x, batch.get("posterior"), batch["kl_weight"],
                                             batch.get("prior"))
        if fake is None:
            return Losses(terms["loss"], terms)
        real = self.model.discriminator_real_inputs(batch["images"], x)
        d_loss = update_discriminator(
            lambda: self.discriminator_losses(real, fake, batch.get("mix")))
        adv = self.model.generator_adversarial_losses(fake)
        generator = self.lambda_adv * adv if terms is None else terms["loss"] + self.lambda_adv * adv
        return Losses(generator, terms, adv, d_loss)

    def monitored(self, x: tf.Tensor, losses: Losses) -> dict[str, tf.Tensor]:
        """Per-example values to report [N]: 'adv' (adversarial variants) and the likelihood
        terms :data:`LIKELIHOOD_TERMS` (variants with a likelihood: those of the step's
        forward pass; a flow trained without an MLE term, 'flow_wgan', is evaluated on
        ``x`` now, i.e. after an update if called after it)."""
        out = {} if losses.adv is None else {"adv": losses.adv}
        if self.spec.has_likelihood:
            terms = losses.terms if self.spec.mle else self.model.mle_terms(x)
            out.update({name: terms[name] for name in LIKELIHOOD_TERMS})
        return out

    # ------------------------------------------------------------------ discriminator

    def discriminator_losses(self, real: tf.Tensor, fake: tf.Tensor,
                             mix: tf.Tensor | None = None) -> tf.Tensor:
        """L_D per example [N]: BCE on real vs fake (log-ratio variants) or the WGAN critic
        loss, plus the penalty (R1, or WGAN-GP at the interpolates with weights ``mix``
        [N, 1, 1, 1], uniform draws if None). No gradient reaches the fakes' generator."""
        disc = self.model.discriminator
        fake = tf.stop_gradient(fake)
        r1 = self.penalty == "r1"
        if self.fused:  # with R1, the same call gives dD(real)/d real
            n = tf.shape(real)[0]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(real)
                logits = disc(tf.concat([real, tf.cast(fake, real.dtype)], 0))
                d_real, d_fake = logits[:n], logits[n:]
                d_real_sum = tf.reduce_sum(d_real)
            real_grad_sq = sum_over_example(tape.gradient(d_real_sum, real) ** 2) if r1 else None
        else:
            d_real, d_fake = disc(real), disc(fake)
            real_grad_sq = squared_gradient_norms(disc, real) if r1 else None
        if self.spec.adversarial == "wgan":
            loss = d_fake - d_real
        else:
            loss = tf.nn.softplus(-d_real) + tf.nn.softplus(d_fake)
        if r1:
            loss += 0.5 * self.config.gp_weight * real_grad_sq
        elif self.penalty == "wgan-gp":
            if mix is None:
                mix = tf.random.uniform((tf.shape(real)[0], 1, 1, 1))
            loss += self.config.gp_weight * wgan_gp_penalty(disc, real, fake, mix)
        return loss
