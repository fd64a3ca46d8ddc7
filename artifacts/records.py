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


# --- TF-free writing helpers (beam workers need not import TensorFlow) -----------------

def _varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values use their 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


def _map_entry(name: str, feature: bytes) -> bytes:
    return _length_delimited(1, _length_delimited(1, name.encode("utf-8"))
                             + _length_delimited(2, feature))


def encode_example_fast(png_bytes: bytes, label: int, key: str | bytes) -> bytes:
    """Same record as :func:`encode_example`, serialized without importing TensorFlow.

    Writes the protobuf wire format of ``tf.train.Example`` directly, with the feature
    map entries always in the order image, label, key. Unlike ``encode_example`` (whose
    protobuf map order changes between Python processes with the hash seed) the bytes
    are a pure function of the arguments, which deterministic shards need. It parses to
    the same ``tf.train.Example`` (checked in tests/test_preprocess.py).
    """
    key_bytes = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    image_feature = _length_delimited(1, _length_delimited(1, bytes(png_bytes)))  # BytesList
    label_feature = _length_delimited(3, _length_delimited(1, _varint(int(label))))  # packed
    key_feature = _length_delimited(1, _length_delimited(1, key_bytes))
    features = (_map_entry(IMAGE_KEY, image_feature) + _map_entry(LABEL_KEY, label_feature)
                + _map_entry(KEY_KEY, key_feature))
    return _length_delimited(1, features)


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_tfrecord(record: bytes) -> bytes:
    """One TFRecord frame: uint64 length, masked CRC32C of it, data, masked CRC32C."""
    import struct

    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", _masked_crc32c(length)) + record
            + struct.pack("<I", _masked_crc32c(record)))


def iter_tfrecord(path: str):
    """Yields the records (bytes) of an uncompressed TFRecord file, checking CRCs."""
    import struct

    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) != 12:
                raise ValueError(f"{path!r}: truncated TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != _masked_crc32c(header[:8]):
                raise ValueError(f"{path!r}: corrupt TFRecord length CRC")
            data = f.read(length)
            footer = f.read(4)
            if len(data) != length or len(footer) != 4:
                raise ValueError(f"{path!r}: truncated TFRecord record")
            if struct.unpack("<I", footer)[0] != _masked_crc32c(data):
                raise ValueError(f"{path!r}: corrupt TFRecord data CRC")
            yield data
