"""tf.data input from the data sets that ``beam_jobs.preprocess`` writes.

A data set directory holds ``<split>-NNNNN-of-MMMMM.tfrecord`` shards and ``dataset.json``
(format: :mod:`artifacts.dataset_format`). :func:`make_image_dataset` yields uint8 image
batches [B, H, W, C] (optionally with int64 labels [B]), deterministically for a seed.
"""
from __future__ import annotations

import os

import tensorflow as tf

from artifacts import dataset_format

# DatasetInfo and read_dataset_info are the format's (artifacts.dataset_format); imported
# here because pipeline.train and pipeline.trainer use them as data_lib.<name>.
from artifacts.dataset_format import DatasetInfo, read_dataset_info


def make_image_dataset(data: str | os.PathLike | DatasetInfo, split: str, batch_size: int, *,
                       shuffle: bool = True, repeat: bool = True, seed: int | None = 0,
                       drop_remainder: bool = True, random_flip: bool = False,
                       with_labels: bool = False, shuffle_buffer: int = 10000) -> tf.data.Dataset:
    """Batches of one split: uint8 images [B, H, W, C] or (images, int64 labels [B]).

    Shards are read with a parallel interleave and PNGs decoded in parallel; the output
    order is deterministic for a given ``seed`` (shard order and record shuffle are
    seeded, ``random_flip`` mirrors left-right with a stateless op keyed on the seed and
    the record's position). ``seed=None`` gives a different order on every run.
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
    h, w, c = info.image_shape
    files = [f for f in info.split_files[split]]
    autotune = tf.data.AUTOTUNE

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                       num_parallel_calls=autotune, deterministic=True)
    if shuffle:
        ds = ds.shuffle(min(shuffle_buffer, count), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    spec = dataset_format.feature_spec()

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_png(ex[dataset_format.IMAGE_KEY], channels=c, dtype=tf.uint8)
        image = tf.ensure_shape(image, (h, w, c))
        return image, ex[dataset_format.LABEL_KEY]

    ds = ds.map(parse, num_parallel_calls=autotune, deterministic=True)
    if random_flip:
        flip_seed = tf.constant([0 if seed is None else int(seed), 0x5EED], tf.int64)
        if seed is None:
            flip_seed = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int64)
        ds = ds.enumerate().map(
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
