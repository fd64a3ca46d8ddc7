"""The evaluation harness: what every evaluation of a trained model shares.

* **The split** (:func:`load_split`): ``dataset.json`` read, its image shape checked
  against the model's and the split's existence checked (one-line ``ValueError``\\ s, as
  the command lines print them), then the first ``max_examples`` images in file order (or
  after a seeded shuffle), with their int64 labels where the data set has them (-1 where
  it does not): :class:`EvalSplit`.
* **Seeded inputs and bounds**: the split's seeded dequantization
  (:func:`dequantized_inputs`; for a Bernoulli-decoder model a fixed binarization keyed on
  the image index), one seeded posterior draw per image (:func:`posterior_draw`), a
  function mapped over the split's batches (:func:`map_split`) and the per-image lower
  bounds on ln p (:func:`split_log_prob_bounds`).
* **Seeded samples** (:func:`draw_samples`): row i keyed on the row seed
  seed * 2^31 + offset + i alone, whatever the batch; uint8 rows are those of the
  export's ``sample`` signature (``HybridModel.sample_rows``), or the same rows before
  quantization.
* **Bits/dim for either decoder** (:func:`bits_per_dim`): 8-bit bits/dim for the
  Gaussian (feature-space) decoder, bits per binary pixel for the Bernoulli decoder
  (:func:`tfp_models.metrics.decoder_bits_per_dim`).
* **The metric registry**: a metric is one function ``compute(model, request) -> dict``
  decorated with :func:`register_metric`. ``pipeline.evaluate`` (where the built-in
  metrics are registered: ``nll_binarized``, ``bpd``, ``latent``) runs every registered
  metric that applies to the model (:func:`run_metrics`): its result is the JSON entry
  under its name, its numbers are MLflow metrics ``<mlflow_prefix>/<key>`` on the model's
  run, and :func:`summary_lines` (the quickstart's summary) prints its one-line summary.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from artifacts.tfrecord_dataset import make_image_dataset
from pipeline import data as data_lib
from tfp_models import flows, metrics
from tfp_models.hybrid import HybridModel
from tfp_models.row_seeds import row_noise, sample_row_seeds

# --------------------------------------------------------------------------- the model

def start_cli(argv: list[str], model_dir: str, mlflow_tracking_uri: str,
              data_dir: str | None = None) -> tuple[HybridModel, int]:
    """The start of an evaluation command line's ``main``: no positional arguments, the
    logging setup, ``--model_dir`` (and ``data_dir`` if given) must exist, MLflow pointed
    at ``mlflow_tracking_uri`` or the model's store; returns (model, step)."""
    from absl import app

    from artifacts import model_io, tracking
    from artifacts.cli import setup_logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    setup_logging()
    for flag, path in (("model_dir", model_dir), ("data_dir", data_dir)):
        if path is not None and not os.path.isdir(path):
            raise FileNotFoundError(f"--{flag}={path!r} does not exist")
    tracking.configure(mlflow_tracking_uri or None, model_dir)
    return model_io.load_trained_model(model_dir)


# --------------------------------------------------------------------------- the split

def check_image_shape(model: HybridModel, info: data_lib.DatasetInfo, data_dir: str) -> None:
    """Raises ValueError unless the data set's images have the model's shape."""
    if tuple(info.image_shape) != tuple(model.config.image_shape):
        raise ValueError(f"data set {data_dir!r} holds {list(info.image_shape)} images, the "
                         f"model was trained on {list(model.config.image_shape)}")


@dataclasses.dataclass(frozen=True)
class EvalSplit:
    """The first ``count`` images of ``split`` of a data set (:func:`load_split`)."""

    info: data_lib.DatasetInfo
    split: str
    count: int

    @classmethod
    def of(cls, info: data_lib.DatasetInfo, split: str, limit: int | None = None) -> EvalSplit:
        """All of ``split``, or its first ``limit`` images; the split must exist."""
        info.check_split(split)
        count = info.split_counts[split]
        return cls(info, split, count if limit is None else min(limit, count))

    def limited(self, limit: int) -> EvalSplit:
        """The first ``limit`` images of this one."""
        return dataclasses.replace(self, count=min(limit, self.count))

    def batches(self, batch_size: int, *, with_labels: bool = False,
                shuffle_seed: int | None = None) -> tf.data.Dataset:
        """uint8 batches [B, H, W, C] (or (images, int64 labels [B]), -1 where unknown) of
        the ``count`` images: in file order, or the first ``count`` of a shuffle seeded
        by ``shuffle_seed``; the last batch may be short."""
        ds = make_image_dataset(
            self.info, self.split, batch_size, shuffle=shuffle_seed is not None, repeat=False,
            seed=shuffle_seed or 0, drop_remainder=False, with_labels=with_labels)
        return ds.unbatch().take(self.count).batch(batch_size)

    def images(self, shuffle_seed: int | None = None, batch_size: int = 500) -> np.ndarray:
        """The ``count`` images as one uint8 array [count, H, W, C] (see :meth:`batches`)."""
        parts = [b.numpy() for b in self.batches(batch_size, shuffle_seed=shuffle_seed)]
        return np.concatenate(parts) if parts else np.zeros(
            (0,) + tuple(self.info.image_shape), np.uint8)


def load_split(model: HybridModel, data_dir: str, split: str,
               max_examples: int | None = None) -> EvalSplit:
    """``split`` of ``data_dir`` for ``model`` (at most ``max_examples`` images), after
    checking that the images have the model's shape and that the split exists."""
    info = data_lib.read_dataset_info(data_dir)
    check_image_shape(model, info, data_dir)
    return EvalSplit.of(info, split, max_examples)


def split_batches(model: HybridModel, data_dir: str, split: str, batch_size: int,
                  max_examples: int | None = None) -> tuple[tf.data.Dataset, int]:
    """(uint8 batches [B, H, W, C] of the first ``max_examples`` images of ``split`` in
    file order, their count), after :func:`load_split`'s checks."""
    held = load_split(model, data_dir, split, max_examples)
    return held.batches(batch_size), held.count


# --------------------------------------------------------------- seeded inputs and bounds

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


def posterior_draw(model: HybridModel, params: tf.Tensor, index: tf.Tensor,
                   seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    """One draw z ~ q(z|x) per image of batch ``index`` and its ln q(z|x): ([B, d], [B]),
    from the encoder's ``params`` [B, ...], with noise keyed on (seed, -1 - index)."""
    eps = tf.random.stateless_normal([1, tf.shape(params)[0], model.config.latent_dim],
                                     seed=tf.stack([seed, -1 - index]))
    z, log_q = model.posterior.sample_and_log_prob(params, 1, eps)
    return z[0], log_q[0]


def map_split(held: EvalSplit, batch_size: int,
              fn: Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]],
              desc: str = "", show_progress: bool = False) -> dict[str, np.ndarray]:
    """``fn(images uint8 [B, H, W, C], batch index int32)`` -> {name: [B, ...]} on every
    batch of ``held`` in file order; each name's values concatenated, float64."""
    parts: dict[str, list] = {}
    with tqdm(total=held.count, desc=desc, unit="img", disable=not show_progress) as bar:
        for i, images in enumerate(held.batches(batch_size)):
            for k, v in fn(images, tf.constant(i, tf.int32)).items():
                parts.setdefault(k, []).append(v.numpy().astype(np.float64))
            bar.update(int(images.shape[0]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def split_log_prob_bounds(model: HybridModel, data_dir: str, split: str, batch_size: int,
                          importance_samples: int, seed: int, max_examples: int | None,
                          show_progress: bool, desc: str) -> tuple[dict[str, np.ndarray], int]:
    """Per-image lower bounds of ln p in nats over a split: {"elbo": [n], "iw": [n] (K > 1,
    latent variants)} float64, and n. Dequantization and posterior noise are seeded
    (:func:`dequantized_inputs`; the posterior's on (seed, -1 - batch index), the IW
    bound's on (seed + 1, -1 - batch index)): the numbers are reproducible."""
    if importance_samples < 1:
        raise ValueError(f"importance_samples={importance_samples}: expected >= 1")
    held = load_split(model, data_dir, split, max_examples)
    iw = model.spec.latent and importance_samples > 1
    latent_dim = model.config.latent_dim

    @tf.function
    def bounds(images, index):
        x = dequantized_inputs(model, images, index, batch_size, seed)
        out = {}
        if model.spec.latent:
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

    return map_split(held, batch_size, bounds, f"{desc} {split}", show_progress), held.count


def bits_per_dim(model: HybridModel, log_prob_nats):
    """Per-image bits/dim of ln-likelihoods in nats for the model's decoder: 8-bit
    bits/dim, or bits per binary pixel for a Bernoulli-decoder model."""
    return metrics.decoder_bits_per_dim(log_prob_nats, model.config.image_shape,
                                        getattr(model, "binary", False))


# --------------------------------------------------------------------------- samples

def draw_samples(model: HybridModel, num: int, temperature: float, seed: int,
                 offset: int = 0, batch_size: int = 250, show_progress: bool = False,
                 desc: str = "samples", quantize: bool = True) -> np.ndarray:
    """``num`` model samples [num, H, W, C]; row i from row seed seed * 2^31 + offset + i
    (reproducible whatever ``batch_size``): uint8, the rows of ``model.sample_rows`` (the
    export's ``sample`` signature), or with ``quantize=False`` the same rows before
    quantization, float32 in [0, 1] (``model.generate_rows``)."""
    row_seeds = sample_row_seeds(seed, offset, num)
    draw = model.sample_rows if quantize else model.generate_rows
    out = []
    with tqdm(total=num, unit="img", desc=desc, disable=not show_progress) as bar:
        for start in range(0, num, batch_size):
            seeds = row_seeds[start:start + batch_size]
            out.append(draw(tf.constant(seeds), tf.fill([len(seeds)], float(temperature))).numpy())
            bar.update(len(seeds))
    if out:
        return np.concatenate(out)
    return np.zeros((0,) + tuple(model.config.image_shape), np.uint8 if quantize else np.float32)


# --------------------------------------------------------------------------- metrics

@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """What a metric is asked to evaluate besides the model (``pipeline.evaluate``'s flags)."""

    data_dir: str
    split: str = "validation"
    batch_size: int = 100
    importance_samples: int = 1
    seed: int = 0
    max_examples: int | None = None
    show_progress: bool = True


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered metric (:func:`register_metric`)."""

    name: str
    compute: Callable[[HybridModel, EvalRequest], dict[str, Any]]
    applies: Callable[[HybridModel], bool]
    mlflow_prefix: str
    label: str
    summary: Callable[[dict[str, Any]], str] | None


# The registry, in registration order (the order of evaluate's JSON and summary).
METRICS: dict[str, Metric] = {}
# Top-level keys of evaluate's JSON that are not metrics.
RESERVED_NAMES = frozenset({"model_dir", "step", "variant", "bpd_note", "samples"})


def register_metric(name: str, *, applies: Callable[[HybridModel], bool] = lambda model: True,
                    mlflow_prefix: str = "eval/{split}/{name}", label: str | None = None,
                    summary: Callable[[dict[str, Any]], str] | None = None):
    """Decorator registering ``compute(model, request: EvalRequest) -> dict`` as metric
    ``name``: run by ``pipeline.evaluate --data_dir`` on every model for which
    ``applies(model)``; the dict is the JSON entry ``name`` and its numeric values are
    MLflow metrics ``<mlflow_prefix>/<key>`` (``{split}`` and ``{name}`` filled in);
    ``summary(result)`` is its line in the quickstart's summary, after ``label``
    (``{split}`` filled in; default: the name)."""
    if name in RESERVED_NAMES or name in METRICS:
        raise ValueError(f"metric name {name!r} is taken")

    def register(compute: Callable[[HybridModel, EvalRequest], dict[str, Any]]):
        METRICS[name] = Metric(name, compute, applies, mlflow_prefix, label or name, summary)
        return compute

    return register


def run_metrics(model: HybridModel, request: EvalRequest,
                model_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """{name: result} of every registered metric that applies to ``model``, in
    registration order; each result is logged to ``model_dir``'s MLflow run (if given)
    as soon as it is computed."""
    from artifacts.tracking import log_results

    results = {}
    for metric in list(METRICS.values()):
        if not metric.applies(model):
            continue
        results[metric.name] = metric.compute(model, request)
        if model_dir is not None:
            log_results(model_dir, results[metric.name],
                        metric.mlflow_prefix.format(split=request.split, name=metric.name))
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The summary line of every registered metric in ``results`` (evaluate's JSON) that
    has a summary: '  <label, 17 wide> <summary>'."""
    lines = []
    for metric in METRICS.values():
        result = results.get(metric.name)
        if result and metric.summary is not None:
            label = metric.label.format(split=result.get("split", ""))
            lines.append(f"  {label:<17} {metric.summary(result)}")
    return lines
