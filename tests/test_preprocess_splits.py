"""beam_jobs.preprocess with several inputs in one job (``--input=a.zip,b.zip``) and the
split by top folder (``--split_by=top_folder``): one data set with train and test splits
from two zips, labels consistent across inputs, clear one-line errors, byte-identical
shards on a rerun, TFDS and pipeline.data read the test split."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image
from test_preprocess import read_split

from artifacts import dataset_format
from beam_jobs.preprocess import parse_args, run_preprocess
from beam_jobs.preprocess.shard_plan import assign_splits
from beam_jobs.sources.registry import plan_source

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_MEMORY = ["--direct_running_mode=in_memory"]
# train has bird, cat, dog; test lacks bird: its cat and dog must keep the union's ids.
TRAIN = {"train/bird/0.png": 1, "train/cat/0.png": 2, "train/cat/1.png": 3,
         "train/dog/0.png": 4, "train/dog/1.png": 5, "train/dog/2.png": 6}
TEST = {"test/cat/0.png": 7, "test/dog/0.png": 8, "test/dog/1.png": 9}
NAMES = ["bird", "cat", "dog"]


def png(seed: int, size: int = 6) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(path, members: dict[str, int]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, seed in members.items():
            zf.writestr(name, png(seed))
    return str(path)


def make_folder(root, members: dict[str, int]) -> str:
    for name, seed in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(seed))
    return str(root)


@pytest.fixture()
def two_zips(tmp_path) -> list[str]:
    return [make_zip(tmp_path / "train.zip", TRAIN), make_zip(tmp_path / "test.zip", TEST)]


def expected_pixels(seed: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png(seed))))


def test_two_zips_give_train_and_test_splits_with_one_label_set(tmp_path, two_zips):
    out = tmp_path / "out"
    info = run_preprocess("image_zip", two_zips, str(out), 6, split_by="top_folder",
                          pipeline_args=IN_MEMORY)
    assert {s: v["count"] for s, v in info["splits"].items()} == {"train": 6, "test": 3}
    assert list(info["splits"]) == ["train", "test"]
    assert info["label_names"] == NAMES and info["num_bad_records"] == 0
    for split, members in (("train", TRAIN), ("test", TEST)):
        records = read_split(out, info, split)
        assert set(records) == set(members)
        for key, (img, label) in records.items():
            assert label == NAMES.index(key.split("/")[1]), key
            assert np.array_equal(img, expected_pixels(members[key]))
    src = info["source"]
    assert src["kind"] == "image_zip" and src["input"] == ",".join(two_zips)
    assert [(i["input"], i["num_input_records"], i["label_names"]) for i in src["inputs"]] \
        == [(two_zips[0], 6, NAMES), (two_zips[1], 3, ["cat", "dog"])]
    assert src["num_input_records"] == 9
    t = info["transform"]
    assert t["split_by"] == "top_folder" and "validation_fraction" not in t
    assert "first '/'-separated component" in t["split_rule"]
    assert t["num_shards"] == {"train": 1, "test": 1}
    on_disk = dataset_format.read_dataset_info(out)
    assert on_disk.split_counts == {"train": 6, "test": 3}
    assert (out / "label.labels.txt").read_text().split() == NAMES

    # Byte-identical shards on a rerun, in another running mode and with the inputs given
    # in the other order (the plan sorts every shard by key).
    again = run_preprocess("image_zip", two_zips[::-1], str(tmp_path / "again"), 6,
                           split_by="top_folder", num_shards=1,
                           pipeline_args=["--direct_running_mode=multi_threading",
                                          "--direct_num_workers=2"])
    assert again["splits"] == info["splits"]
    for v in info["splits"].values():
        for shard in v["shards"]:
            assert (out / shard["file"]).read_bytes() == \
                (tmp_path / "again" / shard["file"]).read_bytes()


def test_tfds_pipeline_data_and_fid_read_the_test_split(tmp_path, two_zips):
    import tensorflow_datasets as tfds

    from artifacts.tfrecord_dataset import make_image_dataset
    from beam_jobs.fid.sources import TFRecordSource

    out = tmp_path / "out"
    run_preprocess("image_zip", two_zips, str(out), 6, split_by="top_folder",
                   pipeline_args=IN_MEMORY)
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.splits["test"].num_examples == 3
    by_tfds = {ex["key"].decode(): (ex["image"], int(ex["label"])) for ex in tfds.as_numpy(
        builder.as_dataset(split="test", shuffle_files=False))}
    assert set(by_tfds) == set(TEST)
    for key, (img, label) in by_tfds.items():
        assert label == NAMES.index(key.split("/")[1])
        assert np.array_equal(img, expected_pixels(TEST[key]))
    images, labels = next(iter(make_image_dataset(
        str(out), "test", 3, shuffle=False, repeat=False, with_labels=True)))
    assert images.shape == (3, 6, 6, 3) and sorted(labels.numpy().tolist()) == [1, 2, 2]
    source = TFRecordSource(str(out), "test")
    assert source.size_hint() == 3 and len(source.files()) == 1


def test_folders_label_ids_consistent_when_an_input_has_one_class(tmp_path):
    # The test folder holds a single class folder: alone it would be unlabelled (-1).
    a = make_folder(tmp_path / "a", TRAIN)
    b = make_folder(tmp_path / "b", {"test/dog/0.png": 8, "validation/cat/0.png": 10})
    info = run_preprocess("image_folder", [a, b], str(tmp_path / "out"), 6,
                          split_by="top_folder", pipeline_args=IN_MEMORY)
    assert {s: v["count"] for s, v in info["splits"].items()} == {
        "train": 6, "validation": 1, "test": 1}
    assert list(info["splits"]) == ["train", "validation", "test"]
    assert info["label_names"] == NAMES
    for split in info["splits"]:
        for key, (_, label) in read_split(tmp_path / "out", info, split).items():
            assert label == NAMES.index(key.split("/")[1]), key


def test_several_inputs_with_the_hash_split(tmp_path, two_zips):
    info = run_preprocess("image_zip", two_zips, str(tmp_path / "out"), 6,
                          validation_fraction=0.5, pipeline_args=IN_MEMORY)
    keys = sorted(TRAIN) + sorted(TEST)
    splits = dict(zip(keys, assign_splits(keys, "hash", 0.5)))
    assert info["transform"]["split_by"] == "hash"
    assert info["transform"]["validation_fraction"] == 0.5
    for split in info["splits"]:
        assert {k for k in read_split(tmp_path / "out", info, split)} == {
            k for k, s in splits.items() if s == split}


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_duplicate_key_across_inputs_is_a_one_line_error(tmp_path, two_zips):
    other = make_zip(tmp_path / "other.zip", {"test/cat/0.png": 11, "test/cat/9.png": 12})
    with pytest.raises(ValueError) as e:
        run_preprocess("image_zip", [two_zips[1], other], str(tmp_path / "out"), 6,
                       split_by="top_folder")
    message = one_line_error(e)
    assert "'test/cat/0.png'" in message and two_zips[1] in message and other in message
    with pytest.raises(ValueError, match="given twice"):
        plan_source("image_zip", [two_zips[0], two_zips[0]])
    assert not (tmp_path / "out").exists()


def test_unknown_top_folder_and_flag_misuse_are_errors(tmp_path, two_zips):
    stray = make_zip(tmp_path / "stray.zip", {"train/cat/5.png": 1, "extra/cat/0.png": 2,
                                              "extra/dog/0.png": 3})
    with pytest.raises(ValueError) as e:
        run_preprocess("image_zip", stray, str(tmp_path / "o"), 6, split_by="top_folder")
    assert "2 of 3 keys" in one_line_error(e) and "'extra/cat/0.png'" in str(e.value)
    root = make_zip(tmp_path / "root.zip", {"a.png": 1, "b.png": 2})
    with pytest.raises(ValueError, match=r"'a.png' \(no folder\)"):
        run_preprocess("image_zip", root, str(tmp_path / "o"), 6, split_by="top_folder")
    with pytest.raises(ValueError, match="validation_fraction applies only to --split_by=hash"):
        run_preprocess("image_zip", two_zips, str(tmp_path / "o"), 6, split_by="top_folder",
                       validation_fraction=0.1)
    with pytest.raises(ValueError, match="split_by='folder'"):
        run_preprocess("image_zip", two_zips, str(tmp_path / "o"), 6, split_by="folder")
    with pytest.raises(ValueError) as e:
        plan_source("mnist_idx", [str(tmp_path / "a"), str(tmp_path / "b")])
    assert "reads one input" in one_line_error(e) and "--source=image_zip" in str(e.value)
    assert not (tmp_path / "o").exists()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "beam_jobs.preprocess", *args],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_comma_separated_inputs_and_split_by(tmp_path, two_zips):
    out = tmp_path / "out"
    ok = run_cli("--source=image_zip", f"--input={','.join(two_zips)}", "--split_by=top_folder",
                 f"--output_dir={out}", "--image_size=6")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "train 6, test 3" in ok.stdout
    info = json.loads((out / "dataset.json").read_text())
    assert [i["input"] for i in info["source"]["inputs"]] == two_zips


def test_cli_flags_parse(capsys):
    args, rest = parse_args(["--source=image_zip", "--input=a.zip, b.zip", "--output_dir=o",
                             "--image_size=8", "--split_by=top_folder", "--runner=X"])
    assert args.input == ["a.zip", "b.zip"] and args.split_by == "top_folder"
    assert args.validation_fraction is None and rest == ["--runner=X"]
    args, _ = parse_args(["--source=image_zip", "--input=a.zip", "--output_dir=o",
                          "--image_size=8"])
    assert args.input == "a.zip" and args.split_by == "hash"
    for bad, says in ((["--input=a.zip", "--split_by=top_folder", "--validation_fraction=0"],
                       "applies only to --split_by=hash"),
                      (["--input=a.zip,,b.zip"], "an empty entry"),
                      (["--input=a.zip", "--split_by=name"], "invalid choice")):
        with pytest.raises(SystemExit) as e:
            parse_args(["--source=image_zip", "--output_dir=o", "--image_size=8", *bad])
        assert e.value.code == 2 and says in capsys.readouterr().err
