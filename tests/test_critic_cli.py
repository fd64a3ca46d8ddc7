"""pipeline.critic_eval on a tiny trained flow: the critic's curves and summary, samples
reproducible per row, the CLI's JSON, PNG and MLflow metrics, and its one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from artifacts import model_io
from pipeline import critic_eval as ce
from pipeline import data as data_lib
from tfp_models.hybrid import HybridConfig, HybridModel

from conftest import TINY, train_tiny

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(critic_steps=6, batch_size=8, train_samples=16, eval_every=3, critic_channels=4,
            show_progress=False)


@pytest.fixture(scope="module")
def flow_dir(digits16, tmp_path_factory, tracking_uri):
    return train_tiny(digits16, tmp_path_factory.mktemp("critic") / "flow", tracking_uri,
                      "flow", train_steps=2)


def _run(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="2",
               **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "pipeline.critic_eval", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)


def test_critic_eval_curves_and_summary(flow_dir, digits16):
    model, _ = model_io.load_trained_model(flow_dir)
    result = ce.critic_eval(model, digits16, "validation", seed=1, **FAST)
    c = result["curves"]
    assert c["step"] == [0, 3, 6]
    assert len(c["train"]) == len(c["validation"]) == len(c["batch"]) == 3
    assert np.isnan(c["batch"][0]) and all(np.isfinite(c["batch"][1:]))
    assert result["validation_wasserstein"] == pytest.approx(c["validation"][-1], rel=1e-6)
    assert result["train_wasserstein"] == c["train"][-1]
    count = data_lib.read_dataset_info(digits16).split_counts["validation"]
    assert result["validation_stderr"] > 0 and result["num_heldout"] == count
    again = ce.critic_eval(model, digits16, "validation", seed=1, **FAST)
    np.testing.assert_equal(again["curves"], c)  # seeded: init, data order, samples, interpolation weights
    other = ce.critic_eval(model, digits16, "validation", seed=2, **FAST)
    assert other["validation_wasserstein"] != result["validation_wasserstein"]


def test_samples_are_reproducible_per_row_and_pools_disjoint(flow_dir):
    model, _ = model_io.load_trained_model(flow_dir)
    a = ce.model_samples(model, 5, 1.0, 0, offset=2, batch_size=2)
    b = ce.model_samples(model, 4, 1.0, 0)
    assert a.dtype == np.uint8 and a.shape == (5, 16, 16, 1)
    np.testing.assert_array_equal(a[:2], b[2:4])
    seeds = tf.constant([2, 3], tf.int64)
    np.testing.assert_array_equal(a[:2], model.sample_rows(seeds, tf.ones([2])).numpy())
    fresh = ce.model_samples(model, 4, 1.0, 0, offset=ce.FRESH_OFFSET)
    assert not np.array_equal(fresh, b)


def test_bad_inputs_are_refused(flow_dir, digits16):
    model, _ = model_io.load_trained_model(flow_dir)
    with pytest.raises(ValueError, match="critic trains on 'train'"):
        ce.critic_eval(model, digits16, "train", **FAST)
    with pytest.raises(ValueError, match="not in data set"):
        ce.critic_eval(model, digits16, "test", **FAST)
    small = HybridModel(HybridConfig(variant="flow", image_shape=(8, 8, 1), **TINY))
    with pytest.raises(ValueError, match=r"holds \[16, 16, 1\] images, the model was trained "
                                         r"on \[8, 8, 1\]"):
        ce.critic_eval(small, digits16, **FAST)
    vae = HybridModel(HybridConfig(variant="vae", image_shape=(16, 16, 1), **TINY))
    vae.decoder = None  # no variant lacks a generator today; the check still names it
    with pytest.raises(ValueError, match="has no generator"):
        ce.critic_eval(vae, digits16, **FAST)


def test_cli_prints_writes_and_logs(flow_dir, digits16, tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    from artifacts import tracking

    out_json, png = tmp_path / "c.json", tmp_path / "c.png"
    proc = _run(f"--model_dir={flow_dir}", f"--data_dir={digits16}", "--critic_steps=4",
                "--batch_size=8", "--train_samples=16", "--eval_every=2", "--critic_channels=4",
                f"--output_json={out_json}", f"--output_png={png}", "--noshow_progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout[proc.stdout.rfind("\n{") + 1:])
    assert printed == json.loads(out_json.read_text())
    assert printed["variant"] == "flow" and printed["curves"]["step"] == [0, 2, 4]
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = tracking.run_id_of(flow_dir)
    assert printed["mlflow_run_id"] == run_id
    metrics = client.get_run(run_id).data.metrics
    assert metrics["critic/validation/validation_wasserstein"] == pytest.approx(
        printed["validation_wasserstein"])
    curve = client.get_metric_history(run_id, "critic/validation/validation_wasserstein_curve")
    assert sorted(m.step for m in curve) == [0, 2, 4]
    artifacts = [a.path for a in client.list_artifacts(run_id, "critic")]
    assert "critic/c.png" in artifacts


def test_cli_user_errors_are_one_line(flow_dir, digits16, tmp_path):
    cases = [
        ([f"--model_dir={tmp_path / 'missing'}", f"--data_dir={digits16}"],
         "--model_dir="),
        ([f"--model_dir={flow_dir}", f"--data_dir={digits16}", "--split=train"],
         "held-out split"),
    ]
    for args, needle in cases:
        proc = _run(*args, "--noshow_progress")
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("python -m")]
        assert len(lines) == 1 and needle in lines[0], proc.stderr[-1500:]
        assert "Traceback" not in proc.stderr
