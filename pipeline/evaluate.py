"""Evaluate a trained model: bits/dim on a split, and FID/KID/IS/precision/recall of its
samples.

    python -m pipeline.evaluate --model_dir=runs/x --data_dir=data/mnist --split=validation \
        [--importance_samples=K] [--fid_samples=N --extractor=mnist_classifier \
         --extractor_path=work/mnist_classifier --reference_stats=ref.npz]

BPD: exact for ``flow``/``flow_wgan``/``flowgan``; for the VAE variants the ELBO bound and, with
K > 1, the importance-weighted bound (tighter, still an upper bound on bits/dim). Each
image is dequantized once with seeded uniform noise; the mean and its standard error over
the split are reported. FID/KID/IS and precision/recall (Kynkaanniemi et al. 2019, k = 3,
at most ``--pr_max_samples`` feature vectors per side): the Beam job of
:mod:`beam_jobs.fid` draws the samples straight from the model directory (the rows of the
export's ``sample`` signature); precision/recall need reference statistics written with
``beam_jobs.fid --save_pr_features`` (else they are null and ``pr_note`` says why).
Binary data (``decoder='bernoulli'``): the held-out images are binarized once,
b_i = 1[u_i < x_i / 255] with u_i keyed on (the image's index in the split, ``--seed``), a
fixed seeded binarization independent of the batch size, and the report is -ln P(b) in
nats per image (ELBO bound and IW bound; ``nll_binarized``), as the binarized-MNIST
literature reports it; bits/dim of 8-bit data do not apply.
Latent use (VAE variants): the mean KL(q(z|x) || p(z)) on the split and the number of
active latent units (Burda et al., 2016). Sample quality a reader can interpret without
Inception (MNIST classifier): the confident-sample rate (top class probability >= 0.9)
and the label coverage (entropy of the predicted-label histogram / ln 10).
Results are printed as JSON and logged to the model directory's MLflow run (sample
metrics as ``eval/samples_t<T>/<name>``: ``fid``, ``kid_mean``, ``is_mean``,
``precision``, ``recall``, ...).
The --data_dir numbers are the metrics registered below with
:func:`pipeline.eval_harness.register_metric` (split loading, seeded noise and bits/dim
come from :mod:`pipeline.eval_harness`); a new metric is one more registered function.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app, flags

from artifacts import memory_errors, model_io
from artifacts.cli import setup_logging
from pipeline import config_flags, eval_harness
from pipeline import data as data_lib
from pipeline.eval_configs import EvalConfig
from pipeline.eval_harness import EvalRequest
from tfp_models import metrics
from tfp_models.hybrid import HybridModel

log = logging.getLogger(__name__)
BINARIZATION = ("fixed: b_i = 1[u_i < x_i / 255], u_i ~ U[0,1)^D keyed on (image index i "
                "in the split, seed)")


def evaluate_bpd(model: HybridModel, data_dir: str, split: str = "validation",
                 batch_size: int = 100, importance_samples: int = 1, seed: int = 0,
                 max_examples: int | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Bits/dim of a split: {"bpd" (ELBO bound, or exact for flows), "bpd_stderr",
    ["bpd_iw", "bpd_iw_stderr", "importance_samples"], "num_examples", "kind"}.
    Bernoulli-decoder models have no bits/dim of 8-bit data: :func:`evaluate_binary_nll`."""
    if not model.spec.has_likelihood:
        raise ValueError(f"variant {model.spec.name!r} defines no likelihood; no BPD to report")
    if getattr(model, "binary", False):
        raise ValueError("a Bernoulli-decoder model scores binarized images in nats; use "
                         "evaluate_binary_nll, not bits/dim of 8-bit data")
    values, total = eval_harness.split_log_prob_bounds(
        model, data_dir, split, batch_size, importance_samples, seed, max_examples,
        show_progress, "bpd")
    bpd, stderr = metrics.mean_and_stderr(eval_harness.bits_per_dim(model, values["elbo"]))
    result: dict[str, Any] = {"split": split, "num_examples": total, "bpd": bpd, "bpd_stderr": stderr,
                              "kind": "exact" if not model.spec.latent else "elbo_bound"}
    if "iw" in values:
        result["bpd_iw"], result["bpd_iw_stderr"] = metrics.mean_and_stderr(
            eval_harness.bits_per_dim(model, values["iw"]))
        result["importance_samples"] = importance_samples
    return result


def evaluate_binary_nll(model: HybridModel, data_dir: str, split: str = "validation",
                        batch_size: int = 100, importance_samples: int = 1, seed: int = 0,
                        max_examples: int | None = None, show_progress: bool = True,
                        per_image: bool = False) -> dict[str, Any]:
    """-ln P(b) in nats per image of the split's images binarized once (Bernoulli decoder;
    :data:`BINARIZATION`, keyed on ``seed``): {"nll_nats" (from the ELBO: an upper bound),
    "nll_nats_stderr", ["nll_nats_iw", "nll_nats_iw_stderr" (IW bound, K =
    "importance_samples"; tighter, still an upper bound in expectation)], "num_examples",
    "kind", "binarization", "units"}. Standard errors are over images. ``per_image``: also
    "per_image": {"nll_elbo_nats", ["nll_iw_nats"]} float64 [N] arrays (-ln P(b) bounds),
    in split order (the same images and binarization for every model at equal seed:
    paired comparisons)."""
    if not getattr(model, "binary", False):
        raise ValueError(f"model (decoder={model.config.decoder!r}) is not a Bernoulli-decoder "
                         "model of binary data; use evaluate_bpd")
    values, total = eval_harness.split_log_prob_bounds(
        model, data_dir, split, batch_size, importance_samples, seed, max_examples,
        show_progress, "nll")
    nll, stderr = metrics.mean_and_stderr(-values["elbo"])
    result: dict[str, Any] = {
        "split": split, "num_examples": total, "nll_nats": nll, "nll_nats_stderr": stderr,
        "kind": "elbo_bound_binarized", "binarization": f"{BINARIZATION}, seed {seed}",
        "units": "nats per image of the binarized image (-ln P(b)); not 8-bit bits/dim"}
    if "iw" in values:
        result["nll_nats_iw"], result["nll_nats_iw_stderr"] = metrics.mean_and_stderr(
            -values["iw"])
        result["importance_samples"] = importance_samples
    if per_image:
        result["per_image"] = {f"nll_{k}_nats": -v for k, v in values.items()}
    return result


ACTIVE_UNIT_THRESHOLD = 0.01
# The flags an out-of-memory error names (EvalConfig fields).
EVAL_SIZE_SETTINGS = ("batch_size", "importance_samples", "fid_samples", "pr_max_samples")


def evaluate_latent(model: HybridModel, data_dir: str, split: str = "validation",
                    batch_size: int = 100, seed: int = 0, max_examples: int | None = None,
                    show_progress: bool = True) -> dict[str, Any]:
    """How much the latent is used on a split: {"kl_mean", "kl_stderr" (KL(q(z|x) || p(z))
    per image, nats; analytic for 'diag' with the standard prior, one seeded Monte Carlo
    draw otherwise), "kl_per_dim" [d] (mean per latent dimension, analytic case only), "active_units" (Burda et
    al. 2016: dimensions u with Cov_x(E_q[z_u]) > 0.01; E_q[z] is the posterior mean,
    for flow posteriors the mean pushed through the flow), "latent_dim", "num_examples"}."""
    if model.encoder is None:
        raise ValueError(f"variant {model.spec.name!r} has no encoder; no latent to measure")
    held = eval_harness.load_split(model, data_dir, split, max_examples)
    d = model.config.latent_dim

    @tf.function
    def latent_terms(images, index):
        x = eval_harness.dequantized_inputs(model, images, index, batch_size, seed)
        params = model.encoder(x)
        out = {"mean": model.posterior.representative(params)}
        if model.has_analytic_kl:
            out["kl_dims"] = model.posterior.analytic_kl_per_dim(params)
            out["kl"] = tf.reduce_sum(out["kl_dims"], axis=-1)
        else:
            z, log_q = eval_harness.posterior_draw(model, params, index, seed)
            out["kl"] = log_q - model.prior.log_prob(z)
        return out

    parts = eval_harness.map_split(held, batch_size, latent_terms, f"latent {split}",
                                   show_progress)
    kl_mean, kl_stderr = metrics.mean_and_stderr(parts["kl"])
    means = parts["mean"]
    variances = means.var(axis=0, ddof=1) if len(means) > 1 else np.zeros(d)
    result: dict[str, Any] = {
        "split": split, "num_examples": held.count, "latent_dim": d, "kl_mean": kl_mean,
        "kl_stderr": kl_stderr, "active_units": int((variances > ACTIVE_UNIT_THRESHOLD).sum()),
        "posterior_mean_variance": [float(v) for v in variances]}
    if "kl_dims" in parts:
        result["kl_per_dim"] = [float(v) for v in parts["kl_dims"].mean(axis=0)]
    return result


# The metrics `python -m pipeline.evaluate --data_dir` reports, in this order: one
# function each, registered here (a new metric: one more such function; it then appears in
# the JSON, in MLflow and in the quickstart's summary).

def _bpd_summary(r: dict[str, Any]) -> str:
    iw = f", IW-{r['importance_samples']} bound {r['bpd_iw']:.3f}" if "bpd_iw" in r else ""
    return f"{r['bpd']:.3f} +- {r['bpd_stderr']:.3f} ({r['kind']}){iw}"


def _nll_summary(r: dict[str, Any]) -> str:
    iw = (f", IW-{r['importance_samples']} bound {r['nll_nats_iw']:.2f}"
          if "nll_nats_iw" in r else "")
    return f"{r['nll_nats']:.2f} +- {r['nll_nats_stderr']:.2f} nats per binarized image{iw}"


@eval_harness.register_metric("nll_binarized", applies=lambda m: m.binary,
                              mlflow_prefix="eval/{split}", label="{split} NLL",
                              summary=_nll_summary)
def _nll_binarized_metric(model: HybridModel, r: EvalRequest) -> dict[str, Any]:
    """Binarized images: nats, no 8-bit bits/dim."""
    return evaluate_binary_nll(model, r.data_dir, r.split, r.batch_size, r.importance_samples,
                               r.seed, r.max_examples, r.show_progress)


@eval_harness.register_metric("bpd", applies=lambda m: m.spec.has_likelihood and not m.binary,
                              mlflow_prefix="eval/{split}", label="{split} BPD",
                              summary=_bpd_summary)
def _bpd_metric(model: HybridModel, r: EvalRequest) -> dict[str, Any]:
    return evaluate_bpd(model, r.data_dir, r.split, r.batch_size, r.importance_samples,
                        r.seed, r.max_examples, r.show_progress)


@eval_harness.register_metric(
    "latent", applies=lambda m: m.encoder is not None, mlflow_prefix="eval/{split}/latent",
    summary=lambda r: (f"KL {r['kl_mean']:.1f} nats, {r['active_units']} of "
                       f"{r['latent_dim']} units active"))
def _latent_metric(model: HybridModel, r: EvalRequest) -> dict[str, Any]:
    return evaluate_latent(model, r.data_dir, r.split, r.batch_size, r.seed, r.max_examples,
                           r.show_progress)


def evaluate_samples(model_dir: str, num_samples: int, extractor: str, extractor_path: str,
                     reference_stats: str, temperature: float = 1.0, seed: int = 0,
                     pipeline_args: list[str] | None = None,
                     pr_max_samples: int | None = None) -> dict[str, Any]:
    """FID/KID/IS and precision/recall of ``num_samples`` samples drawn straight from
    ``model_dir`` (the rows of the export's ``sample`` signature, no export) by the Beam
    FID job (:func:`beam_jobs.fid.evaluate`: "fid", "kid_mean", "kid_std", "precision",
    "recall", "pr_k", "pr_num_samples", "pr_num_reference", "pr_note", "is_mean", ...).
    Precision/recall use at most ``pr_max_samples`` feature vectors per side (None: the
    job's default) and the reference file's ``pr_features``; without them they are None.
    Reference statistics of another extractor (fingerprint), protocol or image shape, or
    without a fingerprint, raise ``beam_jobs.fid.fid_math.StatisticsError`` before any sample
    is drawn."""
    from beam_jobs import fid

    fid.check_reference_stats(reference_stats, extractor, extractor_path)
    kwargs = {} if pr_max_samples is None else {"pr_max_samples": pr_max_samples}
    return fid.evaluate_samples(model_dir, num_samples, reference_stats, extractor,
                                extractor_path, temperature=temperature, seed=seed,
                                pipeline_args=pipeline_args, source_kind="model_dir", **kwargs)


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The CLI's flags, one per :class:`EvalConfig` field (defined only when run as a
    program)."""
    config_flags.define_flags(EvalConfig, flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> EvalConfig:
    """The parsed flags as an :class:`EvalConfig` (app.UsageError without --model_dir)."""
    return EvalConfig(**config_flags.values_from_flags(EvalConfig, flag_values))


def main(argv):
    del argv
    setup_logging()
    from artifacts import tracking

    cfg = config_from_flags()
    tracking.configure(cfg.mlflow_tracking_uri or None, cfg.model_dir)
    with memory_errors.out_of_memory("evaluating", memory_errors.size_settings(
            cfg, names=EVAL_SIZE_SETTINGS)):  # one line naming the flags to lower
        results = _evaluate(cfg)
    print(json.dumps(results, indent=2, default=str))


def _evaluate(cfg: EvalConfig) -> dict[str, Any]:
    model, step = model_io.load_trained_model(cfg.model_dir)
    results: dict[str, Any] = {"model_dir": os.path.abspath(cfg.model_dir), "step": step,
                               "variant": model.spec.name}
    checked = contextlib.nullcontext()
    if cfg.data_dir:  # the shards against dataset.json; a corrupt record: one line
        checked = data_lib.damaged_data_errors(data_lib.read_checked_dataset_info(cfg.data_dir))
    with checked:
        if cfg.data_dir:
            results.update(evaluate_data(model, cfg.model_dir, EvalRequest(
                cfg.data_dir, cfg.split, cfg.batch_size, cfg.importance_samples,
                cfg.seed, cfg.max_examples)))
    _evaluate_samples(cfg, results)
    return results


def no_bpd_reason(model: HybridModel) -> str | None:
    """Why ``--data_dir`` gives no bits/dim for ``model`` (None if it does)."""
    if model.spec.has_likelihood or model.binary:
        return None
    return (f"variant {model.spec.name!r} defines no likelihood (a GAN has no density), so "
            "there are no bits/dim; --data_dir is used only for the latent statistics of "
            "variants with an encoder")


def evaluate_data(model: HybridModel, model_dir: str | None,
                  request: EvalRequest) -> dict[str, Any]:
    """The --data_dir parts of the report: every registered metric that applies to the
    model (bits/dim or nats of binarized images, latent use, ...), each logged to
    ``model_dir``'s MLflow run; for a model without likelihood, "bpd_note" says why there
    is no bits/dim."""
    results: dict[str, Any] = {}
    if no_bpd_reason(model):
        results["bpd_note"] = no_bpd_reason(model)
        log.warning("%s", results["bpd_note"])
    results.update(eval_harness.run_metrics(model, request, model_dir))
    return results


def _evaluate_samples(cfg: EvalConfig, results: dict[str, Any]) -> None:
    """FID/KID/IS/precision/recall of --fid_samples samples, if asked for."""
    from artifacts.tracking import log_results

    if cfg.fid_samples > 0:
        if not (cfg.extractor_path and cfg.reference_stats):
            raise app.UsageError("--fid_samples needs --extractor_path and --reference_stats")
        from beam_jobs.fid.fid_math import StatisticsError

        try:
            results["samples"] = evaluate_samples(
                cfg.model_dir, cfg.fid_samples, cfg.extractor, cfg.extractor_path,
                cfg.reference_stats, cfg.temperature, cfg.seed,
                pr_max_samples=cfg.pr_max_samples)
        except StatisticsError as e:  # a user error: one line, no traceback
            raise SystemExit(f"error: {e}") from None
        results["samples"]["temperature"] = cfg.temperature
        log_results(cfg.model_dir, results["samples"], f"eval/samples_t{cfg.temperature:g}")


if __name__ == "__main__":
    from artifacts.cli import user_errors

    define_flags()
    app.run(user_errors("python -m pipeline.evaluate")(main))
