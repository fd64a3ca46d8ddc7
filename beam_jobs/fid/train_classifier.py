"""Trains a classifier on a labelled data set and exports it as an FID/KID/IS extractor.

    python -m beam_jobs.fid.train_classifier --data_dir=data/cifar10 \\
        --output=work/cifar10_classifier [--train_split=train] [--eval_split=test] \\
        [--arch=auto] [--epochs=N] [--time_budget_minutes=20]

Reads both splits of a data set written by ``beam_jobs.preprocess`` with the project's
tf.data reader (:mod:`artifacts.tfrecord_dataset`; every record must carry a label), decodes
them once into memory, trains a Keras convnet on the training split, reports its accuracy on the
eval split and exports it as an extractor SavedModel (signature ``features``: uint8
images in, ``pool`` features for FID/KID and ``logits`` for IS out; see
:mod:`beam_jobs.fid.extractors`, ``--extractor=classifier``). The SavedModel's content
fingerprint (:mod:`beam_jobs.fid.identity`) names the extractor in every statistics file made
with it. ``<output>/train_report.json`` records the accuracy, counts, epochs, times
(``seconds`` after the imports, ``process_seconds`` since the process started, CPU seconds,
seconds per epoch), load averages and the data set (path and SHA-256 of its
``dataset.json``); the same JSON is printed on stdout.

Architectures (``--arch``; ``auto``: ``small`` for 1-channel images, else ``airbench``):

* ``small``: :func:`beam_jobs.fid.extractor_builders.build_small_convnet` (two conv/pool
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

import json
import logging
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
from absl import flags

from artifacts import dataset_format
from artifacts.cli import (
    UsageError,
    define_choice,
    flag_values,
    parse_flags,
    require,
    setup_logging,
    user_errors,
)
from beam_jobs.fid.airbench import DEFAULT_WIDTH
from beam_jobs.fid.classifier_fit import (
    ARCHS,
    cpu_seconds,
    fit_classifier,
    load_average,
    process_start_time,
    resolve_arch,
)

log = logging.getLogger(__name__)

PROG = "python -m beam_jobs.fid.train_classifier"
REPORT_JSON = "train_report.json"


# --------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------
def load_labelled_split(info: dataset_format.DatasetInfo, split: str
                        ) -> tuple[np.ndarray, np.ndarray]:
    """All images (uint8 [N, H, W, C]) and labels (int64 [N]) of ``split``, in shard order,
    read once with :func:`artifacts.tfrecord_dataset.make_image_dataset`."""
    from artifacts.tfrecord_dataset import make_image_dataset

    info.check_split(split)
    count = info.split_counts[split]
    if count < 1:
        raise ValueError(f"split {split!r} of {info.data_dir!r} holds no records")
    ds = make_image_dataset(info, split, batch_size=min(1000, count), shuffle=False,
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
    from beam_jobs.fid import identity

    return identity.file_sha256(os.path.join(data_dir, dataset_format.DATASET_JSON))


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
    from beam_jobs.fid import extractor_builders, identity

    started, cpu_start = time.time(), cpu_seconds()
    process_started = process_start_time() or started
    load_start = load_average()
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
        "cpu_seconds": round(cpu_seconds() - cpu_start, 1),
        "process_cpu_seconds": round(cpu_seconds(), 1),
        "seconds_by_stage": {"read": round(load_seconds, 2), "train": result.train_seconds,
                             "eval": result.eval_seconds, "export": round(export_seconds, 2)},
        "epoch_seconds": result.epoch_seconds,
        "load_average_start": load_start, "load_average_end": load_average(),
        "load_average_1min_max": max(result.load_average_max, load_average()[0]),
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


def define_flags() -> flags.FlagValues:
    """The command's flags on a new private FlagValues."""
    fv = flag_values()
    flags.DEFINE_string("data_dir", None, "a labelled data set written by "
                        "beam_jobs.preprocess", flag_values=fv)
    flags.DEFINE_string("output", None, "extractor SavedModel directory to write",
                        flag_values=fv)
    flags.DEFINE_string("train_split", "train", "split to train on", flag_values=fv)
    flags.DEFINE_string("eval_split", "test", "split the accuracy is measured on",
                        flag_values=fv)
    define_choice("arch", "auto", ARCHS, "auto: small for 1-channel images, else airbench", fv)
    flags.DEFINE_float("epochs", None, "default: small 4, airbench 5", flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "default: small 32, airbench 512", flag_values=fv)
    flags.DEFINE_integer("width", DEFAULT_WIDTH, "airbench base width w: groups of w, 4w, 4w "
                         "filters (airbench94: 64)", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "random seed (weights, shuffling, augmentation)",
                         flag_values=fv)
    flags.DEFINE_float("time_budget_minutes", None, "finish the whole command within this "
                       "wall time (the schedule is compressed when training runs slower "
                       "than planned)", flag_values=fv)
    flags.DEFINE_integer("max_steps", None, "stop after this many training steps (tests)",
                         flag_values=fv)
    flags.DEFINE_float("min_accuracy", None, "fail (exit 1, after exporting) below this eval "
                       "accuracy", flag_values=fv)
    return fv


DOC = __doc__.split("\n\n")[0] + f"""

usage: {PROG} --data_dir=DIR --output=DIR [flags]   (or --flagfile=FILE)"""


@user_errors(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI; prints the report of :func:`train_classifier` as JSON, exit code 1 below
    ``--min_accuracy``, 2 on a user error (one ``error:`` line)."""
    args, rest = parse_flags(define_flags(), sys.argv[1:] if argv is None else list(argv),
                             PROG, DOC)
    if rest:
        raise UsageError(f"unrecognized arguments: {' '.join(rest)}")
    require(args, "data_dir", "output")
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
