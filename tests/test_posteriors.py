"""The Real NVP posterior q(z|x): log-density against a brute-force Jacobian, alternating
masks, conditioning on the encoder's context, and the config/CLI plumbing."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfp_models import posteriors
from tfp_models.hybrid import HybridConfig, HybridModel


def _perturbed(kind: str, d: int, steps: int, n: int = 2):
    post = posteriors.make_posterior(kind, d, num_steps=steps, hidden_units=16)
    params = tf.random.stateless_normal((n, post.param_size), seed=(2, 2))
    post.sample_and_log_prob(params, 1)  # build
    for i, v in enumerate(post.trainable_variables):  # away from the identity init
        v.assign(v + 0.4 * tf.random.stateless_normal(v.shape, seed=(7, i)))
    return post, params


def test_realnvp_log_q_matches_brute_force_jacobian_for_every_draw_and_row():
    d, steps, k, n = 5, 3, 3, 2  # odd d: halves of 2 and 3; several draws and rows
    post, params = _perturbed("realnvp", d, steps, n)
    eps = tf.random.stateless_normal((k, n, d), seed=(3, 3))
    z, log_q = post.sample_and_log_prob(params, k, eps)
    assert z.shape == (k, n, d) and log_q.shape == (k, n)
    for j in range(k):
        for i in range(n):
            e = tf.constant(eps[j, i])
            with tf.GradientTape() as tape:
                tape.watch(e)
                # the full map eps -> z = T(mu + sigma * eps) of row i (its own context)
                out = post.sample_and_log_prob(params[i:i + 1], 1, tf.reshape(e, (1, 1, d)))[0]
                out = tf.reshape(out, (d,))
            np.testing.assert_allclose(out.numpy(), z[j, i].numpy(), rtol=1e-5, atol=1e-5)
            jac = tape.jacobian(out, e).numpy().astype(np.float64)
            expected = stats.norm.logpdf(e.numpy().astype(np.float64)).sum() \
                - np.linalg.slogdet(jac)[1]
            np.testing.assert_allclose(log_q[j, i].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_realnvp_masks_alternate_and_steps_are_conditioned_on_the_context():
    d = 6
    one, params = _perturbed("realnvp", d, 1)
    mu, sigma = one.base(params)
    eps = tf.random.stateless_normal((1, 2, d), seed=(5, 5))
    z0 = (mu + sigma * eps[0]).numpy()
    z1 = one.sample_and_log_prob(params, 1, eps)[0][0].numpy()
    np.testing.assert_allclose(z1[:, :3], z0[:, :3], rtol=1e-6)  # step 0 keeps the first half
    assert not np.allclose(z1[:, 3:], z0[:, 3:], atol=1e-3)
    two, params2 = _perturbed("realnvp", d, 2)
    mu2, sigma2 = two.base(params2)
    z2 = two.sample_and_log_prob(params2, 1, eps)[0][0].numpy()
    assert not np.allclose(z2[:, :3], (mu2 + sigma2 * eps[0]).numpy()[:, :3], atol=1e-3)

    # The same base draw under another context (only the context part of params changes).
    other = tf.concat([params2[:, :2 * d], params2[:, 2 * d:] + 1.0], axis=1)
    z_other = two.sample_and_log_prob(other, 1, eps)[0][0].numpy()
    assert not np.allclose(z_other, z2, atol=1e-3)
    with tf.GradientTape() as tape:
        tape.watch(params2)
        total = tf.reduce_sum(two.sample_and_log_prob(params2, 1, eps)[1])
    grad = tape.gradient(total, params2).numpy()
    assert np.abs(grad[:, 2 * d:]).sum() > 0  # log q depends on the context


def test_realnvp_fresh_is_the_base_gaussian_and_representative_is_the_pushed_mean():
    post = posteriors.make_posterior("realnvp", 4, num_steps=3, hidden_units=8)
    params = tf.random.stateless_normal((3, post.param_size), seed=(1, 1))
    eps = tf.random.stateless_normal((2, 3, 4), seed=(2, 1))
    diag = posteriors.DiagonalGaussian(4)
    z, log_q = post.sample_and_log_prob(params, 2, eps)
    z_d, log_q_d = diag.sample_and_log_prob(params[:, :8], 2, eps)
    np.testing.assert_allclose(z.numpy(), z_d.numpy(), rtol=1e-6)  # identity at init
    np.testing.assert_allclose(log_q.numpy(), log_q_d.numpy(), rtol=1e-5)
    np.testing.assert_allclose(post.representative(params).numpy(),
                               post.base(params)[0].numpy(), rtol=1e-6)


def test_realnvp_posterior_in_the_hybrid_model_and_config():
    cfg = HybridConfig(variant="vae", image_shape=(8, 8, 1), latent_dim=4, posterior="realnvp",
                       posterior_steps=3, posterior_hidden=8, enc_dec_channels=4,
                       enc_dec_downsamples=1)
    model = HybridModel(cfg)
    assert isinstance(model.posterior, posteriors.RealNVPPosterior)
    assert len(model.posterior.nets) == 3 and not model.has_analytic_kl
    names = {v.path for v in model.generator_variable_groups()["encoder"]}
    assert any("coupling_2" in n for n in names)  # the coupling nets train with the encoder
    x = tf.random.stateless_uniform((2, 8, 8, 1), seed=(1, 2))
    assert model.log_prob_bound(x, 5).shape == (2,)
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        HybridConfig(variant="vae", latent_dim=1, posterior="realnvp")
    with pytest.raises(ValueError, match="posterior_steps"):
        HybridConfig(variant="vae", posterior="realnvp", posterior_steps=0)
