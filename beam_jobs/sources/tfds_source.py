"""The ``tfds`` raw source: an already prepared local TensorFlow Datasets data set.

``--source=tfds --tfds_name=cifar10 --tfds_data_dir=~/tensorflow_datasets`` (the data set
must have been prepared there before, e.g. by ``tfds build``; nothing is downloaded:
:func:`resolve_tfds_dir` only looks), or ``--source=tfds --input=<prepared directory>``
(the folder holding ``dataset_info.json``, e.g. ``<data_dir>/cifar10/3.0.2``, or the output
of ``beam_jobs.preprocess`` itself, which carries TFDS metadata).

Planning reads only the TFDS metadata: every split's shard file names and lengths give
the keys ``<shard file>__<row>`` (TFDS's own ``tfds_id``) without touching the data.
Workers index a shard's TFRecord frames once (headers only, seeking past the payloads)
and then read records by random access; each record is parsed with the data set's
``FeaturesDict.deserialize_example_np`` with the image left encoded
(``tfds.decode.SkipDecoding``), so JPEG/PNG bytes go through the same transform as image
files do. ``uint8`` Tensor images ([H, W] or [H, W, 1|3]) are taken as arrays. Labels come
from the ``--tfds_label_key`` feature (ClassLabel names become ``label_names``); -1 without
one.
"""
from __future__ import annotations

from typing import Iterator, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from artifacts.dataset_format import (
    TFRECORD_FOOTER_BYTES,
    TFRECORD_HEADER_BYTES,
    UNKNOWN_LABEL,
    read_tfrecord_data,
    read_tfrecord_length,
)
from beam_jobs.sources.image_transform import BadImage
from beam_jobs.sources.raw_source import (
    DEFAULT_MAX_MEMBER_BYTES,
    RawSource,
    Record,
    SourcePlan,
    too_large,
)

DEFAULT_IMAGE_KEY = "image"
DEFAULT_LABEL_KEY = "label"


def resolve_tfds_dir(name: str, data_dir: str | None = None) -> str:
    """The directory of the prepared TFDS data set ``name`` (``'cifar10'``,
    ``'cifar10:3.0.2'``, ``'lsun/church_outdoor'``) under ``data_dir`` (default: TFDS's
    own, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Never downloads:
    FileNotFoundError naming the data set and the directory when it is not prepared
    there."""
    import os

    import tensorflow_datasets as tfds

    if data_dir and "://" not in data_dir:
        data_dir = os.path.expanduser(data_dir)
    where = repr(data_dir) if data_dir else "TFDS's default data_dir"
    hint = (f"; expected a TFDS data set already prepared under {where} (e.g. by "
            f"`tfds build {name.split(':')[0]} --data_dir=...` on a machine with network)")
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # DatasetNotFoundError, bad version/config strings, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"TFDS data set {name!r} not found ({first}){hint}") from None
    if not builder.is_prepared():
        raise FileNotFoundError(f"TFDS data set {name!r} is not prepared in "
                                f"{str(builder.data_dir)!r}{hint}")
    return str(builder.data_dir)


def _builder_from_directory(path: str):
    import tensorflow_datasets as tfds

    if not FileSystems.exists(FileSystems.join(path, "dataset_info.json")):
        raise FileNotFoundError(f"input {path!r} holds no dataset_info.json; expected "
                                f"{TfdsSource.what}")
    return tfds.builder_from_directory(path)


def _image_mode(feature, key: str, path: str) -> str:
    """'encoded' for a tfds Image feature, 'array' for a uint8 Tensor image."""
    import numpy as np
    import tensorflow_datasets as tfds

    if isinstance(feature, tfds.features.Image):
        return "encoded"
    if (isinstance(feature, tfds.features.Tensor) and feature.np_dtype == np.uint8
            and len(feature.shape) in (2, 3)):
        return "array"
    raise ValueError(f"TFDS data set {path!r}: feature {key!r} is {type(feature).__name__}; "
                     "expected a tfds.features.Image or a uint8 Tensor [H, W(, C)] "
                     "(choose it with --tfds_image_key)")


def _label_names(feature, key: str, path: str) -> list[str] | None:
    import tensorflow_datasets as tfds

    if isinstance(feature, tfds.features.ClassLabel):
        return list(feature.names)
    dtype = getattr(feature, "np_dtype", None)
    if getattr(feature, "shape", None) == () and dtype is not None and dtype.kind in "iu":
        return None
    raise ValueError(f"TFDS data set {path!r}: feature {key!r} is {type(feature).__name__}; "
                     "expected a ClassLabel or an integer scalar (choose it with "
                     "--tfds_label_key, or pass --tfds_label_key='' for no labels)")


class TfdsSource(RawSource):
    """``tfds``: the records of one or more splits of a prepared TFDS data set (TFRecord
    file format), keyed by ``<shard file>__<row>``."""

    kind = "tfds"
    what = ("a prepared TFDS data set directory (holding dataset_info.json and TFRecord "
            "shards, e.g. <data_dir>/cifar10/3.0.2), or --tfds_name with --tfds_data_dir")
    OPTIONS = ("name", "data_dir", "split", "image_key", "label_key")

    def __init__(self, input_path: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        super().__init__(input_path, max_member_bytes)
        self._features = None
        self._offsets: dict[str, list[int]] = {}
        self._files: dict[str, object] = {}

    @classmethod
    def plan(cls, path: str | None, *, name: str | None = None, data_dir: str | None = None,
             split: str = "train", image_key: str = DEFAULT_IMAGE_KEY,
             label_key: str | None = None) -> SourcePlan:
        """``path`` (a prepared directory) or ``name`` (+ ``data_dir``); ``split``: TFDS
        split names joined by '+' (e.g. 'train+test'); ``label_key``: None = 'label' if the
        data set has it, '' = no labels."""
        if bool(path) == bool(name):
            raise ValueError("--source=tfds: give either --input=<prepared TFDS directory> "
                             "or --tfds_name (with --tfds_data_dir), not both or neither")
        if name:
            path = resolve_tfds_dir(name, data_dir)
        elif "://" not in path:
            import os

            if not os.path.isdir(path):
                raise FileNotFoundError(f"input {path!r} does not exist; expected {cls.what}")
            path = os.path.abspath(path)
        builder = _builder_from_directory(path)
        info = builder.info
        file_format = str(getattr(info.file_format, "value", info.file_format))
        if file_format != "tfrecord":
            raise ValueError(f"TFDS data set {path!r} is stored as {file_format}; expected "
                             "the tfrecord file format")
        features = info.features
        if image_key not in features:
            raise ValueError(f"TFDS data set {path!r} has no feature {image_key!r} (features: "
                             f"{', '.join(features.keys())}); choose one with --tfds_image_key")
        mode = _image_mode(features[image_key], image_key, path)
        if label_key is None:
            label_key = DEFAULT_LABEL_KEY if DEFAULT_LABEL_KEY in features else ""
        elif label_key and label_key not in features:
            raise ValueError(f"TFDS data set {path!r} has no feature {label_key!r} (features: "
                             f"{', '.join(features.keys())}); pass --tfds_label_key='' for "
                             "no labels")
        names = _label_names(features[label_key], label_key, path) if label_key else None
        splits = [s.strip() for s in split.split("+") if s.strip()]
        missing = [s for s in splits if s not in info.splits]
        if not splits or missing:
            raise ValueError(f"TFDS data set {path!r} has no split {missing or split!r}; "
                             f"available: {', '.join(sorted(info.splits))}")
        keys, locators = [], []
        for s in splits:
            split_info = info.splits[s]
            for fname, length in zip(split_info.filenames, split_info.shard_lengths):
                for row in range(int(length)):
                    keys.append(f"{fname}__{row}")
                    locators.append((fname, row, image_key, label_key, mode))
        if not keys:
            raise ValueError(f"TFDS data set {path!r} split(s) {split!r} hold no records")
        return SourcePlan(cls.kind, path, keys, locators, names,
                          {"tfds_name": info.name, "tfds_version": str(info.version),
                           "tfds_config": getattr(builder, "builder_config", None) and
                           builder.builder_config.name,
                           "tfds_splits": splits, "image_key": image_key,
                           "label_key": label_key or None})

    # -- worker side --------------------------------------------------------------------

    def _open(self, fname: str):
        if fname not in self._files:
            self._files[fname] = FileSystems.open(FileSystems.join(self.input_path, fname),
                                                  compression_type=CompressionTypes.UNCOMPRESSED)
        return self._files[fname]

    def _index(self, fname: str) -> list[int]:
        """Byte offsets of every TFRecord frame of a shard (reads 12-byte headers only)."""
        if fname not in self._offsets:
            f = self._open(fname)
            f.seek(0)
            offsets, pos = [], 0
            while True:
                try:
                    length = read_tfrecord_length(f)
                except ValueError as e:
                    raise ValueError(f"TFDS shard {fname!r} of {self.input_path!r}: {e}") from None
                if length is None:
                    break
                offsets.append(pos)
                pos += TFRECORD_HEADER_BYTES + length + TFRECORD_FOOTER_BYTES
                f.seek(pos)
            self._offsets[fname] = offsets
        return self._offsets[fname]

    def _record(self, fname: str, row: int) -> bytes | BadImage:
        offsets = self._index(fname)
        if row >= len(offsets):
            raise RuntimeError(f"TFDS shard {fname!r} of {self.input_path!r} holds "
                               f"{len(offsets)} records, its metadata more (row {row}); the "
                               "data set changed or is incomplete")
        f = self._open(fname)
        f.seek(offsets[row])
        length = read_tfrecord_length(f)
        if length > self.max_member_bytes:
            return too_large(length, self.max_member_bytes, "TFDS record")
        try:
            return read_tfrecord_data(f, length)
        except ValueError:
            return BadImage(f"corrupt TFRecord frame in {fname} (data CRC)")

    def read(self, locators: Sequence) -> Iterator[Record]:
        import tensorflow_datasets as tfds

        if self._features is None:
            self._features = _builder_from_directory(self.input_path).info.features
        for fname, row, image_key, label_key, mode in locators:
            key = f"{fname}__{row}"
            data = self._record(fname, row)
            if isinstance(data, BadImage):
                yield key, UNKNOWN_LABEL, data
                continue
            decoders = {image_key: tfds.decode.SkipDecoding()} if mode == "encoded" else None
            try:
                ex = self._features.deserialize_example_np(data, decoders=decoders)
            except Exception as e:  # noqa: BLE001 - a record TFDS cannot parse is bad
                yield key, UNKNOWN_LABEL, BadImage(f"unparsable TFDS record ({type(e).__name__}: "
                                                   f"{e})")
                continue
            label = int(ex[label_key]) if label_key else UNKNOWN_LABEL
            image = ex[image_key]
            yield key, label, bytes(image) if mode == "encoded" else image

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._offsets.clear()
