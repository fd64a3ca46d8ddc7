"""Guard against the model regressions of issue 11 on real digits: a short run of the
quickstart's main model (`cqf`, configs/quickstart.cfg) must use its latent and its
temperature-0 samples must be recognisable to an independent MNIST classifier."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from artifacts import model_io
from beam_jobs.fid.fid_math import CONFIDENT_THRESHOLD
from pipeline import evaluate
from pipeline.quickstart import PROJECT_ROOT

STEPS = 400          # half the quickstart's budget
MIN_ACTIVE_UNITS = 4
MIN_CONFIDENT_T0 = 0.2  # weak bar; the collapsed model of issue 11 scored 0.00-0.45 by luck
SAMPLES = 500


def _run(*argv: str) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", *argv], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_short_cqf_run_uses_its_latent_and_samples_digits(mnist_dir, tmp_path, tracking_uri):
    data, classifier, model_dir = tmp_path / "mnist28", tmp_path / "clf", tmp_path / "cqf"
    _run("beam_jobs.preprocess", "--source=mnist_idx", f"--input={mnist_dir}",
         f"--output_dir={data}", "--image_size=28", "--grayscale", "--validation_fraction=0.1")
    _run("pipeline.train_mnist_classifier", f"--mnist_dir={mnist_dir}", f"--output={classifier}")
    _run("pipeline.train", f"--flagfile={os.path.join(PROJECT_ROOT, 'configs', 'quickstart.cfg')}",
         f"--data_dir={data}", f"--model_dir={model_dir}", f"--train_steps={STEPS}",
         "--sample_every=1000", "--show_progress=false", f"--mlflow_tracking_uri={tracking_uri}")

    model, step = model_io.load_trained_model(str(model_dir))
    assert step == STEPS and model.config.variant == "cqf"
    latent = evaluate.evaluate_latent(model, str(data), "validation", show_progress=False)
    assert latent["active_units"] >= MIN_ACTIVE_UNITS, latent

    judge = tf.saved_model.load(str(classifier)).signatures["features"]
    samples = model.sample(SAMPLES, temperature=0.0, seed=0)
    probs = tf.nn.softmax(judge(images=samples)["logits"]).numpy()
    confident = float((probs.max(axis=1) >= CONFIDENT_THRESHOLD).mean())
    labels = np.bincount(probs.argmax(axis=1), minlength=10)
    assert confident >= MIN_CONFIDENT_T0, (confident, labels.tolist())
    assert (labels > 0).sum() >= 5, labels.tolist()  # not one or two shapes
