"""The hybrid model's training losses: where the adversarial gradients go, the
discriminator's penalties and inputs, one fused call equal to the separate ones, free bits
and the KL weight."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_hybrid import SHAPE, SMALL, images

from tfp_models import flows
from tfp_models.hybrid import HybridConfig, HybridModel
from tfp_models.objective import Objective, squared_gradient_norms


def test_adversarial_gradients_reach_decoder_and_flow_not_discriminator_step():
    model = HybridModel(HybridConfig(variant="cqf", **SMALL))
    x = images(4, seed=5)
    model.data_init(x)
    prior = tf.random.normal((4, 3))
    with tf.GradientTape(persistent=True) as tape:
        fake = model.adversarial_samples(prior)
        l_adv = tf.reduce_mean(model.generator_adversarial_losses(fake))
        l_d = tf.reduce_mean(Objective(model).discriminator_losses(x, fake))
    np.testing.assert_allclose(l_adv, -tf.reduce_mean(model.discriminator(fake)), rtol=1e-6)
    g_flow = tape.gradient(l_adv, model.flow.trainable_variables)
    g_dec = tape.gradient(l_adv, model.decoder.trainable_variables)
    assert all(g is not None for g in g_flow) and any(float(tf.reduce_sum(tf.abs(g))) > 0 for g in g_flow)
    # Every decoder weight but the log-sigma bias (L_adv uses the mean mu(z) only).
    for v, g in zip(model.decoder.trainable_variables, g_dec):
        assert (g is None) == ("sigma_bias" in v.path), v.path
    # The discriminator loss does not train the generator (fake is stopped).
    assert all(g is None for g in tape.gradient(l_d, model.generator_variables))
    assert all(g is not None for g in tape.gradient(l_d, model.discriminator_variables))


def test_penalties_add_to_the_discriminator_loss():
    base = HybridModel(HybridConfig(variant="cq", **SMALL))
    x, fake = images(4, seed=6), images(4, seed=7)
    plain = Objective(base).discriminator_losses(x, fake)
    for penalty in ("r1", "wgan-gp"):
        base.config = HybridConfig(variant="cq", gradient_penalty=penalty, **SMALL)
        penalized = Objective(base).discriminator_losses(x, fake)
        assert np.all(penalized.numpy() >= plain.numpy() - 1e-6)


def _separate_generator_losses(model, x, eps, prior):
    """The MLE loss and L_adv by the two separate decoder calls (the step before fusion)."""
    terms = Objective(model).mle_training_loss(x, eps, 0.5)
    fake = model.adversarial_samples(prior)
    return terms, fake


def test_one_decoder_call_equals_the_two_separate_calls_in_values_and_gradients():
    model = HybridModel(HybridConfig(variant="cqf", **SMALL))
    x = images(4, seed=11)
    model.data_init(x)
    eps = tf.random.stateless_normal((4, 1, 3), seed=(11, 1))
    prior = tf.random.stateless_normal((4, 3), seed=(11, 2))
    results = []
    for fused in (False, True):
        with tf.GradientTape() as tape:
            if fused:
                terms, fake = Objective(model).generator_forward(x, eps, 0.5, prior)
            else:
                terms, fake = _separate_generator_losses(model, x, eps, prior)
            loss = tf.reduce_sum(terms["loss"] + 10.0 * model.generator_adversarial_losses(fake))
        grads = tape.gradient(loss, model.generator_variables)
        results.append((terms, fake, loss, grads))
    (t0, f0, l0, g0), (t1, f1, l1, g1) = results
    for key in ("loss", "nll", "recon", "kl", "log_det"):
        np.testing.assert_allclose(t1[key], t0[key], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f1, f0, atol=1e-6)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    assert len(g1) == len(g0) and any(float(tf.reduce_max(tf.abs(g))) > 0 for g in g0 if g is not None)
    for a, b in zip(g0, g1):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("penalty", ["none", "r1", "wgan-gp"])
def test_one_discriminator_call_equals_the_per_batch_formula(penalty):
    """D(real) and D(fake) in one call of 2N rows: the per-example losses and their
    gradients equal the formula with separate calls (no spectral norm, so D is a fixed
    function; R1 = gamma/2 |dD(real)/d real|^2 by a separate tape). The objective's
    unfused option (separate calls) gives the same."""
    model = HybridModel(HybridConfig(variant="cq", gradient_penalty=penalty, **SMALL))
    x, fake = images(4, seed=12), images(4, seed=13)
    mix = tf.random.stateless_uniform((4, 1, 1, 1), seed=(12, 3))
    d = model.discriminator
    with tf.GradientTape(persistent=True) as tape:
        fused = Objective(model).discriminator_losses(x, fake, mix)
        separate = Objective(model, fused=False).discriminator_losses(x, fake, mix)
        expected = tf.nn.softplus(-d(x)) + tf.nn.softplus(d(fake))
        gamma = model.config.gp_weight
        if penalty == "r1":
            expected += 0.5 * gamma * squared_gradient_norms(d, x)
        elif penalty == "wgan-gp":
            point = mix * x + (1.0 - mix) * fake
            expected += gamma * (tf.sqrt(squared_gradient_norms(d, point) + 1e-12) - 1.0) ** 2
        fused_sum, expected_sum = tf.reduce_sum(fused), tf.reduce_sum(expected)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(separate, expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(tape.gradient(expected_sum, model.discriminator_variables),
                    tape.gradient(fused_sum, model.discriminator_variables)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_straight_through_quantize_is_bin_centres_forward_identity_backward():
    x = tf.constant([[-0.2, 0.0, 0.3, 0.99999, 1.3]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        q = flows.straight_through_quantize(x)
        out = tf.reduce_sum(q * tf.constant([[1.0, 2.0, 3.0, 4.0, 5.0]]))
    expected = flows.dequantize_images(flows.quantize_images(x))
    np.testing.assert_allclose(q.numpy(), expected.numpy(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(tape.gradient(out, x).numpy(), [[1.0, 2.0, 3.0, 4.0, 5.0]])


@pytest.mark.parametrize("disc_inputs", ["quantized", "dequantized"])
def test_discriminator_inputs_real_and_fake_meet_on_one_lattice(disc_inputs):
    """'quantized': both real and fake inputs are bin centres (k + 0.5) / 256 and the
    adversarial gradient reaches pixels that f^-1 puts outside [0, 1]; 'dequantized': the
    real input is the noisy training image and clipped pixels get no gradient."""
    model = HybridModel(HybridConfig(variant="cqf", disc_inputs=disc_inputs, **SMALL))
    uint8 = tf.constant(np.random.default_rng(0).integers(0, 256, (4,) + SHAPE), tf.uint8)
    x = flows.dequantize_images(uint8, tf.random.stateless_uniform((4,) + SHAPE, seed=(1, 2)))
    model.data_init(x)
    real = model.discriminator_real_inputs(uint8, x)
    # Features that f^-1 maps outside [0, 1]: sigmoid(+-4) -> x = 1.036 and -0.036.
    y = tf.Variable(tf.where(tf.range(64) % 2 == 0, -4.0, 4.0)[None, :] * tf.ones((2, 1)))
    with tf.GradientTape() as tape:
        fake_in = tf.reshape(y, (2,) + SHAPE)
        if disc_inputs == "quantized":
            fake = flows.straight_through_quantize(model.features_to_images(fake_in, clip=False))
        else:
            fake = model.features_to_images(fake_in)
        loss = tf.reduce_sum(model.generator_adversarial_losses(fake))
    grad = tape.gradient(loss, y)
    if disc_inputs == "quantized":
        for t in (real, fake):
            k = t.numpy() * 256.0 - 0.5
            np.testing.assert_allclose(k, np.round(k), atol=1e-4)
        assert float(tf.reduce_min(tf.abs(grad))) > 0.0
    else:
        np.testing.assert_allclose(real.numpy(), x.numpy())
        assert float(tf.reduce_max(tf.abs(grad))) == 0.0


def test_free_bits_and_kl_weight_change_the_training_loss_not_the_bound():
    model = HybridModel(HybridConfig(variant="vae_f", free_bits=0.5, **SMALL))
    x = images(6, seed=9)
    model.data_init(x)
    eps = tf.random.stateless_normal((6, 1, 3), seed=(2, 3))
    terms = Objective(model).mle_training_loss(x, eps, kl_weight=0.25)
    kl_dims = terms["kl_dims"].numpy()
    np.testing.assert_allclose(terms["kl"].numpy(), kl_dims.sum(-1), rtol=1e-5)
    hinge = np.maximum(kl_dims, 0.5).sum(-1)
    expected = terms["recon"].numpy() + 0.25 * hinge - terms["log_det"].numpy()
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(-model.log_prob_bound(x, 1, eps).numpy(), terms["nll"].numpy(),
                               rtol=1e-6)
    exact = HybridModel(HybridConfig(variant="vae_f", **SMALL))
    exact.data_init(x)
    plain = Objective(exact).mle_training_loss(x, eps)
    np.testing.assert_allclose(plain["loss"].numpy(), plain["nll"].numpy(), rtol=1e-6)
