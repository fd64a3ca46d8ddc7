"""Trains a classifier on a labelled data set and exports it as an FID/KID/IS extractor.

    python -m pipeline.train_classifier --data_dir=data/cifar10 \\
        --output=work/cifar10_classifier [--train_split=train] [--eval_split=test] \\
        [--arch=auto] [--epochs=N] [--time_budget_minutes=20]

Reads both splits of a data set written by ``beam_jobs.preprocess`` with the project's
tf.data reader (:mod:`pipeline.data`; every record must carry a label), decodes them once
into memory, trains a Keras convnet on the training split, reports its accuracy on the
eval split and exports it as an extractor SavedModel (signature ``features``: uint8
images in, ``pool`` features for FID/KID and ``logits`` for IS out; see
:mod:`beam_jobs.extractors`, ``--extractor=classifier``). The SavedModel's content
fingerprint (:mod:`beam_jobs.identity`) names the extractor in every statistics file made
with it. ``<output>/train_report.json`` records the accuracy, counts, epochs, times
(``seconds`` after the imports, ``process_seconds`` since the process started, CPU seconds,
seconds per epoch), load averages and the data set (path and SHA-256 of its
``dataset.json``); the same JSON is printed on stdout.

Architectures (``--arch``; ``auto``: ``small`` for 1-channel images, else ``airbench``):

* ``small``: :func:`beam_jobs.extractor_builders.build_small_convnet` (two conv/pool
  stages, a 128-d ReLU feature layer), Adam 1e-3, batch 32, no augmentation: the MNIST
  classifier of ``pipeline.train_mnist_classifier`` (which calls :func:`fit_classifier`).
* ``airbench``: the fast CIFAR-10 convnet of Page (2018, "How to train your ResNet") as
  refined in airbench94 (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"):
  a frozen 2x2 patch-whitening convolution computed from the training images, three
  conv-pool-BN-GELU / conv-BN-GELU groups of widths (w, 4w, 4w; w = 32 by default, half of
  airbench94's, for a third of its CPU time per image) whose convolutions start
  as identities (implicit residuals), BatchNorm without scale, global max pooling (the
  ``4w``-d ``pool`` features), a linear layer scaled by 1/9 (the logits); Nesterov SGD
  with decoupled weight decay and 64x learning rate for BatchNorm biases, label smoothing
  0.2, a triangular learning-rate schedule, lookahead averaging (EMA every 5 steps from
  30 % of training), random flips and +-2 px reflect-padded translations. Trained in
  float32 without XLA: on this machine's CPU (the VM exposes AVX2 only, no AVX-512/BF16)
  a step of batch 512 at width 32 took 74 s with ``mixed_bfloat16`` (bfloat16 emulated),
  7.8 s with ``jit_compile`` and 4.0 s without either (measured with other jobs running).

``--time_budget_minutes`` bounds the wall time of the whole command (from the process
start, imports included, where Linux ``/proc`` tells it): the learning-rate
schedule and the averaging run on *progress* = max(step / planned steps, elapsed / time
left for training), so a run that is slower than planned (a loaded machine) compresses its
schedule and stops in time instead of being cut mid-schedule. The time left for training
is the budget minus a reserve for evaluation and export estimated from the measured step
rate. Without a budget the run is deterministic for ``--seed``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import resource
import sys
import time
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from artifacts import dataset_format
from artifacts.cli import setup_logging, user_errors

if TYPE_CHECKING:  # imported where a model is built (slow imports)
    import keras

log = logging.getLogger(__name__)

PROG = "python -m pipeline.train_classifier"
ARCHS = ("auto", "small", "airbench")
REPORT_JSON = "train_report.json"
#: Per-architecture defaults of epochs and batch size.
DEFAULTS = {"small": {"epochs": 4.0, "batch_size": 32},
            "airbench": {"epochs": 5.0, "batch_size": 512}}
#: airbench base width: 32 (airbench94 uses 64, about 3x the CPU time per image here).
DEFAULT_WIDTH = 32
#: airbench94's optimisation settings (lr and weight decay per 1,024 examples, decoupled
#: from momentum as in its hyperparameters).
AIRBENCH = dict(lr=11.5, momentum=0.85, weight_decay=0.0153, bias_scaler=64.0,
                label_smoothing=0.2, ema_start=0.3, ema_every=5, ema_decay=0.95,
                ema_pow=3.0, lr_start=0.2, lr_peak_at=0.23, lr_end=0.07, translate=2,
                whiten_kernel=2, whiten_eps=5e-4, bn_momentum=0.4, logit_scale=1.0 / 9)
MIN_AIRBENCH_SIZE = 16  # three 2x2 poolings after a 2x2 valid convolution


# --------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------
def load_labelled_split(info: dataset_format.DatasetInfo, split: str
                        ) -> tuple[np.ndarray, np.ndarray]:
    """All images (uint8 [N, H, W, C]) and labels (int64 [N]) of ``split``, in shard order,
    read once with :func:`pipeline.data.make_image_dataset`."""
    from pipeline import data

    info.check_split(split)
    count = info.split_counts[split]
    if count < 1:
        raise ValueError(f"split {split!r} of {info.data_dir!r} holds no records")
    ds = data.make_image_dataset(info, split, batch_size=min(1000, count), shuffle=False,
                                 repeat=False, drop_remainder=False, with_labels=True)
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def num_classes_of(info: dataset_format.DatasetInfo, split_labels: dict[str, np.ndarray]
                   ) -> int:
    """The number of classes (``label_names``, else the largest label + 1); ValueError if a
    split has records without a label (-1) or labels outside the classes."""
    for split, labels in split_labels.items():
        unknown = int(np.sum(labels < 0))
        if unknown == len(labels):
            raise ValueError(
                f"data set {info.data_dir!r} has no labels in split {split!r} (every record's "
                "label is -1); a classifier needs labelled data, e.g. image folders with one "
                "sub-folder per class, MNIST IDX or a labelled TFDS data set")
        if unknown:
            raise ValueError(f"{unknown} of {len(labels)} records of split {split!r} in "
                             f"{info.data_dir!r} have no label (-1); expected every record "
                             "labelled")
    top = max(int(labels.max()) for labels in split_labels.values())
    num_classes = len(info.label_names) if info.label_names else top + 1
    if top >= num_classes:
        raise ValueError(f"data set {info.data_dir!r} has label {top} but {num_classes} "
                         f"label_names; expected labels in [0, {num_classes})")
    if num_classes < 2:
        raise ValueError(f"data set {info.data_dir!r} has {num_classes} class; a classifier "
                         "needs at least 2")
    return num_classes


def dataset_json_sha256(data_dir: str) -> str:
    """Hex SHA-256 of ``<data_dir>/dataset.json`` (names the data set's exact content:
    it lists every shard's SHA-256)."""
    from beam_jobs import identity

    return identity.file_sha256(os.path.join(data_dir, dataset_format.DATASET_JSON))


def resolve_arch(arch: str, image_shape: tuple[int, int, int]) -> str:
    """``auto`` -> ``small`` for 1-channel images, else ``airbench``; checks the size."""
    if arch not in ARCHS:
        raise ValueError(f"--arch={arch!r}: expected one of {ARCHS}")
    h, w, c = image_shape
    if c not in (1, 3):
        raise ValueError(f"images have {c} channels; expected 1 or 3")
    if arch == "auto":
        arch = "small" if c == 1 else "airbench"
    if arch == "airbench" and min(h, w) < MIN_AIRBENCH_SIZE:
        raise ValueError(f"--arch=airbench needs images of at least {MIN_AIRBENCH_SIZE}x"
                         f"{MIN_AIRBENCH_SIZE}; these are {h}x{w}")
    if arch == "small" and min(h, w) < 10:
        raise ValueError(f"--arch=small needs images of at least 10x10; these are {h}x{w}")
    return arch


# --------------------------------------------------------------------------------------
# The airbench-style network.
# --------------------------------------------------------------------------------------
def whitening_kernel(images: np.ndarray, kernel_size: int = 2, eps: float = 5e-4,
                     mean: Optional[np.ndarray] = None, std: Optional[np.ndarray] = None
                     ) -> np.ndarray:
    """[k, k, C, 2 k k C] conv kernel that whitens k x k patches of (normalized) ``images``
    (uint8 [N, H, W, C]): the eigenvectors of the patch covariance scaled by
    1/sqrt(eigenvalue + eps), with both signs (so a following GELU keeps all directions)."""
    n, h, w, c = images.shape
    k = kernel_size
    cov = np.zeros((k * k * c, k * k * c))
    count = 0
    for start in range(0, n, 500):  # chunks: all patches of 5,000 images take ~0.5 GB
        x = images[start:start + 500].astype(np.float64) / 255.0
        if mean is not None:
            x = (x - mean) / std
        patches = np.stack([x[:, i:h - k + 1 + i, j:w - k + 1 + j, :]
                            for i in range(k) for j in range(k)], axis=3)  # [n, h', w', kk, C]
        flat = patches.reshape(-1, k * k * c)  # (di, dj, channel) = Keras (kh, kw, cin)
        cov += flat.T @ flat
        count += len(flat)
    cov /= count
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    scaled = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)  # columns
    kernel = scaled.reshape(k, k, c, k * k * c)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)


def _dirac_init(conv) -> None:
    """Sets the first min(C_in, C_out) filters of a 3x3 Conv2D to identities."""
    kernel = np.array(conv.kernel.numpy())
    kh, kw, cin, cout = kernel.shape
    n = min(cin, cout)
    kernel[..., :n] = 0.0
    kernel[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
    conv.kernel.assign(kernel)


def build_airbench(input_shape: tuple[int, int, int], num_classes: int, width: int,
                   whitening_images: np.ndarray, seed: int = 0) -> "keras.Model":
    """The airbench-style features model on float [B, H, W, C] images in [0, 1]:
    outputs (pool [B, 4 width], logits [B, num_classes]) (see the module docstring)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    h, w, c = (int(v) for v in input_shape)
    x01 = whitening_images.astype(np.float64) / 255.0
    mean = x01.mean(axis=(0, 1, 2))
    std = np.maximum(x01.std(axis=(0, 1, 2)), 1e-3)
    k = AIRBENCH["whiten_kernel"]
    bn = dict(momentum=AIRBENCH["bn_momentum"], epsilon=1e-12, scale=False)
    convs = []

    def conv(x, filters):
        layer = layers.Conv2D(filters, 3, padding="same", use_bias=False)
        convs.append(layer)
        return layer(x)

    inputs = keras.Input((h, w, c), name="image")
    x = layers.Normalization(mean=mean.tolist(), variance=(std ** 2).tolist(),
                             name="standardize")(inputs)
    whiten = layers.Conv2D(2 * c * k * k, k, padding="valid", use_bias=True, name="whiten")
    x = layers.Activation("gelu")(whiten(x))
    for i, filters in enumerate((width, 4 * width, 4 * width)):
        x = conv(x, filters)
        x = layers.MaxPooling2D(name=f"group{i + 1}_pool")(x)
        x = layers.Activation("gelu")(layers.BatchNormalization(**bn)(x))
        x = conv(x, filters)
        x = layers.Activation("gelu")(layers.BatchNormalization(**bn)(x))
    pool = layers.GlobalMaxPooling2D(name="pool")(x)
    logits = layers.Rescaling(AIRBENCH["logit_scale"], name="logits")(
        layers.Dense(num_classes, use_bias=False, name="linear")(pool))
    model = keras.Model(inputs, [pool, logits], name="airbench_features")
    whiten.kernel.assign(whitening_kernel(whitening_images, k, AIRBENCH["whiten_eps"],
                                          mean, std))
    whiten.kernel.trainable = False
    for layer in convs:
        _dirac_init(layer)
    return model


def _augment_fn(seed: int, pad: int) -> Callable:
    """(batch index, uint8 images [B, H, W, C], labels) -> (float images in [0, 1], labels):
    each image flipped left-right with probability 1/2 and translated by up to ``pad`` px
    (reflect padding), with stateless randomness keyed on (seed, batch index)."""
    import tensorflow as tf

    def augment(index, batch):
        images, labels = batch
        x = tf.cast(images, tf.float32) / 255.0
        b, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
        key = tf.stack([tf.constant(seed, tf.int64), index])
        flip = tf.random.stateless_uniform([b], key) < 0.5
        x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
        if pad:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
            shifts = tf.random.stateless_uniform([b, 2], key + [0, 1 << 40], 0, 2 * pad + 1,
                                                 tf.int32)
            rows = shifts[:, :1] + tf.range(h)[None, :]
            cols = shifts[:, 1:] + tf.range(w)[None, :]
            x = tf.gather(x, rows, axis=1, batch_dims=1)
            x = tf.gather(x, cols, axis=2, batch_dims=1)
        return x, labels

    return augment


def _triangle(progress: float) -> float:
    """The learning-rate multiplier: lr_start -> 1 at lr_peak_at -> lr_end at 1."""
    a = AIRBENCH
    if progress < a["lr_peak_at"]:
        return a["lr_start"] + (1 - a["lr_start"]) * progress / a["lr_peak_at"]
    return 1 + (a["lr_end"] - 1) * (progress - a["lr_peak_at"]) / (1 - a["lr_peak_at"])


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def process_start_time() -> Optional[float]:
    """When this process started (a ``time.time()`` value, from Linux ``/proc``), so the
    wall time and the time budget include the Python and TensorFlow imports; None where
    ``/proc`` is unavailable."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class FitResult:
    """What :func:`fit_classifier` returns: the trained (pool, logits) model and how it
    was trained."""

    features_model: "keras.Model"
    accuracy: float
    arch: str
    epochs: float
    steps: int
    batch_size: int
    train_seconds: float
    eval_seconds: float
    epoch_seconds: list[float]
    stop_reason: str
    load_average_max: float
    settings: dict


def _fit_small(x_train, y_train, num_classes, *, epochs, batch_size, seed, max_steps,
               deadline, name):
    import keras
    import tensorflow as tf

    from beam_jobs import extractor_builders

    classifier, features_model = extractor_builders.build_small_convnet(
        x_train.shape[1:], num_classes, seed=seed, name=name)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    n = len(x_train)
    x = x_train.astype(np.float32) / 255.0
    ds = (tf.data.Dataset.from_tensor_slices((x, y_train))
          .shuffle(n, seed=seed).batch(batch_size).prefetch(2))
    epochs = max(1, int(math.ceil(epochs)))
    steps_per_epoch = None
    if max_steps is not None:
        steps_per_epoch = max(1, min(max_steps, -(-n // batch_size)))
        ds = ds.repeat()
        epochs = max(1, -(-max_steps // steps_per_epoch))
    epoch_seconds: list[float] = []
    stop = {"reason": "max_steps" if max_steps is not None else "epochs", "load": 0.0}

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(round(time.time() - self.t, 2))
            stop["load"] = max(stop["load"], os.getloadavg()[0])

        def on_train_batch_end(self, batch, logs=None):
            if deadline is not None and time.time() > deadline:
                self.model.stop_training = True
                stop["reason"] = "time_budget"

    log.info("training the small convnet on %d images for %d epoch(s)", n, epochs)
    history = classifier.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                             shuffle=False,  # ds is shuffled by tf.data already
                             callbacks=[Clock()], verbose=2 if sys.stderr.isatty() else 0)
    done_epochs = len(history.history.get("loss", []))
    steps = (done_epochs * steps_per_epoch if steps_per_epoch
             else done_epochs * -(-n // batch_size))
    return features_model, float(done_epochs), int(steps), epoch_seconds, stop


def _fit_airbench(x_train, y_train, num_classes, *, epochs, batch_size, width, seed,
                  max_steps, deadline_fn, eval_count, log_every_epoch=True):
    import tensorflow as tf

    a = AIRBENCH
    n = len(x_train)
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size
    planned = max(1, int(round(epochs * steps_per_epoch)))
    if max_steps is not None:
        planned = min(planned, max_steps)
    model = build_airbench(x_train.shape[1:], num_classes, width,
                           x_train[np.random.default_rng(seed).permutation(n)[:5000]], seed)
    variables = model.trainable_variables
    bias_ids = {id(layer.beta) for layer in model.layers
                if layer.__class__.__name__ == "BatchNormalization" and layer.center}
    # airbench's decoupled settings -> per-example (summed loss) SGD: step = lr_scale *
    # (lr_v * grad + wd * v) through Nesterov momentum, lr_v = lr (x64 for BN biases).
    kilostep = 1024 * (1 + 1 / (1 - a["momentum"]))
    lr = a["lr"] / kilostep
    wd = a["weight_decay"] * batch_size / kilostep
    lrs = [lr * (a["bias_scaler"] if id(v) in bias_ids else 1.0) for v in variables]
    buffers = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in variables]
    averaged = [v for v in model.variables if v.dtype == "float32"]
    ema = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in averaged]
    momentum = tf.constant(a["momentum"], tf.float32)
    smoothing = a["label_smoothing"]

    @tf.function(jit_compile=False)
    def train_step(x, y, lr_scale):
        target = tf.one_hot(y, num_classes) * (1 - smoothing) + smoothing / num_classes
        with tf.GradientTape() as tape:
            _, logits = model(x, training=True)
            loss = tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(target, logits))
        grads = tape.gradient(loss, variables)
        for v, g, buf, lr_v in zip(variables, grads, buffers, lrs):
            d = g + (wd / lr_v) * v.value
            buf.assign(momentum * buf + d)
            v.assign_sub(lr_scale * lr_v * (d + momentum * buf))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32))
        return loss, correct

    @tf.function
    def ema_update(rho):  # lookahead: average, then pull the weights to the average
        for e, v in zip(ema, averaged):
            e.assign(rho * e + (1 - rho) * v.value)
            v.assign(e)

    @tf.function
    def ema_start():
        for e, v in zip(ema, averaged):
            e.assign(v.value)

    ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
          .shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
          .batch(batch_size, drop_remainder=True).enumerate()
          .map(_augment_fn(seed, a["translate"]), num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(2))
    log.info("training airbench (width %d, %d parameters) on %d images: %d steps of batch %d "
             "planned (%.1f epochs)", width, model.count_params(), n, planned, batch_size,
             planned / steps_per_epoch)
    start = epoch_start = time.time()
    step, ema_on, reason = 0, False, "epochs" if max_steps is None else "max_steps"
    epoch_seconds: list[float] = []
    loss_sum = correct_sum = 0.0
    load_max = os.getloadavg()[0]
    rate = None  # seconds per training image, measured after the first (tracing) step
    iterator = iter(ds)
    while True:
        progress = step / planned
        deadline = deadline_fn(rate, eval_count)
        if deadline is not None:
            progress = max(progress, (time.time() - start) / max(deadline - start, 1e-6))
        if progress >= 1.0 and step > 0:  # at least one step, even past the budget
            if step < planned:
                reason = "time_budget"
            break
        progress = min(progress, 1.0)
        x, y = next(iterator)
        t = time.time()
        loss, correct = train_step(x, y, tf.constant(_triangle(progress), tf.float32))
        loss_sum += float(loss)
        correct_sum += float(correct)
        if step > 0:
            per_image = (time.time() - t) / batch_size
            rate = per_image if rate is None else 0.9 * rate + 0.1 * per_image
        step += 1
        if progress >= a["ema_start"] and step % a["ema_every"] == 0:
            if not ema_on:
                ema_start()
                ema_on = True
            else:
                ema_update(tf.constant(a["ema_decay"] ** a["ema_every"] * progress ** a["ema_pow"],
                                       tf.float32))
        if step % steps_per_epoch == 0:
            if ema_on:
                ema_update(tf.constant(1.0))
            epoch_seconds.append(round(time.time() - epoch_start, 2))
            load_max = max(load_max, os.getloadavg()[0])
            if log_every_epoch:
                seen = steps_per_epoch * batch_size
                log.info("epoch %d: %.1f s, loss %.3f, train accuracy %.3f, progress %.2f, "
                         "load average %s", len(epoch_seconds), epoch_seconds[-1],
                         loss_sum / seen, correct_sum / seen, progress, _load())
            loss_sum = correct_sum = 0.0
            epoch_start = time.time()
    if ema_on:
        ema_update(tf.constant(1.0))
    if step % steps_per_epoch:
        epoch_seconds.append(round(time.time() - epoch_start, 2))
    settings = dict(width=width, **{k: v for k, v in a.items()})
    if rate:
        settings["measured_train_images_per_second"] = round(1.0 / rate, 1)
    return model, step / steps_per_epoch, step, epoch_seconds, \
        {"reason": reason, "load": load_max}, settings


def evaluate_accuracy(features_model, images: np.ndarray, labels: np.ndarray,
                      batch_size: int = 1000) -> float:
    """Top-1 accuracy of the model's logits on uint8 ``images`` (scaled to [0, 1])."""
    import tensorflow as tf

    @tf.function
    def predict(x):
        return features_model(tf.cast(x, tf.float32) / 255.0, training=False)[1]

    correct = 0
    for i in range(0, len(images), batch_size):
        logits = predict(tf.constant(images[i:i + batch_size])).numpy()
        correct += int(np.sum(np.argmax(logits, -1) == labels[i:i + batch_size]))
    return correct / len(images)


def fit_classifier(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
                   y_eval: np.ndarray, num_classes: int, *, arch: str = "auto",
                   epochs: Optional[float] = None, batch_size: Optional[int] = None,
                   width: int = DEFAULT_WIDTH, seed: int = 0,
                   max_steps: Optional[int] = None, budget_end: Optional[float] = None, name: str = "classifier") -> FitResult:
    """Trains ``arch`` on uint8 images [N, H, W, C] with int labels, then measures the
    top-1 accuracy on the eval images. ``budget_end`` (a ``time.time()`` value) is when the
    whole command must be done: training stops early enough to leave time for evaluation
    and export (see the module docstring). ``max_steps`` caps the optimizer steps (tests).
    """
    arch = resolve_arch(arch, tuple(x_train.shape[1:]))
    epochs = DEFAULTS[arch]["epochs"] if epochs is None else float(epochs)
    batch_size = DEFAULTS[arch]["batch_size"] if batch_size is None else int(batch_size)
    if epochs <= 0 or batch_size < 1 or width < 1:
        raise ValueError(f"epochs={epochs}, batch_size={batch_size}, width={width}: expected "
                         "positive values")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps={max_steps}: expected >= 1")

    def deadline_fn(rate, eval_count):
        if budget_end is None:
            return None
        # Reserve: evaluation (a forward pass costs about a third of a training step per
        # image) and export (~30 s with the model's tracing).
        per_image = rate if rate is not None else 0.01
        return budget_end - 30.0 - eval_count * per_image / 2.0

    start = time.time()
    if arch == "small":
        model, done, steps, epoch_seconds, stop = _fit_small(
            x_train, y_train, num_classes, epochs=epochs, batch_size=batch_size, seed=seed,
            max_steps=max_steps, deadline=deadline_fn(None, len(x_eval)), name=name)
        settings = {"optimizer": "adam", "learning_rate": 1e-3}
    else:
        model, done, steps, epoch_seconds, stop, settings = _fit_airbench(
            x_train, y_train, num_classes, epochs=epochs, batch_size=batch_size, width=width,
            seed=seed, max_steps=max_steps, deadline_fn=deadline_fn, eval_count=len(x_eval))
    train_seconds = time.time() - start
    t = time.time()
    accuracy = evaluate_accuracy(model, x_eval, y_eval)
    eval_seconds = time.time() - t
    log.info("accuracy %.4f on %d eval images (training %.1f s, %.2f epochs, evaluation "
             "%.1f s)", accuracy, len(y_eval), train_seconds, done, eval_seconds)
    return FitResult(features_model=model, accuracy=accuracy, arch=arch, epochs=round(done, 3),
                     steps=steps, batch_size=batch_size, train_seconds=round(train_seconds, 2),
                     eval_seconds=round(eval_seconds, 2), epoch_seconds=epoch_seconds,
                     stop_reason=stop["reason"], load_average_max=round(stop["load"], 2),
                     settings=settings)


# --------------------------------------------------------------------------------------
# The command.
# --------------------------------------------------------------------------------------
def train_classifier(data_dir: str, output: str, *, train_split: str = "train",
                     eval_split: str = "test", arch: str = "auto",
                     epochs: Optional[float] = None, batch_size: Optional[int] = None,
                     width: int = DEFAULT_WIDTH, seed: int = 0,
                     max_steps: Optional[int] = None, time_budget_minutes: Optional[float] = None,
                     min_accuracy: Optional[float] = None) -> dict:
    """Trains on ``train_split`` of a preprocessed data set, evaluates on ``eval_split``,
    exports the extractor SavedModel to ``output`` and writes ``<output>/train_report.json``.
    Returns the report. RuntimeError (after exporting) below ``min_accuracy``."""
    from beam_jobs import extractor_builders, identity

    started, cpu_start = time.time(), _cpu_seconds()
    process_started = process_start_time() or started
    load_start = _load()
    if time_budget_minutes is not None and time_budget_minutes <= 0:
        raise ValueError(f"--time_budget_minutes={time_budget_minutes}: expected > 0")
    budget_end = (None if time_budget_minutes is None
                  else process_started + 60.0 * time_budget_minutes)
    info = dataset_format.read_dataset_info(data_dir)
    info.check_split(train_split)
    info.check_split(eval_split)
    if train_split == eval_split:
        raise ValueError(f"--train_split and --eval_split are both {train_split!r}; the "
                         "accuracy must be measured on images the classifier was not trained on")
    arch = resolve_arch(arch, info.image_shape)
    x_train, y_train = load_labelled_split(info, train_split)
    x_eval, y_eval = load_labelled_split(info, eval_split)
    num_classes = num_classes_of(info, {train_split: y_train, eval_split: y_eval})
    load_seconds = time.time() - started
    log.info("read %d %s and %d %s images %s from %s in %.1f s", len(x_train), train_split,
             len(x_eval), eval_split, "x".join(map(str, info.image_shape)), info.data_dir,
             load_seconds)
    result = fit_classifier(x_train, y_train, x_eval, y_eval, num_classes, arch=arch,
                            epochs=epochs, batch_size=batch_size, width=width, seed=seed,
                            max_steps=max_steps, budget_end=budget_end)
    data_sha = dataset_json_sha256(info.data_dir)
    t = time.time()
    features = {"small": "penultimate ReLU layer",
                "airbench": "global max pool of the last convolution group"}[result.arch]
    protocol = extractor_builders.classifier_protocol(
        "classifier", info.image_shape, int(result.features_model.outputs[0].shape[-1]),
        num_classes, features)
    extractor_builders.export_classifier(
        result.features_model, output, "classifier", protocol, arch=arch,
        eval_accuracy=result.accuracy, train_split=train_split, eval_split=eval_split,
        train_images=int(len(x_train)), eval_images=int(len(x_eval)),
        data_dir=info.data_dir, dataset_json_sha256=data_sha, label_names=info.label_names)
    export_seconds = time.time() - t
    fingerprint = identity.saved_model_fingerprint(output)
    report = {
        "accuracy": result.accuracy, "eval_split": eval_split, "eval_images": int(len(x_eval)),
        "train_split": train_split, "train_images": int(len(x_train)),
        "num_classes": num_classes, "label_names": info.label_names,
        "arch": result.arch, "epochs": result.epochs, "steps": result.steps,
        "batch_size": result.batch_size, "seed": seed, "stop_reason": result.stop_reason,
        "time_budget_minutes": time_budget_minutes,
        "seconds": round(time.time() - started, 2),
        "process_seconds": round(time.time() - process_started, 2),
        "cpu_seconds": round(_cpu_seconds() - cpu_start, 1),
        "process_cpu_seconds": round(_cpu_seconds(), 1),
        "seconds_by_stage": {"read": round(load_seconds, 2), "train": result.train_seconds,
                             "eval": result.eval_seconds, "export": round(export_seconds, 2)},
        "epoch_seconds": result.epoch_seconds,
        "load_average_start": load_start, "load_average_end": _load(),
        "load_average_1min_max": max(result.load_average_max, _load()[0]),
        "cpu_count": os.cpu_count(),
        "data_dir": info.data_dir, "dataset_json_sha256": data_sha,
        "output": os.path.abspath(output), "extractor_fingerprint": fingerprint,
        "settings": result.settings,
    }
    with open(os.path.join(output, REPORT_JSON), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    if min_accuracy is not None and result.accuracy < min_accuracy:
        raise RuntimeError(f"eval accuracy {result.accuracy:.4f} is below --min_accuracy="
                           f"{min_accuracy}; exported anyway to {output!r}")
    return report


@user_errors(PROG)
def main(argv: Optional[list[str]] = None) -> int:
    """The CLI; prints the report of :func:`train_classifier` as JSON, exit code 1 below
    ``--min_accuracy``, 2 on a user error (one ``error:`` line)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True,
                        help="a labelled data set written by beam_jobs.preprocess")
    parser.add_argument("--output", required=True, help="extractor SavedModel directory to write")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--arch", default="auto", choices=ARCHS,
                        help="auto: small for 1-channel images, else airbench")
    parser.add_argument("--epochs", type=float, default=None,
                        help="default: small 4, airbench 5")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="default: small 32, airbench 512")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH,
                        help="airbench base width w: groups of w, 4w, 4w filters (airbench94: 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time_budget_minutes", type=float, default=None,
                        help="finish the whole command within this wall time (the schedule "
                             "is compressed when training runs slower than planned)")
    parser.add_argument("--max_steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbosity", type=int, default=0, help="1: TF/Beam start-up noise")
    parser.add_argument("--min_accuracy", type=float, default=None,
                        help="fail (exit 1, after exporting) below this eval accuracy")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        report = train_classifier(
            args.data_dir, args.output, train_split=args.train_split,
            eval_split=args.eval_split, arch=args.arch, epochs=args.epochs,
            batch_size=args.batch_size, width=args.width, seed=args.seed,
            max_steps=args.max_steps, time_budget_minutes=args.time_budget_minutes,
            min_accuracy=args.min_accuracy)
    except RuntimeError as e:
        log.error("%s", e)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
