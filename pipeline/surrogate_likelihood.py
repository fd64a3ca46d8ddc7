"""Per-image surrogate log-likelihood of any model with a generator (Balaji et al., 2019).

    python -m pipeline.surrogate_likelihood --model_dir=runs/gan --data_dir=data/mnist \
        --split=validation [--num_generated=2000 --entropic_lambda=5 --batch_size=500]

The model's generator G (``HybridModel.generate`` at ``--temperature``, 0 by default: the
decoder mean through the flow, f^-1(mu(z)), for the latent variants; f^-1(eps) for the
flows) defines the entropic GAN's data model, a Gaussian of variance lambda / 2 per
dimension around G(z), z from the prior (draw i seeded by seed * 2^31 + i alone:
:func:`pipeline.eval_harness.draw_samples`, before quantization). Each batch of
``--batch_size`` real images, at bin centres (x + 0.5) / 256 in [0, 1)^D, is coupled with ``--num_generated`` draws by
the entropic optimal transport (Sinkhorn, :mod:`tfp_models.surrogate`), which gives every
image a lower bound (in expectation) on its log-density under that model: nats on
[0, 1)^D, and bits/dim of the 8-bit image as for the project's other likelihoods
((-log f / D + ln 256) / ln 2). The bound tightens with larger batches and more draws.
Works for every variant, `gan` included (it has no likelihood of its own).

Prints a JSON summary; ``--output_npz`` keeps the per-image values (with labels when the
data set has them); the means are logged as MLflow metrics
``surrogate/<split>/...`` on the model directory's run.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app, flags
from tqdm import tqdm

from pipeline import eval_harness
from tfp_models import metrics, surrogate
from tfp_models.hybrid import HybridModel

log = logging.getLogger("pipeline.surrogate_likelihood")


def generator_draws(model: HybridModel, num: int, temperature: float, seed: int,
                    batch_size: int = 500) -> np.ndarray:
    """G(z) for ``num`` prior draws: float64 [num, D] in [0, 1] (continuous, unquantized):
    :func:`pipeline.eval_harness.draw_samples` before quantization, row i keyed on
    seed * 2^31 + i alone."""
    rows = eval_harness.draw_samples(model, num, temperature, seed, batch_size=batch_size,
                                     quantize=False)
    return rows.reshape(num, -1).astype(np.float64)


def surrogate_scores(model: HybridModel, data_dir: str, split: str, *, num_generated: int,
                     entropic_lambda: float, batch_size: int, temperature: float = 0.0,
                     seed: int = 0, max_examples: int | None = None, max_iters: int = 1000,
                     tolerance: float = 1e-6, show_progress: bool = True) -> dict[str, Any]:
    """Surrogate log-likelihoods of the images of ``split`` (see module docstring).

    Returns {"log_likelihood_nats": [N], "bits_per_dim": [N], "labels": [N] (-1 unknown),
    "iterations": [batches], "marginal_error": [batches], "generated": M, ...}.
    """
    if num_generated < 1 or batch_size < 1:
        raise ValueError(f"--num_generated={num_generated} and --batch_size={batch_size}: "
                         "expected positive integers")
    if not entropic_lambda > 0:
        raise ValueError(f"--entropic_lambda={entropic_lambda}: expected > 0")
    model.check_generator()
    held = eval_harness.load_split(model, data_dir, split, max_examples)
    fake = generator_draws(model, num_generated, temperature, seed)
    parts: dict[str, list] = {"ll": [], "labels": [], "iters": [], "err": []}
    with tqdm(total=held.count, unit="img", desc="surrogate", disable=not show_progress) as bar:
        for images, labels in held.batches(batch_size, with_labels=True):
            real = (tf.reshape(tf.cast(images, tf.float64), [len(images), -1]) + 0.5) / 256.0
            out = surrogate.surrogate_log_likelihood(real, fake, entropic_lambda, max_iters,
                                                     tolerance)
            parts["ll"].append(out["log_likelihood"].numpy())
            parts["labels"].append(labels.numpy())
            parts["iters"].append(out["iterations"])
            parts["err"].append(out["marginal_error"])
            bar.update(len(images))
    ll = np.concatenate(parts["ll"])
    return {"log_likelihood_nats": ll,
            "bits_per_dim": np.asarray(metrics.bits_per_dim(ll, model.config.image_shape)),
            "labels": np.concatenate(parts["labels"]), "iterations": np.array(parts["iters"]),
            "marginal_error": np.array(parts["err"]), "generated": num_generated,
            "entropic_lambda": entropic_lambda, "temperature": temperature}


def summarize(scores: dict[str, Any]) -> dict[str, Any]:
    """Means with standard errors, plus the Sinkhorn diagnostics, as plain numbers."""
    ll_mean, ll_se = metrics.mean_and_stderr(scores["log_likelihood_nats"])
    bpd_mean, bpd_se = metrics.mean_and_stderr(scores["bits_per_dim"])
    return {"log_likelihood_nats": ll_mean, "log_likelihood_stderr": ll_se,
            "bpd": bpd_mean, "bpd_stderr": bpd_se,
            "num_examples": int(len(scores["log_likelihood_nats"])),
            "num_generated": int(scores["generated"]),
            "entropic_lambda": float(scores["entropic_lambda"]),
            "temperature": float(scores["temperature"]),
            "sinkhorn_iterations_max": int(scores["iterations"].max()),
            "sinkhorn_marginal_error_max": float(scores["marginal_error"].max())}


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The CLI's flags (defined only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "Model directory written by pipeline.train.")
    flags.DEFINE_string("data_dir", None, "Preprocessed data set of the images to score.")
    flags.DEFINE_string("split", "validation", "Split of --data_dir to score.")
    flags.DEFINE_integer("num_generated", 2000, "Generator draws M coupled with each batch.")
    flags.DEFINE_float("entropic_lambda", 5.0,
                       "lambda of the entropic model (squared-distance loss on [0, 1] pixels; "
                       "the model's per-pixel noise variance is lambda / 2).")
    flags.DEFINE_integer("batch_size", 500, "Real images coupled at once (larger: tighter).")
    flags.DEFINE_integer("max_examples", None, "Score at most this many images.")
    flags.DEFINE_float("temperature", 0.0, "Temperature of the generator draws.")
    flags.DEFINE_integer("seed", 0, "Seed of the generator draws.")
    flags.DEFINE_integer("sinkhorn_iters", 1000, "Most Sinkhorn iterations per batch.")
    flags.DEFINE_float("sinkhorn_tolerance", 1e-6, "Stop when N * row sums are within this of 1.")
    flags.DEFINE_string("output_npz", None, "Write per-image values (nats, bits/dim, labels).")
    flags.DEFINE_string("mlflow_tracking_uri", "", "MLflow tracking URI ('' = the one recorded "
                        "in --model_dir, else MLflow's default).")
    flags.DEFINE_boolean("show_progress", True, "Progress bar.")
    flags.mark_flags_as_required(["model_dir", "data_dir"])


def main(argv):
    from artifacts import tracking

    model, step = eval_harness.start_cli(argv, FLAGS.model_dir, FLAGS.mlflow_tracking_uri)
    scores = surrogate_scores(
        model, FLAGS.data_dir, FLAGS.split, num_generated=FLAGS.num_generated,
        entropic_lambda=FLAGS.entropic_lambda, batch_size=FLAGS.batch_size,
        temperature=FLAGS.temperature, seed=FLAGS.seed, max_examples=FLAGS.max_examples,
        max_iters=FLAGS.sinkhorn_iters, tolerance=FLAGS.sinkhorn_tolerance,
        show_progress=FLAGS.show_progress)
    summary = summarize(scores)
    if FLAGS.output_npz:
        np.savez(FLAGS.output_npz, log_likelihood_nats=scores["log_likelihood_nats"],
                 bits_per_dim=scores["bits_per_dim"], labels=scores["labels"])
    tracking.log_results(FLAGS.model_dir, summary, f"surrogate/{FLAGS.split}")
    if not math.isfinite(summary["log_likelihood_nats"]):
        log.warning("non-finite surrogate: try a larger --entropic_lambda")
    print(json.dumps({"model_dir": os.path.abspath(FLAGS.model_dir), "step": step,
                      "variant": model.spec.name, "data_dir": os.path.abspath(FLAGS.data_dir),
                      "split": FLAGS.split, **summary}, indent=2))


if __name__ == "__main__":
    from artifacts.cli import user_errors

    define_flags()
    app.run(user_errors("python -m pipeline.surrogate_likelihood")(main))
