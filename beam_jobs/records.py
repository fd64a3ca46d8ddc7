"""The on-disk data set format shared by the writer (beam_jobs.preprocess) and the
readers (pipeline.data, beam_jobs.fid).

A data set directory holds

* ``<split>-NNNNN-of-MMMMM.tfrecord`` files of serialized ``tf.train.Example`` with
  features ``image`` (PNG bytes of a uint8 [H, W, C] image), ``label`` (int64, -1 where
  unknown) and ``key`` (bytes: the record's id in its source);
* ``dataset.json`` describing it (see :data:`DATASET_JSON`).
"""
from __future__ import annotations

import json
import os
import re

IMAGE_KEY = "image"
LABEL_KEY = "label"
KEY_KEY = "key"
UNKNOWN_LABEL = -1
DATASET_JSON = "dataset.json"
SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``train-00003-of-00008.tfrecord`` for split 'train', shard 3 of 8."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def encode_example(png_bytes: bytes, label: int, key: str | bytes) -> bytes:
    """Serializes one record as a ``tf.train.Example`` (bytes)."""
    import tensorflow as tf  # local: keep this module importable in light Beam workers

    key_bytes = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png_bytes])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        KEY_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[key_bytes])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec() -> dict:
    """The ``tf.io.parse_example`` spec of a record."""
    import tensorflow as tf

    return {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=UNKNOWN_LABEL),
        KEY_KEY: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    }


def read_dataset_json(data_dir: str) -> dict:
    """Loads ``<data_dir>/dataset.json`` with clear errors for a missing or bad file."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data directory {data_dir!r} does not exist; expected the output directory "
            "of `python -m beam_jobs.preprocess`")
    path = os.path.join(data_dir, DATASET_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path!r} not found: {data_dir!r} is not a preprocessed data set "
            "(run `python -m beam_jobs.preprocess` first)")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path!r} is not valid JSON: {e}") from e
