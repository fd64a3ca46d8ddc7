"""beam_jobs.fid.extractors and pipeline.train_mnist_classifier."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs.fid import extractors, identity
from pipeline import train_mnist_classifier


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory, mnist_dir) -> tuple[str, dict]:
    """The real trainer, capped at a few steps for speed."""
    out = str(tmp_path_factory.mktemp("clf") / "mnist_classifier")
    result = train_mnist_classifier.train_classifier(str(mnist_dir), out, max_steps=80)
    return out, result


def test_trainer_exports_a_working_extractor(trained_classifier, mnist_dir):
    path, result = trained_classifier
    assert result["train_images"] == 9000 and result["heldout_images"] == 1000
    assert result["accuracy"] > 0.6  # 80 steps; the full run (4 epochs) reaches > 97%
    info = extractors.resolve_extractor("mnist_classifier", path)
    assert info.feature_dim == 128 and info.num_classes == 10
    with open(os.path.join(path, extractors.EXTRACTOR_JSON)) as f:
        assert json.load(f)["heldout_accuracy"] == pytest.approx(result["accuracy"])

    from beam_jobs.sources import mnist_idx

    images, labels = mnist_idx.load_mnist(str(mnist_dir))
    grey = images[9000:9200, :, :, None]
    fn = tf.saved_model.load(path).signatures["features"]
    out1 = fn(images=tf.constant(grey))
    assert out1["pool"].shape == (200, 128) and out1["logits"].shape == (200, 10)
    acc = np.mean(np.argmax(out1["logits"].numpy(), -1) == labels[9000:9200])
    assert acc > 0.6
    # Grey replicated to RGB scores the same; a 32x32 RGB input is resized, not refused.
    out3 = fn(images=tf.constant(np.repeat(grey, 3, axis=-1)))
    np.testing.assert_allclose(out3["logits"].numpy(), out1["logits"].numpy(), atol=1e-3)
    big = tf.image.resize(tf.constant(np.repeat(grey[:8], 3, -1)), [32, 32]).numpy()
    out_big = fn(images=tf.constant(big.round().astype(np.uint8)))
    assert out_big["pool"].shape == (8, 128)
    assert np.mean(np.argmax(out_big["logits"].numpy(), -1) == labels[9000:9008]) >= 0.5
    with pytest.raises(tf.errors.InvalidArgumentError, match="C = 1 or 3"):
        fn(images=tf.zeros([1, 28, 28, 2], tf.uint8))


def test_trainer_reports_missing_mnist_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_mnist_classifier.train_classifier(str(tmp_path), str(tmp_path / "out"))


def test_features_inference_fn_groups_shapes(tmp_path):
    _, model = extractors.build_mnist_classifier(feature_dim=8)
    path = extractors.export_mnist_classifier(model, str(tmp_path / "ext"))
    handler = extractors.features_model_handler(path, batch_size=4)
    loaded = handler.load_model()  # tf.saved_model.load, not tf.keras (Keras 3 refuses)
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 255, s, dtype=np.uint8)
             for s in [(28, 28, 1), (32, 32, 3), (28, 28, 1)]]
    results = list(handler.run_inference(batch, loaded))
    assert [r.inference["pool"].shape for r in results] == [(8,)] * 3
    single = extractors.features_inference_fn(loaded, [batch[1]])[0]
    np.testing.assert_allclose(results[1].inference["logits"], single.inference["logits"],
                               rtol=1e-5, atol=1e-6)


def test_inception_missing_or_wrong_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        extractors.resolve_extractor("inception_v3", str(tmp_path / "missing.pb"))
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"expected a frozen graph '\.pb' or Keras weights"):
        extractors.build_inception_saved_model(str(tmp_path / "w.bin"), str(tmp_path))
    (tmp_path / "bad.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="bad.pb"):
        extractors.build_inception_saved_model(str(tmp_path / "bad.pb"), str(tmp_path))


def _tiny_inception_graph(path: str, rng: np.random.Generator) -> None:
    """A frozen graph with the tensor names of classify_image_graph_def.pb (2015-12-05)."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, None, None, 3], name="ExpandDims")
        r = tf.compat.v1.image.resize_bilinear(x, [299, 299], name="ResizeBilinear")
        s = tf.multiply(tf.subtract(r, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        m = tf.reduce_mean(s, axis=[1, 2], keepdims=True)
        w0 = tf.constant(rng.normal(size=(1, 1, 3, 2048)).astype(np.float32))
        pool = tf.nn.relu(tf.nn.conv2d(m, w0, 1, "VALID"), name="pool_3")
        flat = tf.reshape(pool, [1, 2048], name="pool_3/_reshape")
        w = tf.constant(rng.normal(size=(2048, 1008)).astype(np.float32) * 0.01,
                        name="softmax/weights")
        b = tf.constant(rng.normal(size=(1008,)).astype(np.float32), name="softmax/biases")
        logits = tf.nn.bias_add(tf.matmul(flat, w, name="softmax/logits/MatMul"), b,
                                name="softmax/logits")
        tf.nn.softmax(logits, name="softmax")
    with open(path, "wb") as f:
        f.write(g.as_graph_def().SerializeToString())


def test_inception_frozen_graph_path(tmp_path):
    rng = np.random.default_rng(1)
    pb = str(tmp_path / "classify_image_graph_def.pb")
    _tiny_inception_graph(pb, rng)
    info = extractors.resolve_extractor("inception_v3", pb, cache_dir=str(tmp_path / "cache"))
    assert info.feature_dim == 2048 and info.num_classes == 1008
    assert "ResizeBilinear" in info.resize_protocol
    images = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    out = tf.saved_model.load(info.saved_model_dir).signatures["features"](
        images=tf.constant(images))
    pool_b, logits_b = out["pool"].numpy(), out["logits"].numpy()
    # Reference: the original graph, one image at a time as TTUR feeds it.
    graph_def = tf.compat.v1.GraphDef()
    with open(pb, "rb") as f:
        graph_def.ParseFromString(f.read())
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            for i in range(3):
                pool, logits = sess.run(["pool_3:0", "softmax/logits:0"],
                                        {"ExpandDims:0": images[i:i + 1].astype(np.float32)})
                np.testing.assert_allclose(pool_b[i], pool.reshape(-1), rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(logits_b[i], logits[0], rtol=1e-4, atol=1e-4)
    # Cached by content: a second resolve reuses the SavedModel.
    again = extractors.resolve_extractor("inception_v3", pb, cache_dir=str(tmp_path / "cache"))
    assert again.saved_model_dir == info.saved_model_dir
    # The identity is the source file's: a rebuilt cache keeps it.
    assert info.fingerprint == identity.extractor_fingerprint("inception_v3", pb)
    assert info.fingerprint.startswith("pb-sha256:")
    rebuilt = extractors.resolve_extractor("inception_v3", pb, cache_dir=str(tmp_path / "c2"))
    assert rebuilt.saved_model_dir != info.saved_model_dir
    assert rebuilt.fingerprint == info.fingerprint


@pytest.mark.slow  # ~45-60 s on 2 cores: builds, saves and reloads the full InceptionV3
def test_inception_keras_h5_path(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(weights=None, include_top=True,
                                           classifier_activation=None)
    h5 = str(tmp_path / "inception_v3.weights.h5")
    model.save_weights(h5)
    info = extractors.resolve_extractor("inception_v3", h5, cache_dir=str(tmp_path / "cache"))
    assert info.feature_dim == 2048 and info.num_classes == 1000
    assert "[-1,1]" in info.resize_protocol
    assert info.fingerprint == identity.extractor_fingerprint("inception_v3", h5)
    assert info.fingerprint.startswith("keras_h5-sha256:")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, (2, 40, 40, 3), dtype=np.uint8)
    fn = tf.saved_model.load(info.saved_model_dir).signatures["features"]
    out = fn(images=tf.constant(images))
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1000)
    x = tf.image.resize(images.astype(np.float32), [299, 299], method="bilinear") / 127.5 - 1.0
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), expected, rtol=1e-3, atol=1e-3)
    # Grey input is tiled to RGB.
    out_grey = fn(images=tf.constant(images[..., :1]))
    out_tiled = fn(images=tf.constant(np.repeat(images[..., :1], 3, -1)))
    np.testing.assert_allclose(out_grey["pool"], out_tiled["pool"], rtol=1e-5, atol=1e-5)


def test_inception_cache_is_private_and_verified_before_reuse(tmp_path, monkeypatch, caplog):
    """The default cache is the user's own (XDG), created 0700; a cache others can write is
    refused; a cached SavedModel whose files changed since it was built is rebuilt, not
    loaded."""
    import logging
    import stat

    rng = np.random.default_rng(3)
    pb = str(tmp_path / "classify_image_graph_def.pb")
    _tiny_inception_graph(pb, rng)
    monkeypatch.delenv("ADE_EXTRACTOR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert extractors.default_cache_dir() == str(tmp_path / "xdg" / "adaptive_density" /
                                                 "extractors")
    info = extractors.resolve_extractor("inception_v3", pb)
    cache = os.path.dirname(info.saved_model_dir)
    assert cache == extractors.default_cache_dir()
    assert stat.S_IMODE(os.stat(cache).st_mode) & 0o077 == 0
    recorded = json.load(open(os.path.join(info.saved_model_dir, "extractor.json")))
    assert recorded["saved_model_fingerprint"] == identity.saved_model_fingerprint(
        info.saved_model_dir)
    # Tamper with the cached graph: the next resolve rebuilds it instead of loading it.
    with open(os.path.join(info.saved_model_dir, "saved_model.pb"), "ab") as f:
        f.write(b"\0")
    with caplog.at_level(logging.WARNING):
        again = extractors.resolve_extractor("inception_v3", pb)
    assert "does not match its record" in caplog.text
    assert again.saved_model_dir == info.saved_model_dir
    rebuilt = json.load(open(os.path.join(again.saved_model_dir, "extractor.json")))
    assert identity.saved_model_fingerprint(again.saved_model_dir) == rebuilt[
        "saved_model_fingerprint"]
    assert again.fingerprint == info.fingerprint  # the identity is the source file's
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by other users"):
        extractors.resolve_extractor("inception_v3", pb, cache_dir=str(shared))
