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
from tqdm import tqdm

from artifacts import model_io
from artifacts.cli import setup_logging
from pipeline import data as data_lib
from tfp_models import flows, metrics
from tfp_models.hybrid import HybridModel, row_noise

log = logging.getLogger(__name__)
BINARIZATION = ("fixed: b_i = 1[u_i < x_i / 255], u_i ~ U[0,1)^D keyed on (image index i "
                "in the split, seed)")


def split_batches(model: HybridModel, data_dir: str, split: str, batch_size: int,
                  max_examples: int | None = None) -> tuple[tf.data.Dataset, int]:
    """(uint8 batches [B, H, W, C] of the first ``max_examples`` images of ``split`` in
    file order, their count), after checking the split exists and matches the model."""
    info = data_lib.read_dataset_info(data_dir)
    if tuple(info.image_shape) != tuple(model.config.image_shape):
        raise ValueError(f"data set {data_dir!r} holds {tuple(info.image_shape)} images, the "
                         f"model expects {tuple(model.config.image_shape)}")
    if split not in info.split_counts:
        raise ValueError(f"split {split!r} not in {data_dir!r}; available: {sorted(info.split_counts)}")
    total = info.split_counts[split] if max_examples is None else min(max_examples, info.split_counts[split])
    ds = data_lib.make_image_dataset(info, split, batch_size, shuffle=False, repeat=False,
                                     drop_remainder=False).unbatch().take(total).batch(batch_size)
    return ds, total


def dequantized_inputs(model: HybridModel, images: tf.Tensor, index: tf.Tensor,
                       batch_size: int, seed: int) -> tf.Tensor:
    """The model's input for uint8 ``images`` [B, H, W, C], batch ``index`` of a split read in
    file order: x~ = (x + u) / 256 with u keyed on (seed, batch index); for the Bernoulli
    decoder u is keyed on (image index in the split, seed) instead, so the binarization
    1[u < x / 255] of each held-out image is fixed whatever the batch size."""
    if getattr(model, "binary", False):
        rows = tf.cast(index, tf.int64) * batch_size + tf.range(
            tf.shape(images, out_type=tf.int64)[0])
        noise = row_noise(rows, tuple(model.config.image_shape), 7919 + seed,
                          tf.random.stateless_uniform)
    else:
        noise = tf.random.stateless_uniform(tf.shape(images), seed=tf.stack([seed, index]))
    return flows.dequantize_images(images, noise)


def _split_log_prob_bounds(model: HybridModel, data_dir: str, split: str, batch_size: int,
                           importance_samples: int, seed: int, max_examples: int | None,
                           show_progress: bool, desc: str) -> tuple[dict[str, np.ndarray], int]:
    """Per-image lower bounds of ln p in nats over a split: {"elbo": [n], "iw": [n] (K > 1,
    latent variants)} float64, and n."""
    if importance_samples < 1:
        raise ValueError(f"importance_samples={importance_samples}: expected >= 1")
    ds, total = split_batches(model, data_dir, split, batch_size, max_examples)
    iw = model.spec.latent and importance_samples > 1
    latent_dim = model.config.latent_dim

    @tf.function
    def bounds(images, index):
        x = dequantized_inputs(model, images, index, batch_size, seed)
        out = {}
        if model.spec.latent:  # posterior noise seeded too: the numbers are reproducible
            n = tf.shape(images)[0]
            eps1 = tf.random.stateless_normal([n, 1, latent_dim], seed=tf.stack([seed, -1 - index]))
            out["elbo"] = model.log_prob_bound(x, 1, eps1)
            if iw:
                eps = tf.random.stateless_normal([n, importance_samples, latent_dim],
                                                 seed=tf.stack([seed + 1, -1 - index]))
                out["iw"] = model.log_prob_bound(x, importance_samples, eps)
        else:
            out["elbo"] = model.log_prob_bound(x, 1)
        return out

    values: dict[str, list] = {"elbo": [], "iw": []}
    with tqdm(total=total, desc=f"{desc} {split}", unit="img", disable=not show_progress) as bar:
        for i, images in enumerate(ds):
            out = bounds(images, tf.constant(i, tf.int32))
            for k, v in out.items():
                values[k].append(v.numpy().astype(np.float64))
            bar.update(int(images.shape[0]))
    return {k: np.concatenate(v) for k, v in values.items() if v}, total


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
    values, total = _split_log_prob_bounds(model, data_dir, split, batch_size,
                                           importance_samples, seed, max_examples,
                                           show_progress, "bpd")
    shape = model.config.image_shape
    bpd, stderr = metrics.mean_and_stderr(metrics.bits_per_dim(values["elbo"], shape))
    result: dict[str, Any] = {"split": split, "num_examples": total, "bpd": bpd, "bpd_stderr": stderr,
                              "kind": "exact" if not model.spec.latent else "elbo_bound"}
    if "iw" in values:
        result["bpd_iw"], result["bpd_iw_stderr"] = metrics.mean_and_stderr(
            metrics.bits_per_dim(values["iw"], shape))
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
    values, total = _split_log_prob_bounds(model, data_dir, split, batch_size,
                                           importance_samples, seed, max_examples,
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
    ds, total = split_batches(model, data_dir, split, batch_size, max_examples)
    d = model.config.latent_dim

    @tf.function
    def latent_terms(images, index):
        x = dequantized_inputs(model, images, index, batch_size, seed)
        params = model.encoder(x)
        out = {"mean": model.posterior.representative(params)}
        if model.has_analytic_kl:
            out["kl_dims"] = model.posterior.analytic_kl_per_dim(params)
            out["kl"] = tf.reduce_sum(out["kl_dims"], axis=-1)
        else:
            eps = tf.random.stateless_normal([1, tf.shape(images)[0], d],
                                             seed=tf.stack([seed, -1 - index]))
            z, log_q = model.posterior.sample_and_log_prob(params, 1, eps)
            out["kl"] = log_q[0] - model.prior.log_prob(z[0])
        return out

    parts: dict[str, list] = {}
    with tqdm(total=total, desc=f"latent {split}", unit="img", disable=not show_progress) as bar:
        for i, images in enumerate(ds):
            for k, v in latent_terms(images, tf.constant(i, tf.int32)).items():
                parts.setdefault(k, []).append(v.numpy().astype(np.float64))
            bar.update(int(images.shape[0]))
    kl_mean, kl_stderr = metrics.mean_and_stderr(np.concatenate(parts["kl"]))
    means = np.concatenate(parts["mean"])
    variances = means.var(axis=0, ddof=1) if len(means) > 1 else np.zeros(d)
    result: dict[str, Any] = {
        "split": split, "num_examples": total, "latent_dim": d, "kl_mean": kl_mean,
        "kl_stderr": kl_stderr, "active_units": int((variances > ACTIVE_UNIT_THRESHOLD).sum()),
        "posterior_mean_variance": [float(v) for v in variances]}
    if "kl_dims" in parts:
        result["kl_per_dim"] = [float(v) for v in np.concatenate(parts["kl_dims"]).mean(axis=0)]
    return result


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
    without a fingerprint, raise ``beam_jobs.fid_math.StatisticsError`` before any sample
    is drawn."""
    from beam_jobs import fid

    fid.check_reference_stats(reference_stats, extractor, extractor_path)
    kwargs = {} if pr_max_samples is None else {"pr_max_samples": pr_max_samples}
    return fid.evaluate_samples(model_dir, num_samples, reference_stats, extractor,
                                extractor_path, temperature=temperature, seed=seed,
                                pipeline_args=pipeline_args, source_kind="model_dir", **kwargs)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The CLI's flags (defined only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "Model directory written by pipeline.train.")
    flags.DEFINE_string("data_dir", None, "Preprocessed data set (for BPD).")
    flags.DEFINE_string("split", "validation", "Split to score.")
    flags.DEFINE_integer("importance_samples", 1, "K of the importance-weighted bound (VAE variants).")
    flags.DEFINE_integer("batch_size", 100, "Images per batch.")
    flags.DEFINE_integer("max_examples", None, "Score at most this many images of the split.")
    flags.DEFINE_integer("seed", 0, "Seed of the dequantization noise (for a Bernoulli-decoder "
                         "model: of the fixed binarization of the split), the posterior noise "
                         "and the samples.")
    flags.DEFINE_integer("fid_samples", 0, "If > 0, FID/KID/IS/precision/recall of this many "
                         "samples.")
    flags.DEFINE_integer("pr_max_samples", 10000, "Feature vectors per side for precision/"
                         "recall (a deterministic subset if more; 0: none).")
    flags.DEFINE_string("extractor", "mnist_classifier", "Feature extractor (beam_jobs.extractors).")
    flags.DEFINE_string("extractor_path", None, "Local path of the extractor.")
    flags.DEFINE_string("reference_stats", None, ".npz reference statistics (mu, sigma; "
                        "pr_features for precision/recall: beam_jobs.fid --save_pr_features).")
    flags.DEFINE_float("temperature", 1.0, "Sampling temperature for FID.")
    flags.DEFINE_string("mlflow_tracking_uri", "", "MLflow tracking URI ('' = the one recorded "
                        "in --model_dir, else MLflow's default).")


def main(argv):
    del argv
    setup_logging()
    from artifacts import tracking

    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required")
    tracking.configure(FLAGS.mlflow_tracking_uri or None, FLAGS.model_dir)
    model, step = model_io.load_trained_model(FLAGS.model_dir)
    results: dict[str, Any] = {"model_dir": os.path.abspath(FLAGS.model_dir), "step": step,
                               "variant": model.spec.name}
    checked = contextlib.nullcontext()
    if FLAGS.data_dir:  # the shards against dataset.json; a corrupt record: one line
        checked = data_lib.damaged_data_errors(data_lib.read_checked_dataset_info(FLAGS.data_dir))
    with checked:
        _evaluate_data(model, results)
    _evaluate_samples(results)
    print(json.dumps(results, indent=2, default=str))


def no_bpd_reason(model: HybridModel) -> str | None:
    """Why ``--data_dir`` gives no bits/dim for ``model`` (None if it does)."""
    if model.spec.has_likelihood or model.binary:
        return None
    return (f"variant {model.spec.name!r} defines no likelihood (a GAN has no density), so "
            "there are no bits/dim; --data_dir is used only for the latent statistics of "
            "variants with an encoder")


def _evaluate_data(model: HybridModel, results: dict[str, Any]) -> None:
    """The --data_dir parts of the report: bits/dim (or nats of binarized images), latent
    use; for a model without likelihood the reason there is no bits/dim."""
    from artifacts.tracking import log_results

    if FLAGS.data_dir and no_bpd_reason(model):
        results["bpd_note"] = no_bpd_reason(model)
        log.warning("%s", results["bpd_note"])
    if FLAGS.data_dir and model.binary:  # binarized images: nats, no 8-bit bits/dim
        results["nll_binarized"] = evaluate_binary_nll(
            model, FLAGS.data_dir, FLAGS.split, FLAGS.batch_size, FLAGS.importance_samples,
            FLAGS.seed, FLAGS.max_examples)
        log_results(FLAGS.model_dir, results["nll_binarized"], f"eval/{FLAGS.split}")
    elif FLAGS.data_dir and model.spec.has_likelihood:
        results["bpd"] = evaluate_bpd(model, FLAGS.data_dir, FLAGS.split, FLAGS.batch_size,
                                      FLAGS.importance_samples, FLAGS.seed, FLAGS.max_examples)
        log_results(FLAGS.model_dir, results["bpd"], f"eval/{FLAGS.split}")
    if FLAGS.data_dir and model.encoder is not None:
        results["latent"] = evaluate_latent(model, FLAGS.data_dir, FLAGS.split, FLAGS.batch_size,
                                            FLAGS.seed, FLAGS.max_examples)
        log_results(FLAGS.model_dir, results["latent"], f"eval/{FLAGS.split}/latent")


def _evaluate_samples(results: dict[str, Any]) -> None:
    """FID/KID/IS/precision/recall of --fid_samples samples, if asked for."""
    from artifacts.tracking import log_results

    if FLAGS.fid_samples > 0:
        if not (FLAGS.extractor_path and FLAGS.reference_stats):
            raise app.UsageError("--fid_samples needs --extractor_path and --reference_stats")
        from beam_jobs.fid_math import StatisticsError

        try:
            results["samples"] = evaluate_samples(
                FLAGS.model_dir, FLAGS.fid_samples, FLAGS.extractor, FLAGS.extractor_path,
                FLAGS.reference_stats, FLAGS.temperature, FLAGS.seed,
                pr_max_samples=FLAGS.pr_max_samples)
        except StatisticsError as e:  # a user error: one line, no traceback
            raise SystemExit(f"error: {e}") from None
        results["samples"]["temperature"] = FLAGS.temperature
        log_results(FLAGS.model_dir, results["samples"],
                    f"eval/samples_t{FLAGS.temperature:g}")


if __name__ == "__main__":
    from artifacts.cli import user_errors

    define_flags()
    app.run(user_errors("python -m pipeline.evaluate")(main))
