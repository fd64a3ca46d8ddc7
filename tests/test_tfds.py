"""TFDS in both directions: the preprocessing output read by
``tfds.builder_from_directory`` (same records as pipeline.data), and ``--source=tfds``
reading a TFDS data set prepared in the test (a small builder) into the project's format."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from artifacts import dataset_format
from artifacts.tfrecord_dataset import make_image_dataset
from beam_jobs.preprocess import run_preprocess
from beam_jobs.sources import tfds_source
from beam_jobs.sources.image_transform import ImageTransform

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_MEMORY = ["--direct_running_mode=in_memory"]
NO_GCS = tfds.download.DownloadConfig(try_download_gcs=False)


def records_of(out_dir, info: dict, split: str) -> dict[str, tuple[np.ndarray, int]]:
    """key -> (uint8 [H, W, C], label) of a split, read record by record (no TFDS)."""
    got = {}
    for shard in info["splits"][split]["shards"]:
        for rec in dataset_format.iter_tfrecord(os.path.join(out_dir, shard["file"])):
            ex = tf.train.Example.FromString(rec).features.feature
            img = np.asarray(Image.open(io.BytesIO(ex["image"].bytes_list.value[0])))
            got[ex["key"].bytes_list.value[0].decode()] = (
                img[..., None] if img.ndim == 2 else img, ex["label"].int64_list.value[0])
    return got


def tfds_records(data_dir, split: str) -> dict[str, tuple[np.ndarray, int]]:
    builder = tfds.builder_from_directory(str(data_dir))
    return {ex["key"].decode(): (ex["image"], int(ex["label"]))
            for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))}


def pipeline_records(data_dir, split: str) -> list[tuple[bytes, int]]:
    ds = make_image_dataset(str(data_dir), split, 7, shuffle=False, repeat=False,
                            drop_remainder=False, with_labels=True)
    return sorted((img.tobytes(), int(lab)) for images, labels in tfds.as_numpy(ds)
                  for img, lab in zip(images, labels))


# -- direction 1: our output is a TFDS data set -----------------------------------------

@pytest.mark.parametrize("grey", [False, True])
def test_preprocess_output_reads_with_tfds_like_pipeline_data(tmp_path, grey):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for cls in ("cats", "dogs", "owls"):
        (root / cls).mkdir(parents=True)
    for i in range(40):
        img = rng.integers(0, 256, (30 + i % 5, 28, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / ("cats", "dogs", "owls")[i % 3] / f"{i:03d}.png")
    out = tmp_path / "out"
    # 7 shards of ~32 train records: some shards may be empty, which TFDS must accept.
    info = run_preprocess("image_folder", str(root), str(out), 16, grayscale=grey,
                          validation_fraction=0.25, num_shards=7, pipeline_args=IN_MEMORY)
    assert {"dataset_info.json", "features.json", "label.labels.txt"} <= set(os.listdir(out))
    builder = tfds.builder_from_directory(str(out))
    features = builder.info.features
    c = 1 if grey else 3
    assert features["image"].shape == (16, 16, c)
    assert features["label"].names == ["cats", "dogs", "owls"]
    assert builder.info.supervised_keys == ("image", "label")
    assert builder.info.file_format.value == "tfrecord"
    for split in ("train", "validation"):
        entry = info["splits"][split]
        split_info = builder.info.splits[split]
        assert split_info.filenames == [s["file"] for s in entry["shards"]]
        assert split_info.shard_lengths == [s["count"] for s in entry["shards"]]
        assert split_info.num_bytes == sum(os.path.getsize(out / s["file"])
                                           for s in entry["shards"])
        by_tfds = tfds_records(out, split)
        by_records = records_of(out, info, split)
        assert sorted(by_tfds) == sorted(by_records) and len(by_tfds) == entry["count"]
        for key, (img, label) in by_records.items():
            assert by_tfds[key][0].shape == (16, 16, c) and by_tfds[key][0].dtype == np.uint8
            assert np.array_equal(by_tfds[key][0], img) and by_tfds[key][1] == label
        # The same multiset of (image, label) as pipeline.data reads (order may differ).
        assert sorted((img.tobytes(), lab) for img, lab in by_tfds.values()) == \
            pipeline_records(out, split)
    # as_supervised gives (image, label) pairs.
    image, label = next(iter(tfds.as_numpy(builder.as_dataset(split="train",
                                                              as_supervised=True))))
    assert image.shape == (16, 16, c) and 0 <= label < 3


def test_unlabelled_output_uses_an_int64_scalar_label(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    info = run_preprocess("image_folder", str(folder), str(out), 8, pipeline_args=IN_MEMORY)
    assert info["label_names"] is None
    builder = tfds.builder_from_directory(str(out))
    assert isinstance(builder.info.features["label"], tfds.features.Scalar)
    assert builder.info.supervised_keys is None
    got = tfds_records(out, "train")
    assert sorted(got) == [f"{i}.png" for i in range(6)]
    assert {lab for _, lab in got.values()} == {dataset_format.UNKNOWN_LABEL}


def test_tfds_template_formats_the_shard_names():
    from etils import epath

    template = tfds.core.ShardedFileTemplate(
        data_dir=epath.Path("/x"), template=dataset_format.TFDS_FILENAME_TEMPLATE,
        filetype_suffix=dataset_format.TFDS_FILE_FORMAT, split="train")
    assert template.sharded_filenames(3) == [dataset_format.shard_name("train", i, 3)
                                             for i in range(3)]
    parsed = template.parse_filename_info("validation-00002-of-00005.tfrecord")
    assert (parsed.split, parsed.shard_index, parsed.num_shards) == ("validation", 2, 5)


# -- direction 2: --source=tfds -------------------------------------------------------------

class AdeTinyShapes(tfds.core.GeneratorBasedBuilder):
    """A tiny TFDS data set made by the test: 2 splits of random RGB images (PNG), 3 classes,
    plus a uint8 Tensor copy of every image."""

    VERSION = tfds.core.Version("1.0.1")
    SIZES = {"train": 23, "test": 9}

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(12, 10, 3)),
            "pixels": tfds.features.Tensor(shape=(12, 10, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=["circle", "square", "star"]),
            "id": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in self.SIZES}

    def _generate_examples(self, split):
        for i, (img, label) in enumerate(zip(*self.arrays(split))):
            yield f"{split}{i}", {"image": img, "pixels": img, "label": label,
                                  "id": f"{split}/{i}"}

    @classmethod
    def arrays(cls, split):
        rng = np.random.default_rng(list(cls.SIZES).index(split))
        n = cls.SIZES[split]
        return rng.integers(0, 256, (n, 12, 10, 3), dtype=np.uint8), rng.integers(0, 3, n)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    builder = AdeTinyShapes(data_dir=data_dir)
    builder.download_and_prepare(download_config=NO_GCS)
    return data_dir


def _by_pixels() -> dict[bytes, int]:
    return {img.tobytes(): int(lab) for split in AdeTinyShapes.SIZES
            for img, lab in zip(*AdeTinyShapes.arrays(split))}


def test_source_tfds_by_name_reads_every_split_pixel_exact(tmp_path, tfds_dir):
    out = tmp_path / "out"
    info = run_preprocess("tfds", None, str(out), 10, center_crop=True,
                          resize_shorter_side=10, validation_fraction=0.3, num_shards=2,
                          pipeline_args=IN_MEMORY,
                          source_options={"name": "ade_tiny_shapes", "data_dir": tfds_dir,
                                          "split": "train+test"})
    assert info["label_names"] == ["circle", "square", "star"]
    assert info["source"]["kind"] == "tfds" and info["source"]["tfds_splits"] == ["train", "test"]
    assert info["source"]["input"].endswith(os.path.join("ade_tiny_shapes", "1.0.1"))
    assert info["num_bad_records"] == 0
    # Keys are TFDS's tfds_id; every record is the transform of its TFDS image.
    expected_keys = {f"ade_tiny_shapes-{split}.tfrecord-00000-of-00001__{i}"
                     for split, n in AdeTinyShapes.SIZES.items() for i in range(n)}
    t = ImageTransform(10, resize_shorter_side=10)
    tf_ids = {}
    builder = tfds.builder("ade_tiny_shapes", data_dir=tfds_dir)
    for split in AdeTinyShapes.SIZES:
        ds = builder.as_dataset(split=split, read_config=tfds.ReadConfig(add_tfds_id=True))
        for ex in tfds.as_numpy(ds):
            tf_ids[ex["tfds_id"].decode()] = (ex["image"], int(ex["label"]))
    assert set(tf_ids) == expected_keys
    got = {}
    for split in ("train", "validation"):
        got.update(records_of(out, info, split))
    assert set(got) == expected_keys
    for key, (img, label) in got.items():
        src, src_label = tf_ids[key]
        crop = np.asarray(t.resize_crop(Image.fromarray(src)))
        assert np.array_equal(img, crop) and label == src_label
    assert all(img.shape == (10, 10, 3) for img, _ in got.values())  # 12 x 10 center-cropped


def test_source_tfds_uint8_tensor_feature_and_no_labels(tmp_path, tfds_dir):
    path = tfds_source.resolve_tfds_dir("ade_tiny_shapes", tfds_dir)
    out = tmp_path / "out"
    info = run_preprocess("tfds", path, str(out), 12, center_crop=False, pipeline_args=IN_MEMORY,
                          source_options={"split": "test", "image_key": "pixels",
                                          "label_key": ""})
    assert info["label_names"] is None
    got = records_of(out, info, "train")
    ds = tfds.builder_from_directory(path).as_dataset(
        split="test", read_config=tfds.ReadConfig(add_tfds_id=True))
    pixels = {ex["tfds_id"].decode(): ex["pixels"] for ex in tfds.as_numpy(ds)}
    assert sorted(got) == sorted(pixels) and len(got) == AdeTinyShapes.SIZES["test"]
    for key, (img, label) in got.items():
        expected = np.asarray(ImageTransform(12, center_crop=False).resize_crop(
            Image.fromarray(pixels[key])))
        assert img.shape == (12, 12, 3)
        assert np.array_equal(img, expected) and label == dataset_format.UNKNOWN_LABEL


def test_round_trip_through_our_own_tfds_metadata(tmp_path, tfds_dir):
    """preprocess(tfds) -> output with TFDS metadata -> preprocess(tfds, --input=output):
    the same pixels and labels again."""
    first = tmp_path / "first"
    run_preprocess("tfds", None, str(first), 10, num_shards=3, pipeline_args=IN_MEMORY,
                   source_options={"name": "ade_tiny_shapes", "data_dir": tfds_dir})
    info1 = json.loads((first / "dataset.json").read_text())
    second = tmp_path / "second"
    info2 = run_preprocess("tfds", str(first), str(second), 10, pipeline_args=IN_MEMORY)
    assert info2["label_names"] == info1["label_names"]
    a, b = records_of(first, info1, "train"), records_of(second, info2, "train")
    assert len(a) == len(b) == AdeTinyShapes.SIZES["train"]
    assert sorted((img.tobytes(), lab) for img, lab in a.values()) == \
        sorted((img.tobytes(), lab) for img, lab in b.values())
    # Keys of the second name the first's shards (tfds_id of our own files).
    assert all(k.split("__")[0] in {s["file"] for s in info1["splits"]["train"]["shards"]}
               for k in b)


def test_source_tfds_errors_are_clear(tmp_path, tfds_dir):
    empty = tmp_path / "empty_tfds"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not prepared"):
        tfds_source.resolve_tfds_dir("ade_tiny_shapes", str(empty))
    with pytest.raises(FileNotFoundError, match="not found"):
        tfds_source.resolve_tfds_dir("no_such_dataset_xyz", str(empty))
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        run_preprocess("tfds", str(empty), str(tmp_path / "o"), 8)
    opts = {"name": "ade_tiny_shapes", "data_dir": tfds_dir}
    with pytest.raises(ValueError, match="no split"):
        run_preprocess("tfds", None, str(tmp_path / "o"), 8,
                       source_options={**opts, "split": "validation"})
    with pytest.raises(ValueError, match="expected a tfds.features.Image"):
        run_preprocess("tfds", None, str(tmp_path / "o"), 8,
                       source_options={**opts, "image_key": "id"})
    with pytest.raises(ValueError, match="takes no option"):
        run_preprocess("image_folder", str(empty), str(tmp_path / "o"), 8,
                       source_options={"split": "train"})
    assert not (tmp_path / "o").exists()


def test_cli_flag_combinations_are_checked():
    from beam_jobs.preprocess import parse_args

    args, _ = parse_args(["--source=tfds", "--tfds_name=cifar10", "--output_dir=o",
                          "--image_size=8", "--tfds_label_key="])
    assert args.tfds_name == "cifar10" and args.input is None and args.tfds_label_key == ""
    for bad in (["--source=tfds", "--tfds_name=x", "--input=y"], ["--source=tfds"],
                ["--source=image_zip"], ["--source=image_zip", "--input=a.zip",
                                         "--tfds_split=test"]):
        with pytest.raises(SystemExit) as e:
            parse_args(bad + ["--output_dir=o", "--image_size=8"])
        assert e.value.code == 2


@pytest.mark.slow
def test_cli_source_tfds(tmp_path, tfds_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    base = [sys.executable, "-m", "beam_jobs.preprocess", "--source=tfds", "--image_size=8"]
    ok = subprocess.run(base + ["--tfds_name=ade_tiny_shapes", f"--tfds_data_dir={tfds_dir}",
                                "--tfds_split=test", f"--output_dir={tmp_path / 'o'}"],
                        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    info = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert info["splits"]["train"]["count"] == AdeTinyShapes.SIZES["test"]
    assert tfds.builder_from_directory(str(tmp_path / "o")).info.splits["train"].num_examples \
        == AdeTinyShapes.SIZES["test"]
    missing = subprocess.run(base + ["--tfds_name=ade_tiny_shapes",
                                     f"--tfds_data_dir={tmp_path / 'nothing'}",
                                     f"--output_dir={tmp_path / 'x'}"],
                             cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and "ade_tiny_shapes" in missing.stderr
    assert "Traceback" not in missing.stderr
