"""Trains the small MNIST convnet used as the ``mnist_classifier`` FID/KID/IS extractor.

    python -m pipeline.train_mnist_classifier --mnist_dir=../shared/data/mnist_test \\
        --output=work/mnist_classifier [--epochs=4]

Trains on the first 9,000 images of the given IDX files, reports accuracy on the last
1,000 (held out), and exports an extractor SavedModel (signature ``features``, see
:mod:`beam_jobs.fid.extractors`) that accepts uint8 [B, H, W, 1 or 3] images. It is one use of
the generic trainer ``python -m beam_jobs.fid.train_classifier`` (its ``small`` architecture),
which reads any preprocessed labelled data set; this command reads the IDX files directly.
Flags are absl's (``--flagfile`` works); a user error (a usage error, a missing or too
small ``--mnist_dir``) is one line ``python -m pipeline.train_mnist_classifier: error:
...``, exit code 2; an accuracy below ``--min_accuracy`` exits 1.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Sequence

import numpy as np
from absl import flags

from artifacts.cli import UsageError, flag_values, parse_flags, require, setup_logging, user_errors
from beam_jobs.fid import extractors
from beam_jobs.sources import mnist_idx

log = logging.getLogger(__name__)

NUM_TRAIN = 9000
PROG = "python -m pipeline.train_mnist_classifier"


def train_classifier(mnist_dir: str, output: str, epochs: int = 4, batch_size: int = 32,
                     max_steps: int | None = None, seed: int = 0,
                     min_accuracy: float | None = None) -> dict:
    """Trains, evaluates on the held-out 1,000 images and exports to ``output``.

    The training and evaluation are :func:`beam_jobs.fid.classifier_fit.fit_classifier` with
    ``arch="small"`` (the generic trainer's small convnet and recipe), the export is
    :func:`beam_jobs.fid.extractors.export_mnist_classifier` (extractor ``mnist_classifier``).
    Returns {"accuracy": held-out accuracy in [0, 1], "train_images", "heldout_images",
    "epochs", "seconds", "output"}. ``max_steps`` caps the optimizer steps (for tests);
    ``min_accuracy`` raises RuntimeError (after exporting) when the accuracy is lower.
    """
    from beam_jobs.fid import classifier_fit as generic

    images, labels = mnist_idx.load_mnist(mnist_dir)
    if len(images) <= NUM_TRAIN:
        raise ValueError(f"{mnist_dir!r} holds {len(images)} images; need more than "
                         f"{NUM_TRAIN} (train on the first {NUM_TRAIN}, hold out the rest)")
    x, y = images[..., None], labels.astype(np.int64)
    x_train, y_train, x_test, y_test = x[:NUM_TRAIN], y[:NUM_TRAIN], x[NUM_TRAIN:], y[NUM_TRAIN:]
    start = time.time()
    fit = generic.fit_classifier(x_train, y_train, x_test, y_test, 10, arch="small",
                                 epochs=epochs, batch_size=batch_size, seed=seed,
                                 max_steps=max_steps, name="mnist_classifier")
    accuracy = fit.accuracy
    seconds = time.time() - start
    log.info("held-out accuracy %.4f on %d images (%.1f s)", accuracy, len(y_test), seconds)
    extractors.export_mnist_classifier(fit.features_model, output, heldout_accuracy=accuracy,
                                       train_images=NUM_TRAIN, heldout_images=int(len(y_test)))
    result = {"accuracy": accuracy, "train_images": NUM_TRAIN,
              "heldout_images": int(len(y_test)), "epochs": int(round(fit.epochs)),
              "seconds": round(seconds, 2), "output": output}
    if min_accuracy is not None and accuracy < min_accuracy:
        raise RuntimeError(f"held-out accuracy {accuracy:.4f} is below --min_accuracy="
                           f"{min_accuracy}; exported anyway to {output!r}")
    return result


def define_flags() -> flags.FlagValues:
    """The command's flags on a new private FlagValues."""
    fv = flag_values()
    flags.DEFINE_string("mnist_dir", None, "folder with t10k-images-idx3-ubyte.gz and "
                        "t10k-labels-idx1-ubyte.gz (required)", flag_values=fv)
    flags.DEFINE_string("output", None, "SavedModel directory to write (required)",
                        flag_values=fv)
    flags.DEFINE_integer("epochs", 4, "training epochs", flag_values=fv)
    flags.DEFINE_integer("batch_size", 32, "images per step", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "initialization and shuffling seed", flag_values=fv)
    flags.DEFINE_float("min_accuracy", 0.97, "fail (exit 1) below this held-out accuracy",
                       flag_values=fv)
    return fv


@user_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; prints the result of :func:`train_classifier` as JSON, exit code 1 below
    ``--min_accuracy``; a user error is one line on stderr and SystemExit(2)."""
    args, rest = parse_flags(define_flags(), sys.argv[1:] if argv is None else list(argv),
                             PROG, __doc__)
    if rest:
        raise UsageError(f"unrecognized arguments: {' '.join(rest)}")
    require(args, "mnist_dir", "output")
    setup_logging()
    try:
        result = train_classifier(args.mnist_dir, args.output, epochs=args.epochs,
                                  batch_size=args.batch_size, seed=args.seed,
                                  min_accuracy=args.min_accuracy)
    except RuntimeError as e:
        log.error("%s", e)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
