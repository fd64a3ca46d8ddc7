"""beam_jobs.fid.train_classifier: a classifier trained on any labelled data set, exported as an
FID/KID/IS extractor (beam_jobs.fid.extractors, ``--extractor=classifier``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs.fid import airbench, extractors, identity, train_classifier

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("red", "green", "blue")


def _write_images(folder, rng, count: int, size: int = 16, labelled: bool = True) -> None:
    """``count`` RGB images per class: noise around a class colour (class sub-folders), or
    one flat folder without classes."""
    from PIL import Image

    for c, name in enumerate(CLASSES):
        sub = folder / name if labelled else folder
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = rng.integers(0, 90, (size, size, 3))
            img[..., c] += 160
            Image.fromarray(img.astype(np.uint8)).save(sub / f"{name}{i:03d}.png")


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> str:
    """A labelled 16x16 RGB data set (3 classes x 24 images) by beam_jobs.preprocess."""
    from beam_jobs import preprocess

    root = tmp_path_factory.mktemp("colours")
    _write_images(root / "raw", np.random.default_rng(0), 24)
    preprocess.run_preprocess("image_folder", str(root / "raw"), str(root / "data"), 16,
                              validation_fraction=0.25)
    return str(root / "data")


@pytest.fixture(scope="module")
def trained(colours, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("clf") / "classifier")
    report = train_classifier.train_classifier(
        colours, out, eval_split="validation", width=4, batch_size=8, max_steps=6)
    return out, report


def test_airbench_trains_exports_and_reports(trained, colours):
    out, report = trained
    assert report["arch"] == "airbench" and report["steps"] == 6
    assert report["num_classes"] == 3 and report["label_names"] == sorted(CLASSES)
    assert report["train_images"] + report["eval_images"] == 72
    assert 0.0 <= report["accuracy"] <= 1.0 and report["stop_reason"] == "max_steps"
    assert len(report["load_average_start"]) == 3 and report["seconds"] > 0
    with open(os.path.join(colours, "dataset.json"), "rb") as f:
        import hashlib

        assert report["dataset_json_sha256"] == hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(out, train_classifier.REPORT_JSON)) as f:
        assert json.load(f) == report
    # Loaded through beam_jobs.fid.extractors: the contract and the identity.
    info = extractors.resolve_extractor("classifier", out)
    assert info.name == "classifier" and info.feature_dim == 16 and info.num_classes == 3
    assert "RGB" in info.resize_protocol and "16x16" in info.resize_protocol
    assert info.fingerprint == report["extractor_fingerprint"]
    assert info.fingerprint == identity.extractor_fingerprint("classifier", out)
    with open(os.path.join(out, extractors.EXTRACTOR_JSON)) as f:
        meta = json.load(f)
    assert meta["eval_accuracy"] == report["accuracy"]
    assert meta["dataset_json_sha256"] == report["dataset_json_sha256"]

    fn = tf.saved_model.load(out).signatures["features"]
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    got = fn(images=tf.constant(images))
    assert got["pool"].shape == (5, 16) and got["logits"].shape == (5, 3)
    assert got["pool"].dtype == tf.float32 and got["logits"].dtype == tf.float32
    # Grey is tiled to RGB, other sizes are resized; 2 channels are refused.
    assert fn(images=tf.constant(images[..., :1]))["pool"].shape == (5, 16)
    assert fn(images=tf.zeros([2, 32, 24, 3], tf.uint8))["logits"].shape == (2, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="C = 1 or 3"):
        fn(images=tf.zeros([1, 16, 16, 2], tf.uint8))


def test_fingerprint_is_stable_and_follows_the_weights(trained, tmp_path):
    import shutil

    out, report = trained
    assert identity.saved_model_fingerprint(out) == report["extractor_fingerprint"]
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)  # the same files elsewhere: the same extractor
    assert identity.saved_model_fingerprint(copy) == report["extractor_fingerprint"]
    # The same graph with one weight changed (the linear layer's kernel, found by its bytes
    # in the variables file): another extractor.
    variables = os.path.join(copy, "variables")
    reader = tf.train.load_checkpoint(os.path.join(variables, "variables"))
    shapes = reader.get_variable_to_shape_map()
    kernel = reader.get_tensor(next(k for k, s in shapes.items() if list(s) == [16, 3]))
    data = os.path.join(variables, next(n for n in os.listdir(variables)
                                        if n.startswith("variables.data")))
    with open(data, "rb") as f:
        raw = f.read()
    offset = raw.find(kernel.tobytes())
    assert offset >= 0
    changed = kernel.copy()
    changed.flat[0] += 0.5
    with open(data, "wb") as f:
        f.write(raw[:offset] + changed.tobytes() + raw[offset + kernel.nbytes:])
    assert identity.saved_model_fingerprint(copy) != report["extractor_fingerprint"]


def test_export_matches_the_trained_model(tmp_path):
    """The export's preprocessing (uint8 -> [0, 1]) is what the model was trained on."""
    x = np.random.default_rng(3).integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)
    model = airbench.build_airbench((16, 16, 3), 3, 4, x, seed=0)
    path = extractors.export_classifier(model, str(tmp_path / "e"))
    got = tf.saved_model.load(path).signatures["features"](images=tf.constant(x[:8]))
    pool, logits = model(x[:8].astype(np.float32) / 255.0, training=False)
    np.testing.assert_allclose(got["logits"].numpy(), logits.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["pool"].numpy(), pool.numpy(), rtol=1e-4, atol=1e-5)


def test_whitening_kernel_whitens_patches():
    rng = np.random.default_rng(4)
    images = (rng.normal(128, 30, (50, 8, 8, 3)) + rng.normal(0, 40, (50, 8, 8, 1))).clip(
        0, 255).astype(np.uint8)
    kernel = airbench.whitening_kernel(images, 2, eps=0.0)
    x = images.astype(np.float64) / 255.0
    patches = np.stack([x[:, i:7 + i, j:7 + j, :] for i in range(2) for j in range(2)],
                       axis=3).reshape(-1, 12)
    out = patches @ kernel.reshape(12, 24)[:, :12]
    np.testing.assert_allclose(out.T @ out / len(out), np.eye(12), atol=1e-6)


def test_grey_data_uses_the_small_convnet(digits16, tmp_path):
    report = train_classifier.train_classifier(digits16, str(tmp_path / "small"),
                                               eval_split="validation", max_steps=3)
    assert report["arch"] == "small" and report["num_classes"] == 10
    info = extractors.resolve_extractor("classifier", str(tmp_path / "small"))
    assert info.feature_dim == 128 and "grey" in info.resize_protocol


def test_time_budget_stops_training(colours, tmp_path):
    # A budget already spent by the evaluation reserve: one step, then stop.
    report = train_classifier.train_classifier(
        colours, str(tmp_path / "budget"), eval_split="validation", width=4, batch_size=8,
        epochs=50, time_budget_minutes=0.01)
    assert report["stop_reason"] == "time_budget" and report["steps"] == 1


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    env.pop("AD_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "beam_jobs.fid.train_classifier", *args],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, env=env,
                          timeout=300)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines()
             if ln.startswith("python -m beam_jobs.fid.train_classifier: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_bad_data_dir(tmp_path):
    line = _one_error_line(_cli(f"--data_dir={tmp_path / 'missing'}",
                                f"--output={tmp_path / 'out'}"))
    assert "does not exist" in line and "missing" in line


def test_cli_data_without_labels(tmp_path):
    from beam_jobs import preprocess

    _write_images(tmp_path / "flat", np.random.default_rng(5), 8, labelled=False)
    preprocess.run_preprocess("image_folder", str(tmp_path / "flat"), str(tmp_path / "data"),
                              16, validation_fraction=0.25)
    line = _one_error_line(_cli(f"--data_dir={tmp_path / 'data'}", "--eval_split=validation",
                                f"--output={tmp_path / 'out'}"))
    assert "no labels" in line
    assert not os.path.exists(tmp_path / "out")
