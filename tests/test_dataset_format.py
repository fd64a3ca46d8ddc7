"""artifacts.dataset_format is the one definition of the data set format: dataset.json
written and read back as a DatasetInfo, clear errors for a malformed file from every
reader (pipeline.data, beam_jobs.fid), and the one rule of which raw files are images."""
from __future__ import annotations

import json
import os

import pytest

from artifacts import dataset_format
from artifacts.dataset_format import DatasetInfo, read_dataset_info, write_dataset_json
from artifacts.tfrecord_dataset import make_image_dataset
from beam_jobs import fid
from pipeline import data as data_lib


def _content(shards: dict[str, list[tuple[str, int]]]) -> dict:
    return {
        "format_version": dataset_format.FORMAT_VERSION,
        "image_shape": [8, 6, 1],
        "splits": {split: {"count": sum(n for _, n in entries),
                           "shards": [{"file": f, "count": n, "sha256": "0" * 64}
                                      for f, n in entries]}
                   for split, entries in shards.items()},
        "label_names": ["a", "b"],
        "source": {"kind": "image_folder", "input": "/nowhere"},
    }


def test_dataset_info_round_trip(tmp_path):
    names = {"train": [(dataset_format.shard_name("train", i, 2), 3 + i) for i in range(2)],
             "validation": [(dataset_format.shard_name("validation", 0, 1), 0)]}
    for entries in names.values():
        for f, _ in entries:
            (tmp_path / f).write_bytes(b"")
    content = _content(names)
    path = write_dataset_json(str(tmp_path), content)
    assert path == str(tmp_path / dataset_format.DATASET_JSON)
    text = (tmp_path / "dataset.json").read_text()
    assert text == json.dumps(content, indent=2) + "\n"  # the layout preprocess always wrote

    info = read_dataset_info(tmp_path)
    assert info == DatasetInfo(
        data_dir=str(tmp_path), image_shape=(8, 6, 1),
        split_counts={"train": 7, "validation": 0},
        split_files={"train": [str(tmp_path / "train-00000-of-00002.tfrecord"),
                               str(tmp_path / "train-00001-of-00002.tfrecord")],
                     "validation": [str(tmp_path / "validation-00000-of-00001.tfrecord")]},
        label_names=["a", "b"], raw=content)
    # pipeline.data and beam_jobs.fid read the same DatasetInfo.
    assert data_lib.DatasetInfo is DatasetInfo and data_lib.read_dataset_info(tmp_path) == info
    source = fid.TFRecordSource(str(tmp_path), "train")
    assert source.files() == info.split_files["train"] and source.size_hint() == 7
    with pytest.raises(ValueError, match=r"split 'test' not in .*\['train', 'validation'\]"):
        info.check_split("test")


MALFORMED = {
    "not_json": ("{\"image_shape\": [8, 8, 3],", "is not valid JSON"),
    "no_shape": (json.dumps({"splits": {}}), r"lacks a valid 'image_shape' \[H, W, C\]"),
    "bad_shape": (json.dumps({"image_shape": [8, 8], "splits": {}}), "lacks a valid"),
    "splits_list": (json.dumps({"image_shape": [8, 8, 3], "splits": ["train"]}),
                    "'splits' mapping"),
    "split_not_a_mapping": (json.dumps({"image_shape": [8, 8, 3], "splits": {"train": 5}}),
                            "split 'train' is not a mapping"),
    "shard_without_file": (json.dumps({"image_shape": [8, 8, 3], "splits": {"train": {
        "count": 1, "shards": [{"name": "train-00000-of-00001.tfrecord"}]}}}),
                           r"'shards' list of \{\"file\": name"),
    "count_not_int": (json.dumps({"image_shape": [8, 8, 3], "splits": {"train": {
        "count": "many", "shards": []}}}), "an int 'count'"),
}


@pytest.mark.parametrize("reader", ["dataset_format", "pipeline.data", "beam_jobs.fid"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_dataset_json_is_a_clear_error(tmp_path, case, reader):
    text, expected = MALFORMED[case]
    (tmp_path / "dataset.json").write_text(text)
    read = {"dataset_format": lambda: read_dataset_info(str(tmp_path)),
            "pipeline.data": lambda: make_image_dataset(str(tmp_path), "train", 1),
            "beam_jobs.fid": lambda: fid.TFRecordSource(str(tmp_path), "train").files()}[reader]
    with pytest.raises(ValueError, match=expected) as err:
        read()
    assert str(tmp_path / "dataset.json") in str(err.value)  # names the file


def test_writer_refuses_what_readers_would_refuse(tmp_path):
    with pytest.raises(ValueError, match="lacks a valid 'image_shape'"):
        write_dataset_json(str(tmp_path), {"image_shape": [0, 8, 3], "splits": {}})
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("name, is_image", [
    ("a.png", True), ("b/c.JPG", True), ("d.jpeg", True), ("e.webp", True), ("f.gif", True),
    ("g.bmp", True), ("h.tif", True), ("i/j.TIFF", True),
    ("._a.png", False), ("k/.hidden.jpg", False), ("__MACOSX/k/l.png", False),
    ("m/__MACOSX/n.jpg", False), ("notes.txt", False), ("png", False), ("o.png.txt", False),
])
def test_is_image_file(name, is_image):
    assert dataset_format.is_image_file(name) is is_image
