"""pipeline.eval_harness: the held-out split (labels, limits, shape and split errors, one
line from the CLI), seeded samples (reproducible per row, the critic's old rows, the
unquantized rows), bits/dim of either decoder against a hand computation, and the metric
registry (a metric registered here appears in evaluate's results, MLflow and the summary)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from artifacts import model_io
from artifacts.tfrecord_dataset import make_image_dataset
from pipeline import data as data_lib
from pipeline import eval_harness, evaluate
from serving.signatures import to_bits_per_dim
from tfp_models import flows, metrics
from tfp_models.hybrid import HybridConfig, HybridModel

from conftest import TINY, TINY_SHAPE

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(variant: str = "vae", shape=TINY_SHAPE, **overrides) -> HybridModel:
    return HybridModel(HybridConfig(variant=variant, image_shape=shape, **{**TINY, **overrides}))


def _file_order(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a split in file order, straight from pipeline.data."""
    batches = list(make_image_dataset(data_dir, split, 50, shuffle=False, repeat=False,
                                      drop_remainder=False, with_labels=True))
    return (np.concatenate([b[0].numpy() for b in batches]),
            np.concatenate([b[1].numpy() for b in batches]))


def test_split_is_the_first_images_in_file_order_with_labels(digits16):
    model = _model()
    images, labels = _file_order(digits16, "validation")
    held = eval_harness.load_split(model, digits16, "validation")
    assert held.count == len(images) == data_lib.read_dataset_info(digits16).split_counts[
        "validation"]
    np.testing.assert_array_equal(held.images(), images)
    some = eval_harness.load_split(model, digits16, "validation", max_examples=13)
    got = list(some.batches(5, with_labels=True))
    assert [len(b[0]) for b in got] == [5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), images[:13])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), labels[:13])
    assert set(labels) <= set(range(10))  # the digits' folder names
    assert eval_harness.load_split(model, digits16, "validation", 10 ** 6).count == held.count
    # a seeded shuffle: reproducible, another order, the same images
    a, b = held.images(shuffle_seed=3), held.images(shuffle_seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, images)
    np.testing.assert_array_equal(np.sort(a.reshape(len(a), -1), axis=0),
                                  np.sort(images.reshape(len(a), -1), axis=0))
    ds, total = eval_harness.split_batches(model, digits16, "validation", 7, 20)
    assert total == 20
    np.testing.assert_array_equal(np.concatenate(list(ds)), images[:20])


def test_wrong_shape_and_missing_split_are_one_line_errors(digits16, tmp_path):
    small = _model(shape=(8, 8, 1))
    for call in (lambda: eval_harness.load_split(small, digits16, "validation"),
                 lambda: evaluate.evaluate_bpd(small, digits16, show_progress=False),
                 lambda: evaluate.evaluate_latent(small, digits16, show_progress=False)):
        with pytest.raises(ValueError, match=r"holds \[16, 16, 1\] images, the model was "
                                             r"trained on \[8, 8, 1\]"):
            call()
    with pytest.raises(ValueError, match="split 'test' not in data set"):
        eval_harness.load_split(_model(), digits16, "test")
    # from the command line: one line, exit code 2, no traceback
    model_dir = str(tmp_path / "small")
    step = tf.Variable(1, dtype=tf.int64)
    model_io.save_model_config(model_dir, small.config, {})
    model_io.make_checkpoint(small, step).write(os.path.join(model_dir, "ckpt-1"))
    with open(os.path.join(model_dir, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", f"--model_dir={model_dir}",
         f"--data_dir={digits16}", f"--mlflow_tracking_uri=sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m pipeline.evaluate: error: data set ")
    assert last.endswith("holds [16, 16, 1] images, the model was trained on [8, 8, 1]")


def test_samples_are_seeded_per_row_and_equal_the_old_rows():
    model = _model("vae")
    rows = eval_harness.draw_samples(model, 5, 0.8, seed=2, offset=3, batch_size=2)
    assert rows.dtype == np.uint8 and rows.shape == (5,) + TINY_SHAPE
    np.testing.assert_array_equal(rows, eval_harness.draw_samples(model, 5, 0.8, 2, 3))
    np.testing.assert_array_equal(rows[1:], eval_harness.draw_samples(model, 4, 0.8, 2, 4,
                                                                      batch_size=3))
    # the old critic_eval.model_samples loop: row seeds seed * 2^31 + offset + i
    old = model.sample_rows(tf.constant(2 * (1 << 31) + 3 + np.arange(5), tf.int64),
                            tf.fill([5], 0.8)).numpy()
    np.testing.assert_array_equal(rows, old)
    assert rows[0].tobytes() == model.sample(1, 0.8, seed=2 * (1 << 31) + 3).numpy()[0].tobytes()
    assert not np.array_equal(rows, eval_harness.draw_samples(model, 5, 0.8, seed=3, offset=3))
    # before quantization: the same rows, in [0, 1]
    smooth = eval_harness.draw_samples(model, 5, 0.8, 2, 3, batch_size=4, quantize=False)
    assert smooth.dtype == np.float32 and 0 <= smooth.min() and smooth.max() <= 1
    np.testing.assert_array_equal(flows.quantize_images(tf.constant(smooth)).numpy(), rows)
    assert not np.array_equal(smooth, np.round(smooth * 255) / 255)  # not quantized
    assert eval_harness.draw_samples(model, 0, 1.0, 0).shape == (0,) + TINY_SHAPE
    flow = _model("flow")
    np.testing.assert_array_equal(
        eval_harness.draw_samples(flow, 3, 1.0, 0, batch_size=2),
        flow.sample_rows(tf.constant(np.arange(3), tf.int64), tf.ones([3])).numpy())


def test_bits_per_dim_of_either_decoder_by_hand():
    nats = np.array([-100.0, 0.0, 37.5])
    d = 16 * 16 * 1
    eight_bit = [(-n / d + math.log(256)) / math.log(2) for n in nats]
    binary = [-n / (d * math.log(2)) for n in nats]
    np.testing.assert_allclose(metrics.bits_per_dim(nats, TINY_SHAPE), eight_bit, rtol=1e-12)
    np.testing.assert_allclose(metrics.bits_per_binary_dim(nats, TINY_SHAPE), binary, rtol=1e-12)
    assert metrics.decoder_bits_per_dim(0.0, TINY_SHAPE, binary=False) == 8.0
    np.testing.assert_allclose(metrics.decoder_bits_per_dim(nats, TINY_SHAPE, True), binary)
    gaussian, bernoulli = _model("vae"), _model("vae", decoder="bernoulli")
    np.testing.assert_allclose(eval_harness.bits_per_dim(gaussian, nats), eight_bit, rtol=1e-12)
    np.testing.assert_allclose(eval_harness.bits_per_dim(bernoulli, nats), binary, rtol=1e-12)
    # the export's score uses the same function (float32 tensors)
    t = tf.constant(nats, tf.float32)
    np.testing.assert_allclose(to_bits_per_dim(gaussian, t).numpy(), eight_bit, rtol=1e-6)
    np.testing.assert_allclose(to_bits_per_dim(bernoulli, t).numpy(), binary, rtol=1e-6)


def test_bounds_are_the_flows_log_prob_on_the_seeded_dequantization(digits16):
    model = _model("flow")
    values, n = eval_harness.split_log_prob_bounds(model, digits16, "validation", 9, 1, 4,
                                                   20, False, "bpd")
    assert n == 20 and sorted(values) == ["elbo"] and values["elbo"].dtype == np.float64
    images = _file_order(digits16, "validation")[0][:20]
    want = []
    for i in range(0, 20, 9):
        batch = tf.constant(images[i:i + 9])
        noise = tf.random.stateless_uniform(tf.shape(batch), seed=tf.stack([4, i // 9]))
        want.append(model.log_prob_bound(flows.dequantize_images(batch, noise)).numpy())
    np.testing.assert_allclose(values["elbo"], np.concatenate(want), rtol=1e-5)


def _store_run(tracking_uri: str, model_dir) -> str:
    """A model directory with a fresh MLflow run recorded in it (no model files)."""
    from mlflow.tracking import MlflowClient

    run_id = MlflowClient(tracking_uri).create_run("0").info.run_id
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "mlflow_run_id"), "w") as f:
        f.write(run_id)
    return run_id


def test_a_registered_metric_appears_in_evaluate_mlflow_and_the_summary(
        digits16, tmp_path, tracking_uri, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    # The session's store: in-process CLI tests run earlier may have pointed MLflow elsewhere
    # (a CLI sets the URI of its model dir), and run_metrics logs to the current store.
    mlflow.set_tracking_uri(tracking_uri)
    monkeypatch.setattr(eval_harness, "METRICS", dict(eval_harness.METRICS))
    seen = []

    @eval_harness.register_metric("mean_pixel", applies=lambda m: m.spec.latent,
                                  label="{split} pixels", summary=lambda r: f"mean {r['mean']:.1f}")
    def mean_pixel(model, request):
        seen.append(request)
        images = eval_harness.load_split(model, request.data_dir, request.split,
                                         request.max_examples).images()
        return {"split": request.split, "mean": float(images.mean()), "count": len(images)}

    with pytest.raises(ValueError, match="taken"):
        eval_harness.register_metric("mean_pixel")(mean_pixel)
    with pytest.raises(ValueError, match="taken"):
        eval_harness.register_metric("samples")(mean_pixel)
    model_dir = str(tmp_path / "run")
    run_id = _store_run(tracking_uri, model_dir)
    request = eval_harness.EvalRequest(digits16, "validation", batch_size=16, seed=1,
                                       max_examples=30, show_progress=False)
    model = _model("vae")
    results = evaluate.evaluate_data(model, model_dir, request)
    assert list(results) == ["bpd", "latent", "mean_pixel"]  # registration order
    assert seen == [request]
    images = _file_order(digits16, "validation")[0][:30]
    assert results["mean_pixel"] == {"split": "validation", "mean": float(images.mean()),
                                     "count": 30}
    assert results["bpd"] == evaluate.evaluate_bpd(model, digits16, "validation", 16, 1, 1, 30,
                                                   False)
    assert results["latent"] == evaluate.evaluate_latent(model, digits16, "validation", 16, 1,
                                                         30, False)
    assert results["bpd"]["num_examples"] == 30
    logged = MlflowClient(tracking_uri).get_run(run_id).data.metrics
    assert logged["eval/validation/mean_pixel/mean"] == pytest.approx(images.mean())
    assert logged["eval/validation/mean_pixel/count"] == 30
    assert logged["eval/validation/bpd"] == pytest.approx(results["bpd"]["bpd"])
    assert logged["eval/validation/latent/kl_mean"] == pytest.approx(results["latent"]["kl_mean"])
    lines = eval_harness.summary_lines(json.loads(json.dumps(results)))  # as the quickstart reads it
    assert lines[-1] == f"  validation pixels mean {images.mean():.1f}"
    # a flow: no encoder, no latent, and the test's metric does not apply
    flow_results = eval_harness.run_metrics(_model("flow"), request)
    assert list(flow_results) == ["bpd"] and flow_results["bpd"]["kind"] == "exact"


def test_builtin_summary_lines_are_the_quickstarts():
    results = {
        "bpd": {"split": "validation", "bpd": 1.23456, "bpd_stderr": 0.0123, "kind": "elbo_bound",
                "bpd_iw": 1.2, "importance_samples": 8},
        "latent": {"split": "validation", "kl_mean": 12.345, "active_units": 3, "latent_dim": 4},
        "samples": {"fid": 1.0}}
    assert eval_harness.summary_lines(results) == [
        "  validation BPD    1.235 +- 0.012 (elbo_bound), IW-8 bound 1.200",
        "  latent            KL 12.3 nats, 3 of 4 units active"]
    binary = {"nll_binarized": {"split": "test", "nll_nats": 90.123, "nll_nats_stderr": 1.5,
                                "kind": "elbo_bound_binarized"}}
    assert eval_harness.summary_lines(binary) == [
        "  test NLL          90.12 +- 1.50 nats per binarized image"]
    assert eval_harness.summary_lines({}) == []
