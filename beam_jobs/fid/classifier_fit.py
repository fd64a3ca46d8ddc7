"""Fitting the classifiers of :mod:`beam_jobs.fid.train_classifier`: :func:`fit_classifier`
(``small`` or ``airbench``, within an optional wall-time budget) and the accuracy of a
(pool, logits) model."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import resource
import sys
import time
from typing import TYPE_CHECKING, Optional

import numpy as np

from beam_jobs.fid.airbench import (
    AIRBENCH,
    DEFAULT_WIDTH,
    MIN_AIRBENCH_SIZE,
    augment_fn,
    build_airbench,
    triangle,
)

if TYPE_CHECKING:  # imported where a model is built (slow imports)
    import keras

log = logging.getLogger(__name__)

ARCHS = ("auto", "small", "airbench")
#: Per-architecture defaults of epochs and batch size.
DEFAULTS = {"small": {"epochs": 4.0, "batch_size": 32},
            "airbench": {"epochs": 5.0, "batch_size": 512}}


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


def load_average() -> list[float]:
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


def cpu_seconds() -> float:
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

    from beam_jobs.fid import extractor_builders

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
          .map(augment_fn(seed, a["translate"]), num_parallel_calls=tf.data.AUTOTUNE)
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
        loss, correct = train_step(x, y, tf.constant(triangle(progress), tf.float32))
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
                         loss_sum / seen, correct_sum / seen, progress, load_average())
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
