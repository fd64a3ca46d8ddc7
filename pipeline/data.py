"""Checks of the data sets that ``beam_jobs.preprocess`` writes, before and while training
or evaluation reads them (the reading itself: :mod:`artifacts.tfrecord_dataset`).

A data set directory holds ``<split>-NNNNN-of-MMMMM.tfrecord`` shards and ``dataset.json``
(format: :mod:`artifacts.dataset_format`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator

import tensorflow as tf

from artifacts import dataset_verify

# DatasetInfo and read_dataset_info are the format's (artifacts.dataset_format); imported
# here because pipeline.train and pipeline.trainer use them as data_lib.<name>.
from artifacts.dataset_format import DataSetDamaged, DatasetInfo, read_dataset_info

log = logging.getLogger(__name__)


def read_checked_dataset_info(data_dir: str | os.PathLike, full: bool = False) -> DatasetInfo:
    """:func:`read_dataset_info`, then every shard checked against dataset.json
    (:func:`artifacts.dataset_verify.verify_data_set`: counts, whole frames, the first
    image's shape; with ``full`` every record's CRC and the shards' sha256). Raises
    :class:`DataSetDamaged` naming the shard."""
    info = read_dataset_info(data_dir)
    start = time.monotonic()
    done = dataset_verify.verify_data_set(info, full=full)
    log.info("data set %s: %d shards, %d records, %.1f MB checked against dataset.json%s "
             "in %.1f s", info.data_dir, done["shards"], done["records"], done["bytes"] / 1e6,
             " (sha256 and record CRCs)" if full else "", time.monotonic() - start)
    return info


@contextlib.contextmanager
def damaged_data_errors(info: DatasetInfo) -> Iterator[None]:
    """Turns what TensorFlow raises on a damaged record (DataLossError: a corrupt or
    truncated TFRecord; InvalidArgumentError: an image that does not decode to
    ``image_shape``) into :class:`DataSetDamaged` naming the shard, found by checking every
    record's CRC and each shard's first image (:func:`dataset_verify.locate_damage`). An
    InvalidArgumentError the data does not explain propagates unchanged."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
        found = dataset_verify.locate_damage(info)
        if found is None:
            if isinstance(err, tf.errors.DataLossError):
                raise DataSetDamaged(f"a record of data set {info.data_dir!r} could not be read "
                                     f"({err.message.splitlines()[0][:200]}); re-run "
                                     "beam_jobs.preprocess") from err
            raise
        raise DataSetDamaged(found) from err
