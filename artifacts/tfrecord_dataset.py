"""tf.data batches of the TFRecord data sets that ``beam_jobs.preprocess`` writes.

A data set directory holds ``<split>-NNNNN-of-MMMMM.tfrecord`` shards and ``dataset.json``
(format: :mod:`artifacts.dataset_format`). :func:`make_image_dataset` yields uint8 image
batches [B, H, W, C] (optionally with int64 labels [B]), deterministically for a seed. Read by
training and evaluation (:mod:`pipeline`) and by ``beam_jobs.fid.train_classifier``.
"""
from __future__ import annotations

import os
import random

import tensorflow as tf

from artifacts import dataset_format
from artifacts.dataset_format import DatasetInfo, read_dataset_info

# Per-epoch shuffle seeds: epoch e of a run with seed s shuffles its shard order with op
# seed 2 (s * _EPOCH_STRIDE + e) and its records with that + 1 (graph seed s + 1).
_EPOCH_STRIDE = 1 << 20


def _interleaved_records(file_names: tf.data.Dataset, num_files: int) -> tf.data.Dataset:
    """The serialized records of the TFRecord files named by ``file_names``, read with a
    deterministic parallel interleave of up to 16 files."""
    return file_names.interleave(tf.data.TFRecordDataset, cycle_length=min(num_files, 16),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def shuffled_epoch_records(files: list[str], epoch: tf.Tensor | int, seed: int,
                           buffer_size: int) -> tf.data.Dataset:
    """The serialized records of one epoch: shard order and records shuffled with seeds of
    (``seed``, ``epoch``) alone, so any epoch is produced without the ones before it, and
    independently of TensorFlow's global seed (the graph-level half of the shuffles' seeds
    is fixed by ``seed`` inside the traced epoch function)."""
    def epoch_records(e):
        tf.random.set_seed(seed % (2 ** 31 - 2) + 1)  # in this trace: the graph's seed
        op_seed = 2 * (tf.constant(seed, tf.int64) * _EPOCH_STRIDE + e)
        ds = _interleaved_records(tf.data.Dataset.from_tensor_slices(files).shuffle(
            len(files), seed=op_seed, reshuffle_each_iteration=False), len(files))
        return ds.shuffle(buffer_size, seed=op_seed + 1, reshuffle_each_iteration=False)

    epochs = tf.data.Dataset.from_tensors(tf.cast(epoch, tf.int64))
    return epochs.flat_map(epoch_records)


def make_image_dataset(data: str | os.PathLike | DatasetInfo, split: str, batch_size: int, *,
                       shuffle: bool = True, repeat: bool = True, seed: int | None = 0,
                       drop_remainder: bool = True, random_flip: bool = False,
                       with_labels: bool = False, shuffle_buffer: int = 10000,
                       start_batch: int = 0) -> tf.data.Dataset:
    """Batches of one split: uint8 images [B, H, W, C] or (images, int64 labels [B]).

    Shards are read with a parallel interleave and PNGs decoded in parallel; the output
    order is deterministic for a given ``seed``: with ``shuffle``, epoch e is shuffled by
    :func:`shuffled_epoch_records` with seeds of (seed, e) only, and ``random_flip``
    mirrors left-right with a stateless op keyed on the seed and the record's position in
    the stream. ``seed=None`` gives a different order on every run.

    ``start_batch`` = k yields the stream from its k-th batch on, exactly the batches
    k, k+1, ... of ``start_batch=0`` (with ``repeat`` and ``drop_remainder``): the start
    epoch is computed, not replayed, and only the serialized records before the start
    position inside that epoch are skipped (no decoding), so a resume at any step costs at
    most one epoch of record reads.
    """
    info = data if isinstance(data, DatasetInfo) else read_dataset_info(data)
    info.check_split(split)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
    count = info.split_counts[split]
    if drop_remainder and batch_size > count:
        raise ValueError(f"batch_size={batch_size} exceeds the {count} records of split "
                         f"{split!r} in {info.data_dir!r}; with drop_remainder=True no batch "
                         "would ever be produced")
    if start_batch and not (repeat and drop_remainder):
        raise ValueError("start_batch needs repeat=True and drop_remainder=True (a position "
                         "in an endless stream of full batches)")
    h, w, c = info.image_shape
    files = list(info.split_files[split])
    autotune = tf.data.AUTOTUNE
    if seed is None:
        seed = random.SystemRandom().randrange(2 ** 31)
    start_epoch, offset = divmod(int(start_batch) * batch_size, count)

    if shuffle:
        buffer = min(shuffle_buffer, count)
        epochs = (tf.data.Dataset.range(start_epoch, 2 ** 62) if repeat
                  else tf.data.Dataset.range(1))
        ds = epochs.flat_map(lambda e: shuffled_epoch_records(files, e, seed, buffer))
    else:
        ds = _interleaved_records(tf.data.Dataset.from_tensor_slices(files), len(files))
        if repeat:
            ds = ds.repeat()  # every epoch is the same: only the offset matters
    ds = ds.skip(offset)
    spec = dataset_format.feature_spec()

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_png(ex[dataset_format.IMAGE_KEY], channels=c, dtype=tf.uint8)
        image = tf.ensure_shape(image, (h, w, c))
        return image, ex[dataset_format.LABEL_KEY]

    ds = ds.map(parse, num_parallel_calls=autotune, deterministic=True)
    if random_flip:
        flip_seed = tf.constant([int(seed), 0x5EED], tf.int64)
        ds = ds.enumerate(start=int(start_batch) * batch_size).map(
            lambda i, x: (tf.image.stateless_random_flip_left_right(
                x[0], tf.stack([flip_seed[0], flip_seed[1] + i])), x[1]),
            num_parallel_calls=autotune, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=autotune,
                  deterministic=True)
    if not with_labels:
        ds = ds.map(lambda images, labels: images, num_parallel_calls=autotune)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options)
    return ds.prefetch(autotune)
