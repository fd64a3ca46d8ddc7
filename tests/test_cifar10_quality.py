"""Guard the natural-image configuration (issue 22 item 7): a few hundred steps of
configs/cifar10_cpu.cfg (the main model, `cqf`) on a slice of the real CIFAR-10 training
images must use its latent and lower the held-out bits/dim."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zipfile

import pytest

from artifacts import model_io
from pipeline import evaluate
from pipeline.quickstart import PROJECT_ROOT

TRAIN_IMAGES, TEST_IMAGES = 2000, 300
STEPS, VALIDATION_EVERY = 300, 100
MIN_ACTIVE_FRACTION = 0.5
MIN_KL_NATS = 5.0
MIN_BPD_DROP = 0.2  # validation bits/dim (ELBO) from step 100 to step 300


def _run(*argv: str) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", *argv], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, result.stderr[-3000:]


def _slice(source, target, count: int) -> str:
    """A zip of the first ``count`` image members of ``source`` (sorted by name, so every
    class is present), names unchanged (train/<class>/... or test/<class>/...)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
        step = max(1, len(names) // count)
        for name in names[::step][:count]:
            dst.writestr(name, src.read(name))
    return str(target)


def _validation_curve(tracking_uri: str) -> dict[int, float]:
    db = tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as c:
        rows = c.execute("select step, value from metrics where key = 'validation/bpd'").fetchall()
    return dict(rows)


@pytest.mark.slow
def test_short_cifar10_cqf_run_uses_its_latent_and_bpd_falls(shared_data, tmp_path):
    train_zip = _slice(shared_data / "cifar10_train_jpg" / "cifar10_train_jpg.zip",
                       tmp_path / "train.zip", TRAIN_IMAGES)
    test_zip = _slice(shared_data / "cifar10_test_jpg" / "cifar10_test_jpg.zip",
                      tmp_path / "test.zip", TEST_IMAGES)
    data, model_dir = tmp_path / "cifar10", tmp_path / "cqf"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _run("beam_jobs.preprocess", "--source=image_zip", f"--input={train_zip},{test_zip}",
         "--split_by=top_folder", f"--output_dir={data}", "--image_size=32")
    _run("pipeline.train", f"--flagfile={os.path.join(PROJECT_ROOT, 'configs', 'cifar10_cpu.cfg')}",
         f"--data_dir={data}", f"--model_dir={model_dir}", f"--train_steps={STEPS}",
         f"--validation_every={VALIDATION_EVERY}", f"--validation_examples={TEST_IMAGES}",
         "--sample_every=1000", "--checkpoint_every=1000", "--show_progress=false",
         f"--mlflow_tracking_uri={tracking_uri}")

    model, step = model_io.load_trained_model(str(model_dir))
    assert step == STEPS and model.config.variant == "cqf"
    latent = evaluate.evaluate_latent(model, str(data), "test", show_progress=False)
    assert latent["kl_mean"] >= MIN_KL_NATS, latent
    assert latent["active_units"] >= MIN_ACTIVE_FRACTION * latent["latent_dim"], latent
    curve = _validation_curve(tracking_uri)
    assert set(curve) >= {VALIDATION_EVERY, STEPS}, curve
    assert curve[VALIDATION_EVERY] - curve[STEPS] >= MIN_BPD_DROP, curve
