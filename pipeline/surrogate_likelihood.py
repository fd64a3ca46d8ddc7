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

from pipeline import config_flags, eval_harness
from pipeline.eval_configs import SurrogateConfig
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


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The CLI's flags, one per :class:`SurrogateConfig` field (--model_dir and --data_dir
    required; defined only when run as a program)."""
    config_flags.define_flags(SurrogateConfig, flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> SurrogateConfig:
    """The parsed flags as a :class:`SurrogateConfig`."""
    return SurrogateConfig(**config_flags.values_from_flags(SurrogateConfig, flag_values))


def main(argv):
    from artifacts import tracking

    cfg = config_from_flags()
    model, step = eval_harness.start_cli(argv, cfg.model_dir, cfg.mlflow_tracking_uri)
    scores = surrogate_scores(
        model, cfg.data_dir, cfg.split, num_generated=cfg.num_generated,
        entropic_lambda=cfg.entropic_lambda, batch_size=cfg.batch_size,
        temperature=cfg.temperature, seed=cfg.seed, max_examples=cfg.max_examples,
        max_iters=cfg.sinkhorn_iters, tolerance=cfg.sinkhorn_tolerance,
        show_progress=cfg.show_progress)
    summary = summarize(scores)
    if cfg.output_npz:
        np.savez(cfg.output_npz, log_likelihood_nats=scores["log_likelihood_nats"],
                 bits_per_dim=scores["bits_per_dim"], labels=scores["labels"])
    tracking.log_results(cfg.model_dir, summary, f"surrogate/{cfg.split}")
    if not math.isfinite(summary["log_likelihood_nats"]):
        log.warning("non-finite surrogate: try a larger --entropic_lambda")
    print(json.dumps({"model_dir": os.path.abspath(cfg.model_dir), "step": step,
                      "variant": model.spec.name, "data_dir": os.path.abspath(cfg.data_dir),
                      "split": cfg.split, **summary}, indent=2))


if __name__ == "__main__":
    from artifacts.cli import user_errors

    define_flags()
    app.run(user_errors("python -m pipeline.surrogate_likelihood")(main))
