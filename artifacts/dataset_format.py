"""The on-disk data set format: written by beam_jobs.preprocess, read by pipeline.data
and beam_jobs.fid, and defined only here.

A data set directory holds

* ``<split>-NNNNN-of-MMMMM.tfrecord`` shards (:func:`shard_name`; the splits that
  ``beam_jobs.preprocess`` writes are :data:`SPLIT_NAMES`: ``train``, ``validation``,
  ``test``; readers take any split by its name) of serialized
  ``tf.train.Example`` with features ``image`` (PNG bytes of a uint8 [H, W, C] image),
  ``label`` (int64, -1 where unknown) and ``key`` (bytes: the record's id in its source);
* ``dataset.json`` (:data:`DATASET_JSON`) describing it: ``image_shape`` [H, W, C] (px,
  px, channels), ``splits`` {split: {"count": records, "shards": [{"file": shard name,
  "count": records, "sha256": hex digest}, ...]}}, ``label_names`` (or null) and what
  the writer adds (``format_version``, ``source``, ``transform``, ``bad_records``, ...).
  :func:`read_dataset_info` reads and checks it as a :class:`DatasetInfo`;
  :func:`write_dataset_json` writes it;
* TFDS metadata (``dataset_info.json``, ``features.json`` and, for labelled data,
  ``label.labels.txt``; written by :mod:`beam_jobs.preprocess.tfds_metadata`) describing the same
  shards with the filename template :data:`TFDS_FILENAME_TEMPLATE` and the features
  ``image`` (``tfds.features.Image`` of ``image_shape``, PNG), ``label``
  (``ClassLabel`` when ``label_names`` are known, else an int64 ``Scalar``) and ``key``
  (``Text``), so ``tfds.builder_from_directory(data_dir)`` reads the records as they are.

Raw inputs are images when :func:`is_image_file` says so (:data:`IMAGE_EXTENSIONS`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, BinaryIO, Iterator, Mapping

IMAGE_KEY = "image"
LABEL_KEY = "label"
KEY_KEY = "key"
UNKNOWN_LABEL = -1
DATASET_JSON = "dataset.json"
FORMAT_VERSION = 1
SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")
# The TFDS ShardedFileTemplate of shard_name(): '{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}' with
# FILEFORMAT 'tfrecord' formats to 'train-00003-of-00008.tfrecord'.
TFDS_FILENAME_TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}"
TFDS_FILE_FORMAT = "tfrecord"
# The splits beam_jobs.preprocess writes, in dataset.json order (by a hash of the key:
# train and validation; by the key's top folder: any of the three).
SPLIT_NAMES = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp")


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``train-00003-of-00008.tfrecord`` for split 'train', shard 3 of 8."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def is_image_file(path: str) -> bool:
    """Whether a raw input file is an image by name: one of :data:`IMAGE_EXTENSIONS`
    (any case), not a dotfile (e.g. macOS ``._x.jpg``) and not under ``__MACOSX``.

    ``path`` is relative to the input's root (a folder-relative path or a zip member
    name), so the root's own location never matters.
    """
    base = os.path.basename(path)
    return (not base.startswith(".") and "__MACOSX" not in path
            and base.lower().endswith(IMAGE_EXTENSIONS))


# --- dataset.json -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What dataset.json says about a preprocessed data set.

    Attributes:
      data_dir: absolute path of the data set directory.
      image_shape: (H, W, C) of every image, px / channels.
      split_counts: records per split, e.g. {"train": 9000, "validation": 1000}.
      split_files: absolute shard paths per split, in shard order.
      label_names: class names (label i is label_names[i]) or None if unlabelled.
      raw: the whole dataset.json content.
    """

    data_dir: str
    image_shape: tuple[int, int, int]
    split_counts: dict[str, int]
    split_files: dict[str, list[str]]
    label_names: list[str] | None
    raw: dict

    def check_split(self, split: str) -> None:
        """Raises ValueError naming the available splits unless ``split`` is one."""
        if split not in self.split_counts:
            raise ValueError(f"split {split!r} not in data set {self.data_dir!r}; available "
                             f"splits: {sorted(self.split_counts)}")


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


def parse_dataset_json(raw: Any, path: str
                       ) -> tuple[tuple[int, int, int], dict[str, int], dict[str, list[str]]]:
    """(image_shape, split counts, shard file names per split) of dataset.json content;
    ValueError naming ``path`` and what was expected if it is malformed."""
    try:
        shape = tuple(int(d) for d in raw["image_shape"])
        splits = raw["splits"]
        if len(shape) != 3 or min(shape) < 1 or not isinstance(splits, dict):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path!r} lacks a valid 'image_shape' [H, W, C] and 'splits' "
                         "mapping; expected the dataset.json that beam_jobs.preprocess "
                         "writes") from None
    counts, names = {}, {}
    for split, entry in splits.items():
        try:
            shards = entry.get("shards", [])
            names[split] = [str(shard["file"]) for shard in shards]
            counts[split] = int(entry.get("count", 0))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ValueError(f"{path!r}: split {split!r} is not a mapping with an int 'count' "
                             "and a 'shards' list of {\"file\": name, ...} entries; expected "
                             "the dataset.json that beam_jobs.preprocess writes") from None
    return shape, counts, names


def read_dataset_info(data_dir: str | os.PathLike) -> DatasetInfo:
    """Reads and checks ``<data_dir>/dataset.json`` (shards must exist; >= 1 record)."""
    data_dir = os.path.abspath(os.fspath(data_dir))
    raw = read_dataset_json(data_dir)
    path = os.path.join(data_dir, DATASET_JSON)
    shape, counts, names = parse_dataset_json(raw, path)
    files = {}
    for split, shard_names in names.items():
        files[split] = [os.path.join(data_dir, name) for name in shard_names]
        for p in files[split]:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"shard {p!r} listed in {path!r} is missing; the data "
                                        "set is incomplete (re-run beam_jobs.preprocess)")
    if sum(counts.values()) == 0:
        raise ValueError(f"data set {data_dir!r} holds no records (splits: "
                         f"{sorted(names) or 'none'})")
    return DatasetInfo(data_dir=data_dir, image_shape=shape, split_counts=counts,
                       split_files=files, label_names=raw.get("label_names"), raw=raw)


def write_dataset_json(data_dir: str, content: Mapping[str, Any]) -> str:
    """Writes ``content`` as ``<data_dir>/dataset.json`` (2-space indent, trailing newline,
    keys in the given order) after checking it parses as :func:`read_dataset_info`
    expects; returns the file's path."""
    path = os.path.join(data_dir, DATASET_JSON)
    parse_dataset_json(content, path)
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
    return path


# --- tf.train.Example records -------------------------------------------------------------

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


def masked_crc32c(data: bytes) -> int:
    """The masked CRC32C of TFRecord framing (uint32)."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_tfrecord(record: bytes) -> bytes:
    """One TFRecord frame: uint64 length, masked CRC32C of it, data, masked CRC32C."""
    import struct

    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", masked_crc32c(length)) + record
            + struct.pack("<I", masked_crc32c(record)))


TFRECORD_HEADER_BYTES = 12  # uint64 length + masked CRC32C of it
TFRECORD_FOOTER_BYTES = 4  # masked CRC32C of the data


def read_tfrecord_length(f: BinaryIO) -> int | None:
    """The data length (bytes) of the TFRecord frame at ``f``'s position, after reading
    its 12-byte header and checking the header's CRC; None at the end of the file.
    ValueError ("truncated TFRecord header", "corrupt TFRecord length CRC") otherwise."""
    import struct

    header = f.read(TFRECORD_HEADER_BYTES)
    if not header:
        return None
    if len(header) != TFRECORD_HEADER_BYTES:
        raise ValueError("truncated TFRecord header")
    if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
        raise ValueError("corrupt TFRecord length CRC")
    return struct.unpack("<Q", header[:8])[0]


def read_tfrecord_data(f: BinaryIO, length: int) -> bytes:
    """The ``length`` data bytes of the frame whose header was just read
    (:func:`read_tfrecord_length`) and its 4-byte footer, the data's CRC checked.
    ValueError ("truncated TFRecord record", "corrupt TFRecord data CRC") otherwise."""
    import struct

    data = f.read(length)
    footer = f.read(TFRECORD_FOOTER_BYTES)
    if len(data) != length or len(footer) != TFRECORD_FOOTER_BYTES:
        raise ValueError("truncated TFRecord record")
    if struct.unpack("<I", footer)[0] != masked_crc32c(data):
        raise ValueError("corrupt TFRecord data CRC")
    return data


def iter_tfrecord(path: str) -> Iterator[bytes]:
    """Yields the records (bytes) of an uncompressed TFRecord file, checking CRCs."""
    with open(path, "rb") as f:
        while True:
            try:
                length = read_tfrecord_length(f)
                if length is None:
                    return
                data = read_tfrecord_data(f, length)
            except ValueError as e:
                raise ValueError(f"{path!r}: {e}") from None
            yield data


# --- errors of a damaged data set ------------------------------------------------------

class DataSetDamaged(ValueError):
    """A data set's files do not match its dataset.json: a truncated, corrupt, replaced
    or miscounted shard, or records of another image shape (a user error: the message
    names the shard and what was expected)."""
