"""The Bernoulli decoder of binary data (``decoder='bernoulli'``): the binarization
b = 1[u < x/255] from the dequantization noise, the likelihood against a brute-force
Bernoulli log-pmf and a quadrature of ln P(b) in a 1-d latent, sampling, validation,
training (metric names in nats), evaluation and the export."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from tfp_models import flows
from tfp_models.hybrid import HybridConfig, HybridModel
from tfp_models.networks import binarize_dequantized

from conftest import TINY, TINY_SHAPE

SHAPE = (8, 8, 1)
SMALL = dict(image_shape=SHAPE, latent_dim=3, enc_dec_channels=4, enc_dec_downsamples=1,
             posterior_hidden=8)


def _model(scale: float = 0.05, **overrides) -> HybridModel:
    model = HybridModel(HybridConfig(variant="vae", decoder="bernoulli", **{**SMALL, **overrides}))
    for i, v in enumerate(model.trainable_variables):  # a decoder that depends on z
        v.assign(v + scale * tf.random.stateless_normal(v.shape, seed=(11, i)))
    return model


def _images(n=4, seed=1) -> tf.Tensor:
    return tf.random.stateless_uniform((n,) + SHAPE, seed=(seed, 0), maxval=256, dtype=tf.int32)


def test_binarization_is_one_where_the_dequantization_noise_is_below_x_over_255():
    images = tf.cast(_images(64), tf.uint8)
    u = tf.random.stateless_uniform(images.shape, seed=(2, 2))
    b = binarize_dequantized(flows.dequantize_images(images, u)).numpy()
    x, u = images.numpy().astype(np.float64), u.numpy().astype(np.float64)
    expected = (u < x / 255.0).astype(np.float32)
    # float32 (x + u) / 256 keeps u to ~2^-16: only u within that of a threshold can differ
    ambiguous = np.abs(u - x / 255.0) < 1e-4
    assert (b[~ambiguous] == expected[~ambiguous]).all() and (~ambiguous).mean() > 0.99
    b_mid = binarize_dequantized(flows.dequantize_images(images)).numpy()
    np.testing.assert_array_equal(b_mid, (images.numpy() >= 128).astype(np.float32))
    # the rate is x / 255: a mid-grey pixel is 1 about half of the time over fresh noise
    grey = tf.fill((20000, 1, 1, 1), tf.constant(100, tf.uint8))
    rate = binarize_dequantized(flows.dequantize_images(
        grey, tf.random.stateless_uniform(grey.shape, seed=(3, 3)))).numpy().mean()
    assert abs(rate - 100 / 255) < 0.01


def test_log_weights_use_the_bernoulli_log_pmf_of_the_binarized_image():
    model = _model()
    images = tf.cast(_images(3), tf.uint8)
    x = flows.dequantize_images(images, tf.random.stateless_uniform(images.shape, seed=(4, 4)))
    b = binarize_dequantized(x)
    eps = tf.random.stateless_normal((3, 2, 3), seed=(5, 5))
    terms = model.log_weights(x, 2, eps)
    np.testing.assert_array_equal(terms["log_det"].numpy(), 0.0)
    z, log_q = model.posterior.sample_and_log_prob(model.encoder(b), 2,
                                                   tf.transpose(eps, (1, 0, 2)))
    logits = model.decoder(tf.reshape(z, (-1, 3))).numpy().astype(np.float64)
    bk = np.broadcast_to(b.numpy()[None], (2,) + b.shape).reshape(logits.shape)
    pmf = (bk * -np.logaddexp(0, -logits) + (1 - bk) * -np.logaddexp(0, logits))
    pmf = pmf.reshape(2, 3, -1).sum(-1)  # ln Bernoulli(b; sigmoid(logits)), stably
    np.testing.assert_allclose(terms["recon"].numpy(), pmf, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(terms["log_q"].numpy(), log_q.numpy(), rtol=1e-5)
    prior = stats.norm.logpdf(z.numpy()).sum(-1)
    np.testing.assert_allclose(terms["log_w"].numpy(), pmf + prior - log_q.numpy(),
                               rtol=1e-4, atol=1e-3)
    # the encoder sees b only: other grey levels with the same binarization, same q(z|x)
    x2 = tf.where(b > 0, 0.999, 0.001)
    np.testing.assert_allclose(model.encoder(x2).numpy(), model.encoder(x).numpy(), rtol=1e-6)


def test_bounds_match_a_quadrature_of_ln_p_b_in_a_one_dimensional_latent():
    model = _model(latent_dim=1)
    images = tf.cast(_images(2, seed=7), tf.uint8)
    x = flows.dequantize_images(images)
    b = binarize_dequantized(x).numpy().reshape(2, -1)
    grid = np.linspace(-8.0, 8.0, 4001)
    logits = model.decoder(tf.constant(grid[:, None], tf.float32)).numpy().reshape(len(grid), -1)
    log_pb_z = (b[:, None, :] * -np.logaddexp(0, -logits) + (1 - b[:, None, :])
                * -np.logaddexp(0, logits)).sum(-1)  # [2, grid]
    integrand = log_pb_z + stats.norm.logpdf(grid)[None]
    exact = special.logsumexp(integrand, axis=1) + np.log(grid[1] - grid[0])
    assert (exact < 0).all()  # a probability of a binary image
    log_w = model.log_weights(x, 4000, tf.random.stateless_normal((2, 4000, 1), seed=(2, 3)))
    log_w = log_w["log_w"].numpy().astype(np.float64)  # [K, N]
    elbo = log_w.mean(axis=0)  # Monte Carlo ELBO: below ln P(b) by KL(q || p(z|b))
    iw = special.logsumexp(log_w, axis=0) - np.log(4000)
    assert (elbo < exact).all()
    np.testing.assert_allclose(iw, exact, atol=0.05)
    np.testing.assert_allclose(model.log_prob_bound(x, 4000, tf.random.stateless_normal(
        (2, 4000, 1), seed=(2, 3))).numpy(), iw, rtol=1e-5)


def test_samples_are_binary_draws_or_the_bernoulli_means():
    model = _model()
    drawn = model.sample(16, temperature=1.0, seed=3).numpy()
    assert set(np.unique(drawn)) <= {0, 255} and drawn.dtype == np.uint8
    z = tf.random.stateless_normal((16, 3), seed=(3, 1))
    means = tf.sigmoid(model.decoder(z))
    np.testing.assert_array_equal(model.sample(16, temperature=0.0, seed=3).numpy(),
                                  flows.quantize_images(means).numpy())
    # draws follow the means: over many draws of one latent, the rate is sigmoid(logits)
    zs = tf.repeat(z[:1], 4000, axis=0)
    eps = tf.random.stateless_normal((4000,) + SHAPE, seed=(9, 9))
    rate = model.decode_to_images(zs, 1.0, eps).numpy().mean(0)
    np.testing.assert_allclose(rate, means.numpy()[0], atol=0.04)
    rows = model.sample_rows(tf.constant([3, 4], tf.int64), tf.constant([1.0, 0.0]))
    np.testing.assert_array_equal(rows.numpy()[0], model.sample(1, 1.0, seed=3).numpy()[0])
    np.testing.assert_array_equal(rows.numpy()[1], model.sample(1, 0.0, seed=4).numpy()[0])


@pytest.mark.parametrize("variant", ["vae_f", "cq", "cqf", "gan", "flow"])
def test_bernoulli_decoder_refuses_variants_with_a_flow_or_adversarial_loss(variant):
    with pytest.raises(ValueError, match="decoder='bernoulli'.*use variant 'vae'"):
        HybridConfig(variant=variant, decoder="bernoulli")
    with pytest.raises(ValueError, match="unknown decoder"):
        HybridConfig(variant="vae", decoder="poisson")


def test_data_init_sets_the_logits_to_the_binarized_pixel_means():
    model = HybridModel(HybridConfig(variant="vae", decoder="bernoulli", **SMALL))
    images = tf.cast(_images(64, seed=5), tf.uint8)
    x = flows.dequantize_images(images, tf.random.stateless_uniform(images.shape, seed=(6, 6)))
    noise = tf.random.stateless_normal((64, 3), seed=(7, 7))
    model.data_init(x, noise)
    p = np.clip(binarize_dequantized(x).numpy().mean(0), 1e-3, 1 - 1e-3)
    mean_logits = model.decoder(noise).numpy().mean(0)
    np.testing.assert_allclose(mean_logits, special.logit(p), atol=1e-4)


def test_training_logs_nats_evaluation_reports_nats_with_a_fixed_binarization(
        digits16, tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    from artifacts import model_io, tracking
    from pipeline import eval_harness, evaluate, trainer

    from conftest import tiny_train_config

    model_dir = str(tmp_path / "bern")
    trainer.train(HybridConfig(variant="vae", decoder="bernoulli", posterior="realnvp",
                               posterior_steps=2, image_shape=TINY_SHAPE, **TINY),
                  tiny_train_config(digits16, model_dir, tracking_uri, train_steps=3,
                                    validation_every=2, validation_examples=16))
    run = MlflowClient(tracking_uri).get_run(tracking.run_id_of(model_dir))
    assert "validation/nll_nats" in run.data.metrics and "validation/bpd" not in run.data.metrics
    assert "train/bpd" not in run.data.metrics and run.data.metrics["train/nll"] > 0
    model, _ = model_io.load_trained_model(model_dir)
    res = evaluate.evaluate_binary_nll(model, digits16, "validation", batch_size=16,
                                       importance_samples=8, seed=1, show_progress=False,
                                       per_image=True)
    assert res["units"].startswith("nats") and res["kind"] == "elbo_bound_binarized"
    assert 0 < res["nll_nats_iw"] <= res["nll_nats"] + 3 * res["nll_nats_stderr"]
    per_image = res.pop("per_image")  # the values behind the means, one per held-out image
    assert sorted(per_image) == ["nll_elbo_nats", "nll_iw_nats"]
    assert per_image["nll_iw_nats"].shape == (res["num_examples"],)
    np.testing.assert_allclose(per_image["nll_elbo_nats"].mean(), res["nll_nats"], rtol=1e-12)
    np.testing.assert_allclose(per_image["nll_iw_nats"].mean(), res["nll_nats_iw"], rtol=1e-12)
    again = evaluate.evaluate_binary_nll(model, digits16, "validation", batch_size=16,
                                         importance_samples=8, seed=1, show_progress=False)
    assert "per_image" not in again and again == res
    assert "bpd" not in res
    with pytest.raises(ValueError, match="nats"):
        evaluate.evaluate_bpd(model, digits16, "validation", show_progress=False)
    # the held-out binarization is keyed on the image index: the same for any batch size
    ds, _ = eval_harness.split_batches(model, digits16, "validation", 48)
    images = next(iter(ds))
    whole = eval_harness.dequantized_inputs(model, images, tf.constant(0), 48, 1)
    parts = [eval_harness.dequantized_inputs(model, images[i * 16:(i + 1) * 16], tf.constant(i), 16, 1)
             for i in range(3)]
    np.testing.assert_array_equal(binarize_dequantized(whole).numpy(),
                                  binarize_dequantized(tf.concat(parts, 0)).numpy())


def test_export_scores_the_thresholded_image_in_nats_and_bits_per_binary_pixel(tmp_path):
    from test_serving import write_untrained

    from serving import export

    model_dir = write_untrained(str(tmp_path / "m"), "vae", decoder="bernoulli",
                                posterior="realnvp", posterior_steps=2)
    version_dir = export.export_model(model_dir, str(tmp_path / "ex"), "bern",
                                      log_to_mlflow=False, importance_samples=4)
    meta = json.load(open(os.path.join(version_dir, "assets.extra", "export_metadata.json")))
    assert meta["score"]["data"] == "binarized" and "binary pixel" in meta["score"]["units"]
    loaded = tf.saved_model.load(version_dir)
    images = tf.cast(tf.random.stateless_uniform((3,) + TINY_SHAPE, seed=(1, 9), maxval=256,
                                                 dtype=tf.int32), tf.uint8)
    out = loaded.signatures["score"](images=images)
    from artifacts import model_io

    model, _ = model_io.load_trained_model(model_dir)
    thresholded = tf.where(images >= 128, 255, 0)  # the same binary image: the same score
    out_t = loaded.signatures["score"](images=tf.cast(thresholded, tf.uint8))
    np.testing.assert_allclose(out["log_likelihood_nats"].numpy(),
                               out_t["log_likelihood_nats"].numpy(), rtol=1e-6)
    nats = out["log_likelihood_nats"].numpy()
    d = int(np.prod(TINY_SHAPE))
    np.testing.assert_allclose(out["bits_per_dim"].numpy(), -nats / (d * math.log(2)), rtol=1e-5)
    np.testing.assert_allclose(out["iw_bits_per_dim"].numpy(),
                               -out["iw_bound_nats"].numpy() / (d * math.log(2)), rtol=1e-5)
    assert (nats < 0).all()
    means = loaded.signatures["sample_latent"](latent=tf.zeros((1, TINY["latent_dim"])))["images"]
    np.testing.assert_array_equal(
        means.numpy(), flows.quantize_images(tf.sigmoid(model.decoder(tf.zeros((1, 4))))).numpy())
