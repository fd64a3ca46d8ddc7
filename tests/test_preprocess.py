"""beam_jobs.preprocess end to end: record and transform units, the real CIFAR-10 JPEG zip
with bad records, determinism, clear errors that leave existing output alone, the CLI. The
other formats (LMDB of WebP, ImageNet-64 npz, image folders, MNIST IDX):
test_preprocess_sources.py."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from artifacts import dataset_format
from beam_jobs.preprocess import run_preprocess
from beam_jobs.preprocess.shard_plan import shard_of, split_of
from beam_jobs.sources.image_transform import BadImage, ImageTransform

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
IN_MEMORY = ["--direct_running_mode=in_memory"]


def read_split(out_dir, info: dict, split: str) -> dict[str, tuple[np.ndarray, int]]:
    """key -> (uint8 image [H, W, C], label) of every record of a split, checking shards."""
    result = {}
    for shard in info["splits"][split]["shards"]:
        path = os.path.join(out_dir, shard["file"])
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == shard["sha256"]
        keys = []
        for rec in dataset_format.iter_tfrecord(path):
            ex = tf.train.Example.FromString(rec).features.feature
            key = ex[dataset_format.KEY_KEY].bytes_list.value[0].decode()
            png = ex[dataset_format.IMAGE_KEY].bytes_list.value[0]
            img = np.asarray(Image.open(io.BytesIO(png)))
            if img.ndim == 2:
                img = img[:, :, None]
            result[key] = (img, ex[dataset_format.LABEL_KEY].int64_list.value[0])
            keys.append(key)
        assert keys == sorted(keys) and len(keys) == shard["count"]
    assert len(result) == info["splits"][split]["count"]
    return result


def jpeg_bytes(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def rng_image(rng, h, w, c=3) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)


# -- records / transform units ----------------------------------------------------------

def test_fast_example_encoder_parses_like_tf_and_frames_read_by_tf(tmp_path):
    for png, label, key in [(b"\x89PNG" * 100, 7, "a/b.jpg"), (b"", -1, b"\xff\x00"),
                            (b"x" * 70000, 2 ** 40, "k")]:
        fast = dataset_format.encode_example_fast(png, label, key)
        assert fast == dataset_format.encode_example_fast(png, label, key)
        assert tf.train.Example.FromString(fast) == tf.train.Example.FromString(
            dataset_format.encode_example(png, label, key))
    path = tmp_path / "x.tfrecord"
    recs = [dataset_format.encode_example_fast(b"img%d" % i, i, f"k{i}") for i in range(5)]
    path.write_bytes(b"".join(dataset_format.frame_tfrecord(r) for r in recs))
    assert [t.numpy() for t in tf.data.TFRecordDataset(str(path))] == recs
    assert list(dataset_format.iter_tfrecord(str(path))) == recs
    data = bytearray(path.read_bytes())
    data[20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        list(dataset_format.iter_tfrecord(str(path)))


def test_transform_geometry_and_passthrough():
    rng = np.random.default_rng(0)
    t = ImageTransform(64, resize_shorter_side=96)
    img = Image.fromarray(rng_image(rng, 200, 300))  # h=200, w=300
    resized = t.resize_crop(img)
    assert resized.size == (64, 64)
    ref = img.resize((144, 96), Image.Resampling.LANCZOS).crop((40, 16, 104, 80))
    assert np.array_equal(np.asarray(resized), np.asarray(ref))
    exact = rng_image(rng, 64, 64)
    out = np.asarray(Image.open(io.BytesIO(t.from_array(exact))))
    assert np.array_equal(out, exact)  # already at the target size: untouched
    squash = ImageTransform(32, center_crop=False).resize_crop(img)
    assert squash.size == (32, 32)
    with pytest.raises(ValueError, match="resize_shorter_side"):
        ImageTransform(64, resize_shorter_side=32)
    with pytest.raises(ValueError, match="image_size"):
        ImageTransform(0)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "1", "I;16"])
def test_transform_colour_modes_to_rgb_and_grey(mode):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng_image(rng, 40, 50)).convert(mode) if mode != "I;16" else \
        Image.fromarray(rng.integers(0, 65536, (40, 50), dtype=np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    for grey, shape in [(False, (16, 16, 3)), (True, (16, 16))]:
        png = ImageTransform(16, grayscale=grey).from_bytes(buf.getvalue())
        out = Image.open(io.BytesIO(png))
        assert out.format == "PNG" and np.asarray(out).shape == shape


def test_transform_bad_inputs_name_the_reason():
    t = ImageTransform(8)
    good = jpeg_bytes(np.zeros((20, 20, 3), np.uint8))
    huge = io.BytesIO()
    Image.new("L", (20001, 1)).save(huge, format="PNG")
    cases = {b"": "zero-size", b"hello, not a png": "unknown format",
             good[: len(good) // 2]: "decode failed", huge.getvalue(): "absurd dimensions"}
    for data, reason in cases.items():
        with pytest.raises(BadImage, match=reason):
            t.from_bytes(data)
    assert Image.open(io.BytesIO(t.from_bytes(good))).size == (8, 8)


def test_split_and_shard_are_stable_hashes():
    keys = [f"img/{i:05d}" for i in range(4000)]
    val = [k for k in keys if split_of(k, 0.25) == "validation"]
    assert 0.2 < len(val) / len(keys) < 0.3
    assert all(split_of(k, 0.0) == "train" for k in keys[:100])
    # Fixed values: the assignment must never change between versions/processes.
    assert [shard_of(k, 7) for k in keys[:5]] == [
        int.from_bytes(hashlib.sha256(k.encode()).digest()[8:16], "big") % 7 for k in keys[:5]]
    assert split_of("img/00000", 0.5) == split_of("img/00000", 0.5)


# -- real CIFAR-10 zip (subset) with corrupt members -------------------------------------

@pytest.fixture(scope="module")
def cifar_subset_zip(tmp_path_factory, cifar_zip) -> str:
    """200 real CIFAR-10 JPEGs (every 50th member: all classes) + 3 corrupt members."""
    path = str(tmp_path_factory.mktemp("zip") / "cifar_subset.zip")
    with zipfile.ZipFile(cifar_zip) as src, zipfile.ZipFile(path, "w") as dst:
        names = sorted(n for n in src.namelist() if n.endswith(".jpg"))[::50]
        for n in names:
            dst.writestr(n, src.read(n))
        good = src.read(names[0])
        dst.writestr("test/cat/truncated.jpg", good[: len(good) // 3])
        dst.writestr("test/dog/empty.jpg", b"")
        dst.writestr("test/frog/notes.png", b"this is a text file, not a PNG\n")
        dst.writestr("test/README.txt", b"ignored: not an image name")
    return path


def test_zip_subset_bad_records_labels_and_determinism(tmp_path, cifar_subset_zip, cifar_zip):
    kw = dict(validation_fraction=0.2, num_shards=3)
    a = run_preprocess("image_zip", cifar_subset_zip, str(tmp_path / "a"), 64,
                       pipeline_args=IN_MEMORY, **kw)
    b = run_preprocess("image_zip", cifar_subset_zip, str(tmp_path / "b"), 64,
                       pipeline_args=["--direct_running_mode=multi_threading",
                                      "--direct_num_workers=2"], **kw)
    assert a["num_bad_records"] == 3
    assert {r["key"] for r in a["bad_records"]} == {
        "test/cat/truncated.jpg", "test/dog/empty.jpg", "test/frog/notes.png"}
    reasons = {r["key"]: r["reason"] for r in a["bad_records"]}
    assert "zero-size" in reasons["test/dog/empty.jpg"]
    assert "unknown format" in reasons["test/frog/notes.png"]
    assert a["splits"]["train"]["count"] + a["splits"]["validation"]["count"] == 200
    assert a["label_names"] == CIFAR_CLASSES and a["image_shape"] == [64, 64, 3]
    assert a["transform"]["filter"] == "LANCZOS" and a["transform"]["resize_shorter_side"] == 64
    # Deterministic: same shards, byte for byte, across running modes.
    assert a["splits"] == b["splits"]
    for split in a["splits"]:
        for shard in a["splits"][split]["shards"]:
            assert (tmp_path / "a" / shard["file"]).read_bytes() == \
                   (tmp_path / "b" / shard["file"]).read_bytes()
    assert sorted(os.listdir(tmp_path / "a")) == sorted(
        ["dataset.json", "dataset_info.json", "features.json", "label.labels.txt"]
        + [s["file"] for v in a["splits"].values() for s in v["shards"]])
    # Content: each record is the transform of its source JPEG, with its folder's label.
    t = ImageTransform(64)
    with zipfile.ZipFile(cifar_zip) as src:
        for split in a["splits"]:
            for key, (img, label) in read_split(tmp_path / "a", a, split).items():
                assert split_of(key, 0.2) == split
                assert label == CIFAR_CLASSES.index(key.split("/")[1])
                expected = np.asarray(Image.open(io.BytesIO(t.from_bytes(src.read(key)))))
                assert np.array_equal(img, expected)


# -- errors leave existing output intact -------------------------------------------------

def test_errors_are_clear_and_keep_existing_output(tmp_path, cifar_subset_zip):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_preprocess("image_zip", str(tmp_path / "nope.zip"), str(tmp_path / "o"), 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        run_preprocess("image_folder", str(tmp_path / "empty"), str(tmp_path / "o"), 32)
    with pytest.raises(ValueError, match="unknown source kind"):
        run_preprocess("tar", str(tmp_path / "empty"), str(tmp_path / "o"), 32)
    assert not (tmp_path / "o").exists()

    out = tmp_path / "out"
    first = run_preprocess("image_zip", cifar_subset_zip, str(out), 16, pipeline_args=IN_MEMORY)
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_preprocess("image_zip", cifar_subset_zip, str(out), 16)
    bad_only = tmp_path / "bad"
    (bad_only / "a").mkdir(parents=True)
    (bad_only / "a" / "x.jpg").write_bytes(b"\xff\xd8\xff broken")
    (bad_only / "a" / "y.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no decodable images"):
        run_preprocess("image_folder", str(bad_only), str(out), 16, overwrite=True,
                       pipeline_args=IN_MEMORY)
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["bad", "empty", "out"]  # no temp dirs left

    second = run_preprocess("image_zip", cifar_subset_zip, str(out), 8, overwrite=True,
                            pipeline_args=IN_MEMORY)
    assert second["image_shape"] == [8, 8, 3] != first["image_shape"]
    assert json.loads((out / "dataset.json").read_text())["image_shape"] == [8, 8, 3]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a data set"):
        run_preprocess("image_zip", cifar_subset_zip, str(other), 8, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


# -- the CLI on the real CIFAR-10 zip ----------------------------------------------------

def test_cli_on_the_real_cifar_zip(tmp_path, cifar_zip):
    out = tmp_path / "cifar32"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "beam_jobs.preprocess", "--source=image_zip",
           f"--input={cifar_zip}", f"--output_dir={out}", "--image_size=32",
           "--validation_fraction=0.1", "--num_shards=2"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "dataset.json").read_text())
    assert info["num_bad_records"] == 0 and info["label_names"] == CIFAR_CLASSES
    counts = {s: v["count"] for s, v in info["splits"].items()}
    assert sum(counts.values()) == 10000 and 800 < counts["validation"] < 1200
    assert [s["file"] for s in info["splits"]["train"]["shards"]] == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    labels = np.zeros(10, int)
    for split in info["splits"]:
        for shard in info["splits"][split]["shards"]:
            for rec in dataset_format.iter_tfrecord(str(out / shard["file"])):
                ex = tf.train.Example.FromString(rec).features.feature
                labels[ex[dataset_format.LABEL_KEY].int64_list.value[0]] += 1
    assert labels.tolist() == [1000] * 10
    again = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    missing = subprocess.run(cmd[:4] + [f"--input={tmp_path}/missing.zip",
                                        f"--output_dir={tmp_path}/x", "--image_size=32"],
                             cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "missing.zip" in missing.stderr
