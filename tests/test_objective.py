"""The training objective (tfp_models.objective) against hand computations: L_G = L_MLE +
lambda_adv * L_adv with L_adv from the discriminator after its update, the discriminator
losses and penalties against per-example brute-force gradients, the critic sharing the
penalty, and the monitored terms of each kind of variant."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfp_models import critic as critic_lib
from tfp_models import flows, objective
from tfp_models.hybrid import HybridConfig, HybridModel
from tfp_models.objective import Objective

SHAPE = (8, 8, 1)
SMALL = dict(image_shape=SHAPE, latent_dim=3, enc_dec_channels=4, flow_scales=2, flow_hidden=4,
             disc_channels=4, posterior_hidden=8)
N = 4


def make(variant, **kw):
    model = HybridModel(HybridConfig(variant=variant, **SMALL, **kw))
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (N,) + SHAPE), tf.uint8)
    batch = {"images": images, "kl_weight": tf.fill((N,), 0.7)}
    for k, (name, shape) in enumerate(model.noise_shapes().items()):
        draw = (tf.random.stateless_uniform if name in ("dequant", "mix")
                else tf.random.stateless_normal)
        batch[name] = draw((N,) + tuple(shape), seed=(5, k))
    x = flows.dequantize_images(images, batch["dequant"])
    model.data_init(x, batch.get("prior"))
    return model, batch, x


class SgdDiscriminatorUpdate:
    """An update_discriminator that records its calls and moves D by one SGD step."""

    def __init__(self, model):
        self.model, self.calls, self.before = model, [], None

    def __call__(self, d_losses):
        d_vars = self.model.discriminator_variables
        self.before = [v.numpy().copy() for v in d_vars]
        with tf.GradientTape() as tape:
            values = d_losses()
            loss = tf.reduce_mean(values)
        for v, g in zip(d_vars, tape.gradient(loss, d_vars)):
            v.assign_sub(0.5 * g)
        self.calls.append(values.numpy())
        return loss


@pytest.mark.parametrize("variant,lambda_adv,penalty", [
    ("cqf", 0.3, "r1"), ("flowgan", 2.0, "wgan-gp"), ("gan", 0.3, "none"),
    ("flow_wgan", 0.3, "none"), ("vae_f", 0.3, "none")])
def test_generator_loss_is_mle_plus_lambda_times_adv_of_the_updated_discriminator(
        variant, lambda_adv, penalty):
    model, batch, x = make(variant, lambda_adv=lambda_adv, gradient_penalty=penalty)
    spec, obj = model.spec, Objective(model)
    update = SgdDiscriminatorUpdate(model)
    losses = obj.losses(x, batch, update)
    mle = (obj.mle_training_loss(x, batch.get("posterior"), batch["kl_weight"])["loss"].numpy()
           if spec.mle else 0.0)
    if not spec.adversarial:
        assert update.calls == [] and losses.adv is None and losses.discriminator is None
        np.testing.assert_allclose(losses.generator.numpy(), mle, rtol=1e-6)
        return
    assert len(update.calls) == 1
    fake = model.adversarial_samples(batch["prior"])
    real = model.discriminator_real_inputs(batch["images"], x)
    # The discriminator's loss it was handed, with D before the update: by hand.
    updated = [v.numpy().copy() for v in model.discriminator_variables]
    for v, w in zip(model.discriminator_variables, update.before):
        v.assign(w)
    d_real, d_fake = model.discriminator(real).numpy(), model.discriminator(fake).numpy()
    if spec.adversarial == "wgan":
        base = d_fake - d_real
    else:
        base = np.logaddexp(0, -d_real) + np.logaddexp(0, d_fake)
    gamma = model.config.gp_weight
    if obj.penalty == "wgan-gp":  # 'flow_wgan' without a penalty configured: WGAN-GP anyway
        base += gamma * objective.wgan_gp_penalty(model.discriminator, real, fake,
                                                  batch["mix"]).numpy()
    elif obj.penalty == "r1":
        base += 0.5 * gamma * objective.squared_gradient_norms(model.discriminator, real).numpy()
    assert obj.penalty == ("wgan-gp" if variant == "flow_wgan" else penalty)
    np.testing.assert_allclose(update.calls[0], base, rtol=1e-4, atol=1e-5)
    # L_adv with the updated D, weighted by lambda_adv only when there is an MLE term.
    for v, w in zip(model.discriminator_variables, updated):
        v.assign(w)
    adv = -model.discriminator(fake).numpy()
    assert not np.allclose(adv, -d_fake)  # the update moved D
    np.testing.assert_allclose(losses.adv.numpy(), adv, rtol=1e-5, atol=1e-6)
    weight = lambda_adv if spec.mle else 1.0
    assert obj.lambda_adv == weight
    np.testing.assert_allclose(losses.generator.numpy(), mle + weight * adv, rtol=1e-5,
                               atol=1e-5)


def _brute_force_input_gradient(disc, x):
    """dD(x_i)/dx_i one example at a time, [N, ...] (no batching in the networks)."""
    grads = []
    for i in range(x.shape[0]):
        xi = tf.identity(x[i:i + 1])
        with tf.GradientTape() as tape:
            tape.watch(xi)
            out = disc(xi)[0]
        grads.append(tape.gradient(out, xi)[0].numpy())
    return np.stack(grads)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("variant,penalty", [("cq", "none"), ("cq", "r1"), ("cq", "wgan-gp"),
                                             ("flow_wgan", "none"), ("flow_wgan", "r1")])
def test_discriminator_losses_and_penalties_against_brute_force(variant, penalty, fused):
    model, batch, x = make(variant, gradient_penalty=penalty, gp_weight=3.0)
    obj = Objective(model, fused=fused)
    disc = model.discriminator
    for v in model.discriminator_variables:  # away from init, so gradients are not tiny
        v.assign(v + 0.2 * tf.random.stateless_normal(v.shape, seed=(1, 2)))
    real = model.discriminator_real_inputs(batch["images"], x)
    fake = tf.random.stateless_uniform((N,) + SHAPE, seed=(3, 4))
    mix = batch.get("mix", tf.random.stateless_uniform((N, 1, 1, 1), seed=(6, 7)))
    got = obj.discriminator_losses(real, fake, mix).numpy()
    d_real = np.array([float(disc(real[i:i + 1])[0]) for i in range(N)])
    d_fake = np.array([float(disc(fake[i:i + 1])[0]) for i in range(N)])
    if model.spec.adversarial == "wgan":
        expected = d_fake - d_real
    else:
        expected = np.logaddexp(0, -d_real) + np.logaddexp(0, d_fake)
    if obj.penalty == "r1":
        g = _brute_force_input_gradient(disc, real)
        expected = expected + 1.5 * (g ** 2).reshape(N, -1).sum(1)
    elif obj.penalty == "wgan-gp":
        m = mix.numpy().reshape(N, 1, 1, 1)
        g = _brute_force_input_gradient(disc, tf.constant(m * real.numpy() + (1 - m) * fake))
        expected = expected + 3.0 * (np.linalg.norm(g.reshape(N, -1), axis=1) - 1.0) ** 2
    assert obj.penalty == ("wgan-gp" if variant == "flow_wgan" and penalty == "none" else penalty)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_the_critic_and_the_hybrid_discriminator_use_one_penalty():
    """critic.critic_loss's penalty term and the 'flow_wgan' discriminator's (always WGAN-GP)
    are the same function of the same critic and inputs."""
    model, batch, x = make("flow_wgan", gp_weight=4.0)
    assert critic_lib.wgan_gp_penalty is objective.wgan_gp_penalty
    real = model.discriminator_real_inputs(batch["images"], x)
    fake = tf.random.stateless_uniform((N,) + SHAPE, seed=(8, 9))
    mix = tf.reshape(batch["mix"], (N,))  # the critic's per-example weights [N]
    critic_out = critic_lib.critic_loss(model.discriminator, real, fake, mix, 4.0)
    hybrid = Objective(model).discriminator_losses(real, fake, batch["mix"])
    # mean L_D = E_fake[D] - E_real[D] + gp_weight * E[penalty]: the critic's loss
    np.testing.assert_allclose(float(tf.reduce_mean(hybrid)), float(critic_out["loss"]),
                               rtol=1e-5, atol=1e-6)
    d = model.discriminator
    penalty = (hybrid - (d(fake) - d(real))) / 4.0
    np.testing.assert_allclose(float(tf.reduce_mean(penalty)), float(critic_out["penalty"]),
                               rtol=1e-4, atol=1e-6)
    assert float(critic_out["penalty"]) > 0


def test_monitored_terms_by_kind_of_variant():
    """MLE variants report their forward pass's terms, 'flow_wgan' the exact likelihood of
    x evaluated when asked, 'gan' only L_adv."""
    for variant, keys in [("vae_f", {"nll", "recon", "kl", "log_det"}),
                          ("cqf", {"adv", "nll", "recon", "kl", "log_det"}),
                          ("flow_wgan", {"adv", "nll", "recon", "kl", "log_det"}),
                          ("gan", {"adv"})]:
        model, batch, x = make(variant)
        obj = Objective(model)
        losses = obj.losses(x, batch, lambda d_losses: tf.reduce_mean(d_losses()))
        monitored = obj.monitored(x, losses)
        assert set(monitored) == keys, variant
        if variant == "flow_wgan":
            assert losses.terms is None
            np.testing.assert_allclose(monitored["nll"], -model.log_prob_bound(x), rtol=1e-6)
        elif model.spec.mle:
            assert monitored["nll"] is losses.terms["nll"]


def test_fused_and_separate_objectives_give_the_same_losses():
    model, batch, x = make("cqf", gradient_penalty="r1")
    out = []
    for fused in (True, False):
        seen = []

        def update(d_losses):
            seen.append(d_losses())
            return tf.reduce_mean(seen[-1])

        losses = Objective(model, fused=fused).losses(x, batch, update)
        out.append((losses.generator.numpy(), seen[0].numpy(), losses.terms["loss"].numpy()))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
