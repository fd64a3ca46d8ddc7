"""The hybrid model's math: BPD of known densities, bounds, posterior log-densities against
brute-force Jacobians, sampling and interpolation, the decoder's data init. Where the
adversarial gradients go and the training losses: test_hybrid_losses.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfp_models import flows, metrics, posteriors
from tfp_models.hybrid import HybridConfig, HybridModel

SHAPE = (8, 8, 1)
SMALL = dict(image_shape=SHAPE, latent_dim=3, enc_dec_channels=4, flow_scales=2, flow_hidden=4,
             disc_channels=4, posterior_hidden=8)


def images(n=4, seed=0):
    return tf.random.stateless_uniform((n,) + SHAPE, seed=(seed, 1))


def test_uniform_density_is_8_bits_per_dim():
    assert metrics.bits_per_dim(0.0, (32, 32, 3)) == pytest.approx(8.0, abs=1e-12)
    assert metrics.bits_per_dim(np.zeros(5), SHAPE) == pytest.approx(np.full(5, 8.0))
    assert metrics.bits_per_dim_to_nats(8.0, SHAPE) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_bits_per_dim_has_its_closed_form():
    """Data from N(m, s^2) scored by that Gaussian: E[-ln p]/D = 0.5 ln(2 pi e s^2)."""
    m, s, d = 0.5, 0.05, 64
    x = np.random.default_rng(0).normal(m, s, size=(20000, d))
    log_p = stats.norm(m, s).logpdf(x).sum(axis=1)
    closed = (0.5 * math.log(2 * math.pi * math.e * s ** 2) + math.log(256)) / math.log(2)
    assert metrics.bits_per_dim(log_p, (8, 8, 1)).mean() == pytest.approx(closed, abs=2e-3)


def test_fresh_flow_model_density_is_the_logit_gaussian_closed_form():
    """Untrained `flow`: couplings are the identity (zero-init) and ActNorm is too before
    data init, so log p(x) = sum ln N(logit(a + (1-2a)x); 0, 1) + ln|d logit / dx|."""
    model = HybridModel(HybridConfig(variant="flow", **SMALL))
    x = images(3).numpy().astype(np.float64)
    a = flows.LOGIT_ALPHA
    p = a + (1 - 2 * a) * x
    v = np.log(p) - np.log1p(-p)
    expected = (stats.norm.logpdf(v) + np.log(1 - 2 * a) - np.log(p) - np.log1p(-p)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(model.log_prob_bound(tf.constant(x, tf.float32)), expected, rtol=1e-5)


def test_importance_weighted_bound_matches_numpy_and_tightens():
    log_w = np.random.default_rng(1).normal(size=(16, 5)) * 3
    expected = np.log(np.exp(log_w).mean(axis=0))
    np.testing.assert_allclose(metrics.importance_weighted_bound(tf.constant(log_w)), expected,
                               rtol=1e-10)
    model = HybridModel(HybridConfig(variant="vae_f", **SMALL))
    x = images(8, seed=3)
    model.data_init(x)
    elbo = model.log_prob_bound(x, 1)
    eps = tf.random.stateless_normal((8, 1, 3), seed=(4, 4))
    assert model.log_weights(x, 1, eps)["log_w"].shape == (1, 8)
    # K = 1 with the same noise is the Monte Carlo ELBO; the analytic-KL ELBO differs only by
    # the KL estimator, and the IW bound with K = 64 is higher (tighter) on average.
    iw = model.log_prob_bound(x, 64)
    assert float(tf.reduce_mean(iw)) > float(tf.reduce_mean(elbo))


@pytest.mark.parametrize("kind", ["iaf", "planar", "realnvp"])
def test_flow_posterior_log_density_matches_brute_force_jacobian(kind):
    d = 4
    post = posteriors.make_posterior(kind, d, num_steps=2, hidden_units=16)
    params = tf.random.stateless_normal((1, post.param_size), seed=(2, 2))
    post.sample_and_log_prob(params, 1)  # build
    for v in post.trainable_variables:  # away from the identity init
        v.assign(v + 0.3 * tf.random.stateless_normal(v.shape, seed=(7, 7)))
    eps = tf.random.stateless_normal((1, 1, d), seed=(3, 3))
    z, log_q = post.sample_and_log_prob(params, 1, eps)
    mu, sigma = post.base(params)

    def push(e):  # eps -> z for fixed params
        return post.sample_and_log_prob(params, 1, tf.reshape(e, (1, 1, d)))[0][0, 0]

    e = tf.reshape(eps, (d,))
    with tf.GradientTape() as tape:
        tape.watch(e)
        out = push(e)
    jac = tape.jacobian(out, e).numpy().astype(np.float64)  # dz/deps = dz/dz0 * diag(sigma)
    log_base = stats.norm.logpdf(e.numpy()).sum()  # density of eps
    expected = log_base - np.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(log_q.numpy()[0, 0], expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(z.numpy()[0, 0], (mu + sigma * eps[0]).numpy())  # the flow acts


def test_made_is_autoregressive():
    from tfp_models.posterior_networks import MADE

    made = MADE(5, 16)
    z = tf.random.normal((1, 5))
    ctx = tf.random.normal((1, 3))
    made(z, ctx)
    for v in made.trainable_variables:
        v.assign(v + 0.5 * tf.random.normal(v.shape))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        shift, log_scale = made(z, ctx)
    for out in (shift, log_scale):
        jac = tape.jacobian(out, z).numpy()[0, :, 0, :]  # [out, in]
        assert np.allclose(np.triu(jac), 0.0)  # output i depends on inputs < i only
        assert np.abs(np.tril(jac, -1)).sum() > 0


def test_samples_are_uint8_reproducible_and_interpolation_hits_the_endpoints():
    model = HybridModel(HybridConfig(variant="vae_f", **SMALL))
    x = images(2, seed=8)
    model.data_init(x)
    a, b = model.sample(3, 1.0, seed=5), model.sample(3, 1.0, seed=5)
    assert a.dtype == tf.uint8 and a.shape == (3,) + SHAPE
    np.testing.assert_array_equal(a, b)
    path = model.interpolate(x[0], x[1], steps=5)
    assert path.shape == (5,) + SHAPE
    z = model.encode_mean(x)
    np.testing.assert_allclose(path[0], model.decode_to_images(z[:1], 0.0)[0], atol=1e-5)
    np.testing.assert_allclose(path[-1], model.decode_to_images(z[1:], 0.0)[0], atol=1e-5)


def test_gan_has_no_likelihood_and_unknown_names_are_errors():
    model = HybridModel(HybridConfig(variant="gan", **SMALL))
    with pytest.raises(ValueError, match="defines no likelihood"):
        model.log_prob_bound(images(1))
    with pytest.raises(ValueError, match="unknown posterior"):
        HybridConfig(posterior="vamp", **SMALL)
    with pytest.raises(ValueError, match="unknown gradient_penalty"):
        HybridConfig(gradient_penalty="r2", **SMALL)


def test_spectral_normalization_is_active_in_the_discriminator():
    from tfp_models.networks import Discriminator

    disc = Discriminator(SHAPE, 4, spectral_norm=True)
    x = images(4, seed=9)
    for _ in range(30):  # one power iteration per training call
        disc(x)
    head = disc.head.layer.kernel.numpy().reshape(-1, 1)
    stem = disc.stem.layer.kernel.numpy().reshape(-1, 4)
    for kernel in (head, stem):
        assert np.linalg.svd(kernel, compute_uv=False)[0] == pytest.approx(1.0, abs=0.05)


def test_decoder_data_init_matches_the_feature_mean_and_std():
    model = HybridModel(HybridConfig(variant="vae", **SMALL))
    uint8 = tf.constant(np.random.default_rng(1).integers(0, 256, (256,) + SHAPE), tf.uint8)
    x = flows.dequantize_images(uint8, tf.random.stateless_uniform((256,) + SHAPE, seed=(4, 5)))
    z = tf.random.stateless_normal((256, 3), seed=(6, 7))
    model.data_init(x, z)
    y, _ = model.flow.forward_and_log_det(x)
    mu, log_sigma = model.decoder(z)
    np.testing.assert_allclose(tf.reduce_mean(mu, 0).numpy(), tf.reduce_mean(y, 0).numpy(),
                               atol=1e-4)
    # softplus is convex, so the batch mean of log sigma is at least the target; with the
    # small spread of a fresh decoder's raw output it is close to it.
    target = 0.5 * np.log(np.var(y.numpy(), axis=0))
    np.testing.assert_allclose(tf.reduce_mean(log_sigma, 0).numpy(), target, atol=0.05)
    # With a learned flow the decoder keeps sigma = 1 (its features move with the flow).
    flow_model = HybridModel(HybridConfig(variant="vae_f", **SMALL))
    flow_model.data_init(x, z)
    np.testing.assert_allclose(flow_model.decoder(z)[1].numpy().mean(), 0.0, atol=0.3)


def test_one_importance_draw_and_latent_codes_work_for_every_kind_of_variant():
    """single_draw_log_weights is the latent variants' one-sample log-weight and the flows'
    exact ln p(x); latent codes invert the flow's features for flows (a round trip) and are
    decoder means for latent variants."""
    x = images(3)
    hybrid = HybridModel(HybridConfig(variant="vae_f", **SMALL))
    assert hybrid.posterior_noise_dim == 3 and hybrid.latent_code_size == 3
    eps = tf.random.stateless_normal((3, 3), seed=(4, 2))
    np.testing.assert_allclose(hybrid.single_draw_log_weights(x, eps).numpy(),
                               hybrid.log_weights(x, 1, eps[:, None])["log_w"][0].numpy(),
                               rtol=1e-6)
    z = tf.random.stateless_normal((2, 3), seed=(5, 2))
    np.testing.assert_allclose(hybrid.latent_codes_to_images(z).numpy(),
                               hybrid.decode_to_images(z, 0.0).numpy())

    flow = HybridModel(HybridConfig(variant="flow", **SMALL))
    assert flow.posterior_noise_dim == 0 and flow.latent_code_size == 64
    np.testing.assert_allclose(flow.single_draw_log_weights(x, tf.zeros((3, 0))).numpy(),
                               flow.log_prob_bound(x).numpy(), rtol=1e-6)
    y, _ = flow.flow.forward_and_log_det(x)
    back = flow.latent_codes_to_images(tf.reshape(y, (3, -1)))
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-4)


def test_generate_rows_is_sample_rows_before_quantization():
    model = HybridModel(HybridConfig(variant="cqf", **SMALL))
    seeds = tf.constant([3, 1 << 33, 7], tf.int64)
    t = tf.constant([1.0, 0.0, 0.5])
    np.testing.assert_array_equal(flows.quantize_images(model.generate_rows(seeds, t)).numpy(),
                                  model.sample_rows(seeds, t).numpy())
    np.testing.assert_array_equal(model.sample_rows(seeds[1:2], t[1:2]).numpy(),
                                  model.sample_rows(seeds, t)[1:2].numpy())
