"""pipeline.evaluate: BPD bounds on a split (exact for flows, ELBO and IW bounds for VAEs),
logged to the model's MLflow run; FID/KID/IS through an export and the Beam FID job."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from artifacts import model_io
from artifacts.tfrecord_dataset import make_image_dataset
from pipeline import data as data_lib
from pipeline import evaluate
from tfp_models import flows, metrics
from tfp_models.row_seeds import sample_row_seeds

from conftest import train_tiny

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def flow_dir(digits16, tmp_path_factory, tracking_uri):
    return train_tiny(digits16, tmp_path_factory.mktemp("eval") / "flow", tracking_uri, "flow",
                      train_steps=3)


@pytest.fixture(scope="module")
def vae_dir(digits16, tmp_path_factory, tracking_uri):
    return train_tiny(digits16, tmp_path_factory.mktemp("eval") / "vae_f", tracking_uri, "vae_f",
                      train_steps=3)


def test_flow_bpd_is_the_exact_mean_over_the_split(flow_dir, digits16):
    model, _ = model_io.load_trained_model(flow_dir)
    result = evaluate.evaluate_bpd(model, digits16, "validation", batch_size=7, seed=4,
                                   show_progress=False)
    info = data_lib.read_dataset_info(digits16)
    assert result["num_examples"] == info.split_counts["validation"]  # 7 does not divide it
    assert result["kind"] == "exact" and "bpd_iw" not in result
    # Brute force: the same noise per batch, log p from the model, averaged by hand.
    images = np.concatenate(list(make_image_dataset(
        digits16, "validation", 7, shuffle=False, repeat=False, drop_remainder=False)))
    expected = []
    for i in range(0, len(images), 7):
        batch = tf.constant(images[i:i + 7])
        noise = tf.random.stateless_uniform(tf.shape(batch), seed=tf.stack([4, i // 7]))
        x = flows.dequantize_images(batch, noise)
        expected.append(metrics.bits_per_dim(model.log_prob_bound(x).numpy(), model.config.image_shape))
    expected = np.concatenate(expected)
    np.testing.assert_allclose(result["bpd"], expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(result["bpd_stderr"], expected.std(ddof=1) / np.sqrt(len(expected)),
                               rtol=1e-4)


def test_importance_weighted_bound_is_tighter_than_the_elbo(vae_dir, digits16):
    model, _ = model_io.load_trained_model(vae_dir)
    result = evaluate.evaluate_bpd(model, digits16, "validation", batch_size=16,
                                   importance_samples=16, show_progress=False)
    assert result["kind"] == "elbo_bound" and result["importance_samples"] == 16
    assert result["bpd_iw"] < result["bpd"]
    assert result["bpd_iw"] > 0


def test_posterior_noise_is_seeded_by_seed(vae_dir, digits16):
    """The ELBO and IW numbers of a latent model depend on --seed only: equal for equal
    seeds whatever TF's global random state, different for another seed."""
    model, _ = model_io.load_trained_model(vae_dir)

    def run(seed: int, global_seed: int) -> dict:
        tf.random.set_seed(global_seed)
        tf.random.normal([3])  # moves the global generator
        return evaluate.evaluate_bpd(model, digits16, "validation", batch_size=16, seed=seed,
                                     importance_samples=4, show_progress=False)

    a, b, c = run(5, 1), run(5, 2), run(6, 1)
    assert (a["bpd"], a["bpd_iw"]) == (b["bpd"], b["bpd_iw"])
    assert a["bpd"] != c["bpd"] and a["bpd_iw"] != c["bpd_iw"]


def test_bad_split_and_shape_are_clear_errors(vae_dir, digits16, tmp_path):
    model, _ = model_io.load_trained_model(vae_dir)
    with pytest.raises(ValueError, match="split 'test' not in"):
        evaluate.evaluate_bpd(model, digits16, "test", show_progress=False)
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        model_io.load_trained_model(str(tmp_path))


def test_cli_prints_json_and_logs_to_the_models_run(vae_dir, digits16, tracking_uri):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", f"--model_dir={vae_dir}",
         f"--data_dir={digits16}", "--split=validation", "--importance_samples=4",
         f"--mlflow_tracking_uri={tracking_uri}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["variant"] == "vae_f" and out["bpd"]["importance_samples"] == 4
    run = MlflowClient().get_run(open(os.path.join(vae_dir, "mlflow_run_id")).read())
    assert run.data.metrics["eval/validation/bpd_iw"] == pytest.approx(out["bpd"]["bpd_iw"])
    assert run.data.metrics["eval/validation/latent/kl_mean"] == pytest.approx(
        out["latent"]["kl_mean"])
    assert 0 <= out["latent"]["active_units"] <= out["latent"]["latent_dim"]
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_fid_of_model_samples_through_beam(vae_dir, digits16, tmp_path):
    """End to end with a small (untrained) MNIST-classifier extractor: FID is finite and
    positive, KID/IS and precision/recall are reported, the sample count is exact."""
    from beam_jobs import fid
    from beam_jobs.fid import extractors
    classifier, features_model = extractors.build_mnist_classifier(seed=0)
    extractor_dir = extractors.export_mnist_classifier(features_model, str(tmp_path / "clf"))
    ref = fid.compute_statistics(fid.TFRecordSource(digits16, "train"), "mnist_classifier",
                                 extractor_dir, kid_samples=100, pr_samples=1000)
    ref_path = str(tmp_path / "ref.npz")
    ref.save(ref_path)
    out = evaluate.evaluate_samples(vae_dir, 37, "mnist_classifier", extractor_dir, ref_path)
    assert out["num_samples"] == 37
    assert np.isfinite(out["fid"]) and out["fid"] > 0
    assert out["is_mean"] >= 1.0
    assert 0.0 <= out["precision"] <= 1.0 and 0.0 <= out["recall"] <= 1.0
    assert out["pr_num_samples"] == 37 and out["pr_num_reference"] == len(ref.pr_features)


def test_latent_use_matches_brute_force(vae_dir, digits16):
    """Mean KL and active units (Burda et al.: Cov_x(E_q[z_u]) > 0.01) recomputed by hand
    from the encoder on the same seeded dequantization."""
    model, _ = model_io.load_trained_model(vae_dir)
    result = evaluate.evaluate_latent(model, digits16, "validation", batch_size=9, seed=2,
                                      show_progress=False)
    images = np.concatenate(list(make_image_dataset(
        digits16, "validation", 9, shuffle=False, repeat=False, drop_remainder=False)))
    kls, means = [], []
    for i in range(0, len(images), 9):
        batch = tf.constant(images[i:i + 9])
        noise = tf.random.stateless_uniform(tf.shape(batch), seed=tf.stack([2, i // 9]))
        params = model.encoder(flows.dequantize_images(batch, noise)).numpy()
        d = model.config.latent_dim
        mu, sigma = params[:, :d], np.log1p(np.exp(params[:, d:2 * d])) + 1e-4
        kls.append(0.5 * (mu ** 2 + sigma ** 2 - 1.0 - 2.0 * np.log(sigma)).sum(axis=1))
        means.append(mu)
    kls, means = np.concatenate(kls), np.concatenate(means)
    assert result["num_examples"] == len(images) and result["latent_dim"] == d
    np.testing.assert_allclose(result["kl_mean"], kls.mean(), rtol=1e-4)
    assert result["active_units"] == int((means.var(axis=0, ddof=1) > 0.01).sum())
    np.testing.assert_allclose(sum(result["kl_per_dim"]), result["kl_mean"], rtol=1e-4)


def test_cli_refuses_reference_stats_without_fingerprint(vae_dir, tmp_path, tracking_uri):
    """An old reference file (no extractor fingerprint) is a user error: one line on
    stderr, a non-zero exit, no traceback, and no model export or sampling first."""
    from beam_jobs.fid import extractors

    _, features_model = extractors.build_mnist_classifier(feature_dim=16, seed=0)
    clf = extractors.export_mnist_classifier(features_model, str(tmp_path / "clf"))
    old = tmp_path / "old_ref.npz"
    np.savez(old, mu=np.zeros(16), sigma=np.eye(16), count=np.int64(100),
             extractor=np.str_("mnist_classifier"), resize_protocol=np.str_("p"))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", f"--model_dir={vae_dir}",
         "--fid_samples=5", f"--extractor_path={clf}", f"--reference_stats={old}",
         f"--mlflow_tracking_uri={tracking_uri}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: statistics") and "no extractor fingerprint" in last
    assert "regenerate" in last


def test_model_dir_samples_are_the_exports_sample_rows(vae_dir, tmp_path):
    """FID's model-directory source draws, with no export, exactly the images the exported
    ``sample`` signature returns for the same seeds (11 samples in batches of 4)."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from beam_jobs import fid
    from serving.export import export_model

    version_dir = export_model(vae_dir, str(tmp_path / "export"), "m", log_to_mlflow=False)
    n, seed, temperature = 11, 40, 0.7
    want = tf.saved_model.load(version_dir).signatures["sample"](
        seed=tf.constant(sample_row_seeds(seed, 0, n), tf.int64),
        temperature=tf.fill([n], np.float32(temperature)))["images"].numpy()
    with beam.Pipeline(options=fid.pipeline_options(None)) as p:
        images = p | fid.ReadImages(fid.ModelDirSampleSource(vae_dir, n, temperature, seed, 4))
        rows = images | beam.MapTuple(lambda i, im: (i, im.dtype.name, im.tobytes()))
        assert_that(rows, equal_to([(i, "uint8", want[i].tobytes()) for i in range(n)]))
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        fid.ModelDirSampleSource(str(tmp_path), 3).validate()
    # ... and the rows pipeline.evaluate's harness draws for the same seed (one seed contract).
    from artifacts.model_io import load_trained_model
    from pipeline.eval_harness import draw_samples

    model = load_trained_model(vae_dir)[0]
    np.testing.assert_array_equal(draw_samples(model, n, temperature, seed, batch_size=5), want)
