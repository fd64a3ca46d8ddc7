"""TFDS metadata for a preprocessed data set, so TFDS reads its shards as they are.

:func:`write_tfds_metadata` describes the shards of ``dataset.json`` with
``tfds.folder_dataset.write_metadata``: the filename template
:data:`artifacts.dataset_format.TFDS_FILENAME_TEMPLATE` (the existing shard names) and
:func:`tfds_features`, whose feature names and serialized types are those of
:func:`artifacts.dataset_format.feature_spec` (``image`` PNG bytes, ``label`` int64,
``key`` bytes). Afterwards ``tfds.builder_from_directory(data_dir).as_dataset(split=...)``
yields the records of ``artifacts.tfrecord_dataset.make_image_dataset``: ``image`` uint8
[H, W, C], ``label`` int64 (-1 where unknown), ``key`` string; ``as_supervised=True`` gives
(image, label) pairs when label names are known.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping, Sequence

from apache_beam.io.filesystems import FileSystems

from artifacts import dataset_format

TFDS_VERSION = "1.0.0"


def tfds_features(image_shape: Sequence[int], label_names: Sequence[str] | None):
    """The ``tfds.features.FeaturesDict`` of a record: ``image`` (Image of ``image_shape``
    [H, W, C], PNG), ``label`` (ClassLabel of ``label_names``, or int64 Scalar when they are
    unknown) and ``key`` (Text)."""
    import numpy as np
    import tensorflow_datasets as tfds

    label = (tfds.features.ClassLabel(names=list(label_names)) if label_names
             else tfds.features.Scalar(dtype=np.int64, doc="-1: unknown"))
    return tfds.features.FeaturesDict({
        dataset_format.IMAGE_KEY: tfds.features.Image(shape=tuple(int(d) for d in image_shape),
                                                      encoding_format="png"),
        dataset_format.LABEL_KEY: label,
        dataset_format.KEY_KEY: tfds.features.Text(doc="the record's id in its source"),
    })


def _check_spec_matches(features) -> None:
    """The TFDS features must parse the records exactly as feature_spec() does."""
    import tensorflow as tf

    ours = dataset_format.feature_spec()
    theirs = features.tf_example_spec
    for name, spec in ours.items():
        other = theirs.get(name)
        if (not isinstance(other, tf.io.FixedLenFeature) or other.dtype != spec.dtype
                or tuple(other.shape) != tuple(spec.shape)):
            raise RuntimeError(f"TFDS feature {name!r} parses as {other}, the records hold "
                               f"{spec}; the TFDS metadata would not read the shards")


def _total_bytes(data_dir: str, names: Sequence[str]) -> int:
    paths = [FileSystems.join(data_dir, n) for n in names]
    return int(sum(m.size_in_bytes for r in FileSystems.match(paths) for m in r.metadata_list))


def write_tfds_metadata(data_dir: str, info: Mapping[str, Any]) -> list[str]:
    """Writes TFDS metadata for the data set described by ``info`` (dataset.json content)
    into ``data_dir`` (any Beam filesystem path); returns the file names written.

    ``tfds.folder_dataset.write_metadata`` runs on a local scratch directory holding
    empty files of the shard names (it reads only the names there, as the split sizes
    are given), then its output is copied next to the shards through Beam's FileSystems.
    """
    import tensorflow_datasets as tfds
    from etils import epath

    features = tfds_features(info["image_shape"], info.get("label_names"))
    _check_spec_matches(features)
    with tempfile.TemporaryDirectory(prefix="tfds-metadata-") as scratch:
        template = tfds.core.ShardedFileTemplate(
            data_dir=epath.Path(scratch), template=dataset_format.TFDS_FILENAME_TEMPLATE,
            filetype_suffix=dataset_format.TFDS_FILE_FORMAT)
        split_infos, placeholders = [], set()
        for split, entry in info["splits"].items():
            shards = entry["shards"]
            for index, shard in enumerate(shards):
                expected = dataset_format.shard_name(split, index, len(shards))
                if shard["file"] != expected:
                    raise ValueError(f"shard {shard['file']!r} of split {split!r} is not "
                                     f"named {expected!r}; TFDS could not find it")
                open(os.path.join(scratch, shard["file"]), "wb").close()
                placeholders.add(shard["file"])
            split_infos.append(tfds.core.SplitInfo(
                name=split, shard_lengths=[int(s["count"]) for s in shards],
                num_bytes=_total_bytes(data_dir, [s["file"] for s in shards]),
                filename_template=template.replace(split=split)))
        source = info.get("source", {})
        tfds.folder_dataset.write_metadata(
            data_dir=scratch, features=features, split_infos=split_infos,
            filename_template=template, version=TFDS_VERSION, check_data=False,
            description=(f"Written by beam_jobs.preprocess from {source.get('kind')} input "
                         f"{source.get('input')!r}; see dataset.json for the transform."),
            supervised_keys=((dataset_format.IMAGE_KEY, dataset_format.LABEL_KEY)
                             if info.get("label_names") else None))
        written = sorted(set(os.listdir(scratch)) - placeholders)
        for name in written:
            with open(os.path.join(scratch, name), "rb") as src, \
                    FileSystems.create(FileSystems.join(data_dir, name)) as dst:
                dst.write(src.read())
    return written
