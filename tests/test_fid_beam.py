"""beam_jobs.fid end to end: real Beam pipelines over TFRecords, samples and folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from artifacts import dataset_format
from beam_jobs import fid
from beam_jobs.fid import extractors, fid_math, identity
from beam_jobs.fid.fid_math import FeatureStatistics
from beam_jobs.sources import mnist_idx
from tfp_models.row_seeds import sample_row_seeds

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_REAL = 240


class _TinyGenerator(tf.Module):
    """Seed i -> a deterministic uint8 [28, 28, 1] image (stateless uniform noise)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None], tf.float32)])
    def sample(self, seed, temperature):
        def one(args):
            s, t = args
            u = tf.random.stateless_uniform([28, 28, 1], seed=tf.stack([s, tf.constant(7, tf.int64)]))
            return tf.cast(tf.clip_by_value(u * t * 255.0, 0.0, 255.0), tf.uint8)

        return {"images": tf.map_fn(one, (seed, temperature), fn_output_signature=tf.uint8)}


@pytest.fixture(scope="session")
def generator_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("gen") / "sampler")
    module = _TinyGenerator()
    tf.saved_model.save(module, path, signatures={"sample": module.sample.get_concrete_function()})
    return path


@pytest.fixture(scope="session")
def extractor_dir(tmp_path_factory) -> str:
    """An untrained MNIST-architecture extractor (accuracy is irrelevant here)."""
    _, features_model = extractors.build_mnist_classifier(feature_dim=32, seed=1)
    return extractors.export_mnist_classifier(
        features_model, str(tmp_path_factory.mktemp("ext") / "mnist_classifier"))


@pytest.fixture(scope="session")
def mnist_records(tmp_path_factory, mnist_dir) -> tuple[str, np.ndarray]:
    """The first NUM_REAL MNIST test digits as a preprocessed 2-shard 'train' split."""
    images, labels = mnist_idx.load_mnist(str(mnist_dir))
    images, labels = images[:NUM_REAL, :, :, None], labels[:NUM_REAL]
    out = tmp_path_factory.mktemp("records")
    shards = []
    for s in range(2):
        name = dataset_format.shard_name("train", s, 2)
        idx = range(s, NUM_REAL, 2)
        with tf.io.TFRecordWriter(str(out / name)) as w:
            for i in idx:
                png = tf.io.encode_png(images[i]).numpy()
                w.write(dataset_format.encode_example(png, int(labels[i]), f"mnist-{i}"))
        shards.append({"file": name, "count": len(idx)})
    with open(out / dataset_format.DATASET_JSON, "w") as f:
        json.dump({"image_shape": [28, 28, 1],
                   "splits": {"train": {"count": NUM_REAL, "shards": shards}}}, f)
    return str(out), images


def _direct_features(extractor_dir: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fn = tf.saved_model.load(extractor_dir).signatures["features"]
    out = fn(images=tf.constant(images))
    return out["pool"].numpy(), out["logits"].numpy()


def _generate(generator_dir: str, seeds: np.ndarray) -> np.ndarray:
    fn = tf.saved_model.load(generator_dir).signatures["sample"]
    return fn(seed=tf.constant(seeds, tf.int64),
              temperature=tf.ones([len(seeds)], tf.float32))["images"].numpy()


def test_sample_source_yields_exactly_n_when_not_multiple_of_batch(generator_dir):
    n, batch, seed = 37, 16, 100
    expected = _generate(generator_dir, sample_row_seeds(seed, 0, n))  # pipeline.evaluate's rows
    with beam.Pipeline(options=fid.pipeline_options(None)) as p:
        images = p | fid.ReadImages(fid.SampleSource(generator_dir, n, 1.0, seed, batch))
        checksums = images | beam.MapTuple(lambda i, im: (i, im.shape, int(im.astype(np.int64).sum())))
        assert_that(checksums, equal_to(
            [(i, (28, 28, 1), int(expected[i].astype(np.int64).sum())) for i in range(n)]))


def test_tfrecord_statistics_match_direct_computation(extractor_dir, mnist_records):
    data_dir, images = mnist_records
    stats = fid.compute_statistics(fid.TFRecordSource(data_dir, "train"), "mnist_classifier",
                                   extractor_dir, batch_size=32, kid_samples=50)
    pool, _ = _direct_features(extractor_dir, images)
    direct = FeatureStatistics.from_features(pool)
    assert stats.count == NUM_REAL and stats.dim == 32
    np.testing.assert_allclose(stats.mu, direct.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.sigma, direct.sigma, rtol=1e-5, atol=1e-6)
    assert stats.kid_features.shape == (50, 32)
    assert stats.extractor == "mnist_classifier" and "28x28" in stats.resize_protocol
    assert stats.extractor_fingerprint == identity.saved_model_fingerprint(extractor_dir)
    assert stats.image_shape == "28x28x1"
    assert abs(fid_math.fid_from_statistics(stats, direct, allow_unverified=True)) < 1e-4


def test_evaluate_samples_end_to_end(tmp_path, generator_dir, extractor_dir, mnist_records):
    data_dir, images = mnist_records
    ref_path = str(tmp_path / "ref.npz")
    ref = fid.evaluate(fid.TFRecordSource(data_dir, "train"), "mnist_classifier", extractor_dir,
                       output_stats=ref_path, kid_samples=100, save_kid_features=True)
    assert ref["fid"] is None and ref["num_samples"] == NUM_REAL
    out = fid.evaluate_samples(generator_dir, 37, ref_path, "mnist_classifier", extractor_dir,
                               batch_size=16, seed=5, kid_subset_size=30, kid_num_subsets=10,
                               reference_data_dir=data_dir, reference_split="train")
    assert out["num_samples"] == 37 and out["feature_dim"] == 32
    assert set(out) >= {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "extractor",
                        "resize_protocol", "extractor_fingerprint", "image_shape"}
    assert out["reference_num_samples"] == NUM_REAL and out["image_shape"] == "28x28x1"
    # The same numbers computed directly from the same images.
    samples = _generate(generator_dir, sample_row_seeds(5, 0, 37))
    s_pool, s_logits = _direct_features(extractor_dir, samples)
    r_pool, _ = _direct_features(extractor_dir, images)
    s_stats, r_stats = (FeatureStatistics.from_features(s_pool),
                        FeatureStatistics.from_features(r_pool))
    expected_fid = fid_math.frechet_distance(s_stats.mu, s_stats.sigma, r_stats.mu, r_stats.sigma)
    assert out["fid"] == pytest.approx(expected_fid, rel=1e-4)
    assert out["fid"] > 1e-3
    ipd = fid_math.InceptionScoreStatistics(10)
    for i in range(37):
        ipd.add(i % 10, s_logits[i])
    assert out["is_mean"] == pytest.approx(ipd.score()[0], rel=1e-5)
    assert out["kid_mean"] is not None and np.isfinite(out["kid_std"])
    # Precision/recall against the features of --reference_data_dir (every image: fewer
    # than the cap on both sides).
    pr = fid_math.precision_recall(r_pool, s_pool, k=3)
    assert (out["precision"], out["recall"]) == (pr.precision, pr.recall)
    assert (out["pr_k"], out["pr_num_samples"], out["pr_num_reference"]) == (3, 37, NUM_REAL)
    assert "all 37 evaluated images and all 240 reference images" in out["pr_note"]


def test_image_folder_counts_and_skips_bad_files(tmp_path, extractor_dir):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            folder / ("sub" if i % 2 else "") / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / "grey.jpg")
    (folder / "broken.png").write_bytes(b"not a png")
    res = fid.run_features(fid.ImageFolderSource(str(folder)),
                           extractors.resolve_extractor("mnist_classifier", extractor_dir),
                           kid_samples=0)
    assert res.statistics.count == 7 and res.undecodable == 1
    assert res.statistics.image_shape == "mixed:28x28x1,32x32x3"


def test_image_folder_source_takes_the_image_names_preprocess_takes(tmp_path):
    """.tif/.tiff are images; dotfiles (macOS ``._x``), hidden folders and ``__MACOSX``
    are not: the rule of artifacts.dataset_format, shared with beam_jobs.preprocess."""
    from beam_jobs.sources.registry import plan_source

    rng = np.random.default_rng(4)
    folder = tmp_path / "imgs"
    images = {"a.png": (9, 7, 3), "b.tif": (8, 8, 3), "sub/c.TIFF": (6, 5, 1),
              "sub/d.jpg": (10, 4, 3)}
    for name, shape in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, shape, dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if shape[2] == 1 else pixels).save(folder / name)
    junk = ["._a.png", "sub/.e.png", ".hidden/f.png", "__MACOSX/g.png", "__MACOSX/sub/._d.jpg",
            "notes.txt"]
    for name in junk:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(
            folder / name, format="PNG")
    source = fid.ImageFolderSource(str(folder))
    expected = sorted(images)
    assert [os.path.relpath(f, folder) for f in source.files()] == expected
    assert source.size_hint() == 4
    assert plan_source("image_folder", str(folder)).keys == expected
    with beam.Pipeline(options=fid.pipeline_options(None)) as p:
        shapes = p | fid.ReadImages(source) | beam.MapTuple(lambda key, im: (key, im.shape))
        assert_that(shapes, equal_to(list(images.items())))


def test_bad_inputs_have_clear_errors(tmp_path, extractor_dir, generator_dir, mnist_records):
    with pytest.raises(ValueError, match=r"split 'test' not in .*available splits: \['train'\]"):
        fid.TFRecordSource(mnist_records[0], "test").files()
    with pytest.raises(ValueError, match="has no signature 'sample'"):
        fid.SampleSource(extractor_dir, 10).validate()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        extractors.resolve_extractor("mnist_classifier", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="has no signature 'features'"):
        extractors.resolve_extractor("saved_model", generator_dir)


def _run_cli(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "beam_jobs.fid", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_cli_failing(*args: str) -> str:
    """Runs the CLI expecting a user error; returns its one stderr line."""
    proc = subprocess.run([sys.executable, "-m", "beam_jobs.fid", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _main_failing(capsys, *args: str) -> str:
    """``fid.main`` in process (a CLI start-up costs ~6 s of TensorFlow import) expecting
    a user error: exit code 2 and exactly one ``error:`` line on stderr."""
    capsys.readouterr()
    assert fid.main(list(args)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_compare_stats_cli(tmp_path, capsys):
    rng = np.random.default_rng(3)
    ident = dict(extractor="mnist_classifier", resize_protocol="p", image_shape="28x28x1",
                 extractor_fingerprint="savedmodel-sha256:" + "1" * 64)
    a = FeatureStatistics.from_features(rng.normal(size=(300, 6)), **ident)
    b = FeatureStatistics.from_features(rng.normal(0.3, 1.2, size=(300, 6)), **ident)
    a.save(str(tmp_path / "a.npz"))
    b.save(str(tmp_path / "b.npz"))
    out = _run_cli(f"--compare_stats={tmp_path / 'a.npz'},{tmp_path / 'b.npz'}")
    assert out["fid"] == pytest.approx(fid_math.fid_from_statistics(a, b), rel=1e-9)
    assert out["fid"] > 0.1
    # Another classifier's statistics: refused in one line, no traceback.
    other = dict(ident, extractor_fingerprint="savedmodel-sha256:" + "2" * 64)
    FeatureStatistics(b.mu, b.sigma, b.count, **other).save(str(tmp_path / "c.npz"))
    line = _run_cli_failing(f"--compare_stats={tmp_path / 'a.npz'},{tmp_path / 'c.npz'}")
    assert "different mnist_classifier" in line
    # A plain TTUR file (mu, sigma only): refused unless explicitly allowed.
    np.savez(tmp_path / "ttur.npz", mu=b.mu, sigma=b.sigma)
    pair = f"--compare_stats={tmp_path / 'a.npz'},{tmp_path / 'ttur.npz'}"
    assert "no extractor fingerprint" in _main_failing(capsys, pair)
    assert fid.main([pair, "--allow_unverified_stats"]) == 0
    allowed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert allowed["fid"] == pytest.approx(out["fid"], rel=1e-9)
    assert "does not exist" in _main_failing(capsys, f"--compare_stats={tmp_path / 'a.npz'},nope.npz")


def test_reference_of_another_extractor_is_refused_before_features(
        tmp_path, capsys, extractor_dir, generator_dir, mnist_records):
    """Reference statistics made with another classifier (other weights, same name and
    protocol) are refused by the API before the pipeline runs, and by the CLI in one
    line; the same reference with its own extractor is accepted."""
    data_dir, _ = mnist_records
    _, other_model = extractors.build_mnist_classifier(feature_dim=32, seed=2)
    other_dir = extractors.export_mnist_classifier(other_model, str(tmp_path / "other"))
    assert identity.saved_model_fingerprint(other_dir) != identity.saved_model_fingerprint(
        extractor_dir)
    ref = str(tmp_path / "ref.npz")
    fid.evaluate(fid.TFRecordSource(data_dir, "train"), "mnist_classifier", other_dir,
                 output_stats=ref, kid_samples=0)
    with pytest.raises(fid_math.StatisticsMismatchError, match="different mnist_classifier"):
        fid.evaluate(fid.SampleSource(generator_dir, 5), "mnist_classifier", extractor_dir,
                     reference_stats_path=ref, kid_samples=0)
    assert fid.check_reference_stats(ref, "mnist_classifier", other_dir).count == NUM_REAL
    line = _main_failing(capsys, f"--saved_model={generator_dir}", "--num_samples=5",
                            f"--reference_stats={ref}", "--extractor=mnist_classifier",
                            f"--extractor_path={extractor_dir}")
    assert "different mnist_classifier" in line and "ref.npz" in line


def test_full_cli_run(tmp_path, generator_dir, extractor_dir, mnist_records):
    data_dir, _ = mnist_records
    ref = str(tmp_path / "ref.npz")  # reference with a KID reservoir, via the API
    fid.evaluate(fid.TFRecordSource(data_dir, "train"), "mnist_classifier", extractor_dir,
                 output_stats=ref, kid_samples=60, save_kid_features=True)
    out = _run_cli(f"--saved_model={generator_dir}", "--num_samples=21", "--batch_size=8",
                   f"--reference_stats={ref}", "--extractor=mnist_classifier",
                   f"--extractor_path={extractor_dir}", "--kid_subset_size=20",
                   "--kid_num_subsets=5", f"--output_stats={tmp_path / 'samples.npz'}")
    assert out["num_samples"] == 21 and out["fid"] > 0 and out["kid_mean"] is not None
    assert out["extractor"] == "mnist_classifier" and "28x28" in out["resize_protocol"]
    assert FeatureStatistics.load(str(tmp_path / "samples.npz")).count == 21
    # The reference file holds no precision/recall features: null, and the note says why.
    assert out["precision"] is None and out["recall"] is None
    assert "hold no precision/recall features" in out["pr_note"]
