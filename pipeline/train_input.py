"""What a training run reads: the image shape, training batches with their per-step
noise, and the fixed validation batches of the bound logged during training.

Randomness: every noise tensor a step uses (dequantization u, posterior eps, prior z,
WGAN-GP mixing weights) is drawn here with stateless ops keyed on (seed, step), one row
per example, so a batch split across replicas sees the same noise as on one device and a
resumed run replays exactly the data and noise it would have seen (without re-reading the
steps before it: epochs are shuffled with seeds of (seed, epoch), see
:func:`artifacts.tfrecord_dataset.make_image_dataset`).
"""
from __future__ import annotations

import tensorflow as tf

from artifacts.tfrecord_dataset import make_image_dataset
from pipeline import data as data_lib
from pipeline.train_config import TrainConfig
from tfp_models import flows, metrics
from tfp_models.hybrid import HybridModel


def data_image_shape(info: data_lib.DatasetInfo, cfg: TrainConfig) -> tuple[int, int, int]:
    """(H, W, C) of the images the model trains on: the data set's, or
    ``cfg.resize_with_crop_or_pad`` square. The one place a run's image shape is set."""
    h, w, c = info.image_shape
    if cfg.resize_with_crop_or_pad:
        h = w = cfg.resize_with_crop_or_pad
    return (h, w, c)


def add_step_noise(batch: dict, step: tf.Tensor, seed: int, shapes: dict[str, tuple]) -> dict:
    """Adds one row of noise per example, keyed on (seed, step): uniform [0, 1) for
    'dequant' and 'mix', standard normal otherwise."""
    n = tf.shape(batch["images"])[0]
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64) * 16 + i])
        full = tf.concat([[n], tf.constant(shape, tf.int32)], 0)
        draw = tf.random.stateless_uniform if name in ("dequant", "mix") else tf.random.stateless_normal
        batch[name] = draw(full, seed=key)
    return batch


def kl_weight(step: tf.Tensor, warmup_steps: int) -> tf.Tensor:
    """The KL term's weight in step ``step`` (0-based): min(1, (step + 1) / warmup_steps),
    1 without warm-up (a deviation from the paper's objective when warmup_steps > 0)."""
    if warmup_steps <= 0:
        return tf.constant(1.0)
    return tf.minimum(1.0, tf.cast(step + 1, tf.float32) / float(warmup_steps))


def make_train_dataset(info: data_lib.DatasetInfo, cfg: TrainConfig, start_step: int,
                       noise_shapes: dict[str, tuple]) -> tf.data.Dataset:
    """Batches {'images': uint8 [B, H, W, C], <noise>: [B, ...], 'kl_weight': [B],
    'flow_on': [B] (0 during the flow warm-up, else 1)} from step ``start_step``.

    Resuming at ``start_step`` = k gives exactly the batches k, k+1, ... of a run from 0
    at the cost of at most one epoch of record reads (``make_image_dataset(start_batch=k)``:
    epochs are shuffled with seeds of (seed, epoch), so the start epoch is computed)."""
    ds = make_image_dataset(info, "train", cfg.batch_size, shuffle=True, repeat=True,
                            seed=cfg.seed, random_flip=cfg.random_flip,
                            start_batch=start_step)
    if cfg.resize_with_crop_or_pad:
        size = cfg.resize_with_crop_or_pad
        ds = ds.map(lambda x: tf.image.resize_with_crop_or_pad(x, size, size))
    ds = ds.enumerate(start=start_step)

    def add_noise(step, images):
        batch = add_step_noise({"images": images}, step, cfg.seed, noise_shapes)
        batch["kl_weight"] = tf.fill(tf.shape(images)[:1], kl_weight(step, cfg.kl_warmup_steps))
        batch["flow_on"] = tf.fill(tf.shape(images)[:1],
                                   tf.cast(step >= cfg.flow_warmup_steps, tf.float32))
        return batch

    return ds.map(add_noise, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class ValidationBound:
    """The ELBO bound in bits/dim (exact for flows) of the first ``num_examples`` images
    of a held-out ``split``, with dequantization and posterior noise fixed by ``seed``,
    so successive calls during training are comparable (the curves of a run)."""

    def __init__(self, model: HybridModel, info: data_lib.DatasetInfo, num_examples: int,
                 seed: int, batch_size: int = 100, split: str = "validation"):
        self.model = model
        count = min(num_examples, info.split_counts.get(split, 0))
        if count == 0:
            raise ValueError(f"--validation_every needs a {split!r} split in {info.data_dir!r} "
                             f"(it has {sorted(info.split_counts)}; see --validation_split)")
        ds = make_image_dataset(info, split, batch_size, shuffle=False,
                                repeat=False, drop_remainder=False)
        self.batches = list(ds.unbatch().take(count).batch(batch_size))
        self.num_examples, self.seed = count, seed
        self._bound = tf.function(self._batch_bound)

    def _batch_bound(self, images, index):
        key = tf.stack([tf.constant(self.seed, tf.int32), -1000 - index])
        x = flows.dequantize_images(images, tf.random.stateless_uniform(tf.shape(images), seed=key))
        eps = None
        if self.model.encoder is not None:
            eps = tf.random.stateless_normal(
                [tf.shape(images)[0], 1, self.model.config.latent_dim], seed=key + 1)
        return self.model.log_prob_bound(x, 1, eps)

    def bits_per_dim(self) -> float:
        total = 0.0
        for i, images in enumerate(self.batches):
            log_p = self._bound(images, tf.constant(i, tf.int32))
            total += float(tf.reduce_sum(metrics.bits_per_dim(log_p, self.model.config.image_shape)))
        return total / self.num_examples


def split_by_rows(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` set to be auto-sharded by DATA: every worker reads the same global
    batches and keeps its replicas' rows of each, so the job trains on exactly the
    batches (and per-example noise) of a one-process run. (AUTO would shard by FILE:
    other batches than one process, and an error with fewer shards than workers.)"""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)
