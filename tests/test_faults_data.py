"""Fault injection (issue 26 item 6): a damaged data set is one `error:` line naming the
shard and what was expected, never a TensorFlow traceback or a silent acceptance.

The shards and dataset.json are the real Beam job's (the ``digits16`` data set), damaged
the way a disk, a copy or a hand edit damages them."""
from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

from artifacts import cli, dataset_format, dataset_verify
from pipeline import trainer
from tfp_models.hybrid import HybridConfig

from conftest import TINY, TINY_SHAPE, tiny_train_config

PROG = "python -m pipeline.train"


@pytest.fixture
def data(digits16, tmp_path) -> str:
    """A private copy of the digits16 data set."""
    target = str(tmp_path / "data")
    shutil.copytree(digits16, target)
    return target


def _train_shard(data_dir: str) -> str:
    info = dataset_format.read_dataset_info(data_dir)
    return next(p for p in info.split_files["train"] if os.path.getsize(p))


def _edit_json(data_dir: str, edit) -> None:
    path = os.path.join(data_dir, dataset_format.DATASET_JSON)
    raw = json.load(open(path))
    edit(raw)
    json.dump(raw, open(path, "w"))


def _flip_in_record(path: str, record: int) -> None:
    """Flips one byte in the middle of record ``record``'s data (its frame header stays
    valid, so only the record's CRC can tell)."""
    raw = bytearray(open(path, "rb").read())
    offset = 0
    for _ in range(record):
        (length,) = struct.unpack_from("<Q", raw, offset)
        offset += 12 + length + 4
    (length,) = struct.unpack_from("<Q", raw, offset)
    raw[offset + 12 + length // 2] ^= 0xFF
    open(path, "wb").write(bytes(raw))


def _train_error(capsys, data_dir: str, model_dir, tracking_uri, **overrides) -> str:
    """Runs the trainer under the CLI's error handling; returns its one error line (MLflow
    may log INFO lines of its own)."""
    model_cfg = HybridConfig(variant="vae_f", image_shape=TINY_SHAPE, **TINY)
    cfg = tiny_train_config(data_dir, model_dir, tracking_uri, **overrides)
    main = cli.user_errors(PROG)(lambda: trainer.train(model_cfg, cfg))
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"{PROG}: error: "), lines
    return lines[0]


def test_a_split_count_changed_tenfold_is_one_error(data, tmp_path, capsys, tracking_uri):
    """Before: accepted silently (the split was read as 10x its size)."""
    _edit_json(data, lambda raw: raw["splits"]["train"].update(
        count=raw["splits"]["train"]["count"] * 10))
    line = _train_error(capsys, data, tmp_path / "m", tracking_uri)
    assert "split 'train' says" in line and "its shards list" in line, line
    assert not (tmp_path / "m").exists()


def test_a_shard_count_that_does_not_match_its_records_is_one_error(data, tmp_path, capsys,
                                                                    tracking_uri):
    def edit(raw):
        shard = next(s for s in raw["splits"]["train"]["shards"] if s["count"])
        shard["count"] += 1
        raw["splits"]["train"]["count"] += 1

    _edit_json(data, edit)
    line = _train_error(capsys, data, tmp_path / "m", tracking_uri)
    assert "holds" in line and "dataset.json says" in line and "train-" in line, line


def test_a_truncated_shard_is_one_error_at_start(data, tmp_path, capsys, tracking_uri):
    """Before: a DataLossError traceback from inside training, MLflow run FAILED."""
    path = _train_shard(data)
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:len(raw) - 100])
    line = _train_error(capsys, data, tmp_path / "m", tracking_uri)
    assert f"shard {os.path.basename(path)} is truncated" in line, line
    assert not (tmp_path / "m").exists()


def test_an_image_shape_that_does_not_match_the_records_is_one_error(data, tmp_path, capsys,
                                                                     tracking_uri):
    """dataset.json says 28x28 but the records are 16x16. Before: InvalidArgumentError."""
    _edit_json(data, lambda raw: raw.update(image_shape=[28, 28, 1]))
    line = _train_error(capsys, data, tmp_path / "m", tracking_uri)
    assert "image_shape [28, 28, 1]" in line and "16x16x1" in line and "train-" in line, line


def test_verify_data_finds_a_flipped_byte_before_training(data, tmp_path, capsys,
                                                          tracking_uri):
    path = _train_shard(data)
    _flip_in_record(path, 7)
    assert dataset_verify.verify_data_set(dataset_format.read_dataset_info(data))  # cheap: ok
    line = _train_error(capsys, data, tmp_path / "m", tracking_uri, verify_data=True)
    assert f"shard {os.path.basename(path)} is corrupt: record 7" in line, line
    assert not (tmp_path / "m").exists()


def test_the_sha256_of_a_shard_is_checked_with_verify_data(data, tmp_path, capsys,
                                                           tracking_uri):
    """A shard replaced by another valid shard (same count, other records)."""
    info = dataset_format.read_dataset_info(data)
    path = _train_shard(data)
    records = list(dataset_format.iter_tfrecord(path))
    with open(path, "wb") as f:
        for record in reversed(records):
            f.write(dataset_format.frame_tfrecord(record))
    line = _train_error(capsys, data, tmp_path / "m", tracking_uri, verify_data=True)
    assert f"shard {os.path.basename(path)} of" in line and "sha256" in line, line
    assert dataset_verify.verify_data_set(info)["records"] == sum(info.split_counts.values())


@pytest.mark.slow
def test_a_corrupt_record_met_during_training_names_its_shard(data, tmp_path, capsys,
                                                              tracking_uri):
    """A flipped byte inside a record (headers intact: the start check passes) is met by
    the input pipeline: one line naming the shard and the record. Before: a DataLossError
    traceback and a FAILED MLflow run with nothing said about which file."""
    path = _train_shard(data)
    _flip_in_record(path, 3)
    line = _train_error(capsys, data, tmp_path / "m", tracking_uri, train_steps=30)
    assert f"shard {os.path.basename(path)} is corrupt: record 3" in line, line
