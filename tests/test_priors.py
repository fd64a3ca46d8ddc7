"""Priors p(z): the mixture's density against a brute-force numpy sum, its sampler's
component frequencies and formula, and the mixture prior inside the hybrid model, the
trainer and the exported signatures."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from artifacts import model_io
from pipeline import trainer
from serving import export
from serving.signatures import deterministic_score
from tfp_models import priors
from tfp_models.hybrid import HybridConfig, HybridModel

from conftest import TINY, TINY_SHAPE, tiny_train_config


def mixture(d=3, k=4, seed=0) -> priors.MixturePrior:
    prior = priors.MixturePrior(d, k)
    rng = np.random.RandomState(seed)
    prior.logits.assign(rng.randn(k).astype(np.float32))
    prior.locs.assign(rng.randn(k, d).astype(np.float32) * 2)
    prior.raw_scales.assign(rng.randn(k, d).astype(np.float32))
    return prior


def test_mixture_log_prob_is_the_brute_force_sum():
    prior = mixture()
    z = np.random.RandomState(1).randn(7, 3).astype(np.float32)
    pi = special.softmax(prior.logits.numpy().astype(np.float64))
    locs, scales = prior.locs.numpy(), prior.scales.numpy()
    want = np.log(sum(pi[k] * np.prod(stats.norm.pdf(z, locs[k], scales[k]), axis=-1)
                      for k in range(4)))
    np.testing.assert_allclose(prior.log_prob(tf.constant(z)), want, rtol=1e-5, atol=1e-5)
    # Leading axes are batch axes ([K, N, d] latents of the IW bound).
    np.testing.assert_allclose(prior.log_prob(tf.constant(z.reshape(1, 7, 3)))[0], want,
                               rtol=1e-5, atol=1e-5)


def test_mixture_sampler_follows_its_weights_and_formula():
    prior = mixture(seed=2)
    noise = tf.random.stateless_normal((20000, 4), seed=(3, 4))
    k = prior.components(noise).numpy()
    pi = special.softmax(prior.logits.numpy().astype(np.float64))
    counts = np.bincount(k, minlength=4)
    assert stats.chisquare(counts, pi * len(k)).pvalue > 1e-3, (counts, pi)
    z = prior.from_noise(noise).numpy()
    np.testing.assert_allclose(
        z, prior.locs.numpy()[k] + prior.scales.numpy()[k] * noise.numpy()[:, :3], rtol=1e-6)
    # z is differentiable in the locations and scales of the chosen components.
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(prior.from_noise(noise[:5]))
    g_locs, g_raw = tape.gradient(total, [prior.locs, prior.raw_scales])
    assert np.count_nonzero(g_locs.numpy().any(axis=1)) == len(set(k[:5]))
    assert g_raw is not None
    # A fresh mixture is uniform with unit scales.
    fresh = priors.MixturePrior(3, 5)
    np.testing.assert_allclose(fresh.scales.numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(special.softmax(fresh.logits.numpy()), 0.2, rtol=1e-6)


def test_standard_prior_is_the_identity_and_unit_gaussian():
    prior = priors.make_prior("standard", 3)
    noise = tf.random.normal((4, 3))
    np.testing.assert_array_equal(prior.from_noise(noise), noise)
    np.testing.assert_allclose(prior.log_prob(noise),
                               stats.norm.logpdf(noise.numpy()).sum(-1), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown prior"):
        priors.make_prior("vamp", 3)


SMALL = dict(image_shape=(8, 8, 1), latent_dim=3, enc_dec_channels=4, flow_scales=2,
             flow_hidden=4, disc_channels=4, posterior_hidden=8)


def test_hybrid_with_a_mixture_prior_uses_it_for_kl_bound_and_samples():
    model = HybridModel(HybridConfig(variant="cqf", prior="mixture", prior_components=3, **SMALL))
    x = tf.random.stateless_uniform((4, 8, 8, 1), seed=(1, 1))
    model.data_init(x)
    assert model.prior_noise_shape() == (4,) and model.noise_shapes()["prior"] == (4,)
    assert not model.has_analytic_kl
    eps = tf.random.stateless_normal((4, 1, 3), seed=(2, 2))
    terms = model.mle_terms(x, eps)
    w = model.log_weights(x, 1, eps)
    z, log_q = model.posterior.sample_and_log_prob(model.encoder(x), 1,
                                                   tf.transpose(eps, (1, 0, 2)))
    np.testing.assert_allclose(w["log_prior"], model.prior.log_prob(z), rtol=1e-6)
    np.testing.assert_allclose(terms["kl"], (log_q - model.prior.log_prob(z))[0], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(terms["nll"], terms["recon"] + terms["kl"] - terms["log_det"],
                               rtol=1e-6)
    # The adversarial fakes and the samples come from the learned prior: its weights get
    # the adversarial gradient.
    noise = tf.random.stateless_normal((4, 4), seed=(5, 5))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.generator_adversarial_losses(model.adversarial_samples(noise)))
    assert tape.gradient(loss, model.prior.locs) is not None
    np.testing.assert_allclose(model.generate(noise, 0.0),
                               model.decode_to_images(model.prior.from_noise(noise), 0.0))
    assert "prior" in model.generator_variable_groups()
    assert {id(v) for v in model.prior.trainable_variables} <= {
        id(v) for v in model.generator_variables}


def test_a_learned_prior_needs_a_likelihood_term():
    with pytest.raises(ValueError, match="has no such term"):
        HybridConfig(variant="gan", prior="mixture", **SMALL)
    with pytest.raises(ValueError, match="has no such term"):
        HybridConfig(variant="flow", prior="mixture", **SMALL)
    with pytest.raises(ValueError, match="prior_components=0"):
        HybridConfig(prior="mixture", prior_components=0, **SMALL)
    with pytest.raises(ValueError, match="unknown prior"):
        HybridConfig(prior="vamp", **SMALL)


@pytest.mark.slow  # training + export (~30 s)
def test_trainer_learns_the_mixture_and_export_samples_and_scores_with_it(
        digits16, tmp_path, tracking_uri):
    model_dir = str(tmp_path / "model")
    config = HybridConfig(variant="cqf", image_shape=TINY_SHAPE, prior="mixture",
                          prior_components=3, **TINY)
    fresh = HybridModel(config)
    trainer.train(config, tiny_train_config(digits16, model_dir, tracking_uri, train_steps=3,
                                            data_init_batch=16, seed=1))
    model, step = model_io.load_trained_model(model_dir)
    assert step == 3 and model.config.prior == "mixture"
    for name in ("logits", "locs", "raw_scales"):
        assert not np.allclose(getattr(model.prior, name).numpy(),
                               getattr(fresh.prior, name).numpy()), name
    version_dir = export.export_model(model_dir, str(tmp_path / "ex"), "mix", log_to_mlflow=False)
    loaded = tf.saved_model.load(version_dir)
    got = loaded.signatures["sample"](seed=tf.constant([3, 4], tf.int64),
                                      temperature=tf.constant([0.0, 1.0]))["images"].numpy()
    np.testing.assert_array_equal(got[:1], model.sample(1, 0.0, seed=3).numpy())
    images = model.sample(3, 1.0, seed=9).numpy()
    np.testing.assert_allclose(
        loaded.signatures["score"](images=tf.constant(images))["log_likelihood_nats"],
        deterministic_score(model, tf.constant(images))["log_likelihood_nats"], rtol=1e-4)
    assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))


@pytest.mark.slow  # training + EM refit (~30 s)
def test_fit_prior_refits_only_the_prior_and_raises_its_likelihood(digits16, tmp_path,
                                                                    tracking_uri):
    import subprocess
    import sys

    from pipeline import fit_prior

    from conftest import train_tiny

    source = train_tiny(digits16, str(tmp_path / "std"), tracking_uri, "cqf", train_steps=2,
                        data_init_batch=16, seed=3)
    out = str(tmp_path / "mix")
    summary = fit_prior.fit_mixture_prior(source, out, components=3, seed=1)
    from pipeline import data as data_lib

    n_train = data_lib.read_dataset_info(digits16).split_counts["train"]
    assert summary["num_draws"] == n_train and summary["step"] == 2
    assert summary["mean_log_prior_after_nats"] > summary["mean_log_prior_before_nats"]
    before, _ = model_io.load_trained_model(source)
    after, step = model_io.load_trained_model(out)
    assert step == 2 and after.config.prior == "mixture" and after.config.prior_components == 3
    np.testing.assert_allclose(special.softmax(after.prior.logits.numpy()).sum(), 1.0, rtol=1e-5)
    # The fitted mixture is EM's on the same seeded draws; every other weight is unchanged.
    from sklearn.mixture import GaussianMixture

    z = fit_prior.posterior_draws(before, digits16, seed=1)
    em = GaussianMixture(3, covariance_type="diag", random_state=1, reg_covar=1e-6).fit(z)
    np.testing.assert_allclose(after.prior.locs.numpy(), em.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(after.prior.scales.numpy(), np.sqrt(em.covariances_), rtol=1e-3)
    np.testing.assert_array_equal(before.decoder.variables[0].numpy(),
                                  after.decoder.variables[0].numpy())
    x = tf.random.stateless_uniform((2,) + TINY_SHAPE, seed=(1, 2))
    assert np.all(np.isfinite(after.log_prob_bound(x).numpy()))
    # The input is kept and an existing output is refused, as one line from the CLI.
    with pytest.raises(FileExistsError, match="already holds a model"):
        fit_prior.fit_mixture_prior(source, out, components=3)
    proc = subprocess.run([sys.executable, "-m", "pipeline.fit_prior", f"--model_dir={source}",
                           f"--output_model_dir={source}"], capture_output=True, text=True)
    assert proc.returncode == 2 and "must differ" in proc.stderr
    assert "Traceback" not in proc.stderr
