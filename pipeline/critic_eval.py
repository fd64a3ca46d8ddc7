"""An independent Wasserstein critic of any model with a generator (Danihelka et al., 2017).

    python -m pipeline.critic_eval --model_dir=runs/flow --data_dir=data/mnist
        [--split=validation --critic_steps=2000 --batch_size=64 --learning_rate=1e-4
         --gp_weight=10 --temperature=1 --seed=0 --output_json=critic.json]

A fresh WGAN-GP critic (:mod:`tfp_models.critic`; the conv architecture of
:class:`tfp_models.networks.Discriminator` without spectral normalization, its own
weights: not the model's discriminator) is trained to separate the *training* images from
a pool of ``--train_samples`` model samples (``HybridModel.sample_rows`` at
``--temperature``). Every ``--eval_every`` steps it is evaluated on two pairs of sets:

* validation: the images of ``--split`` (held out from training) against as many *fresh*
  samples (other seeds than the training pool), E_heldout[D] - E_fresh[D]: the metric,
  an estimate of W1(data, model) in [0, 1]-pixel Euclidean units (lower is better);
* train: as many training images against the same number of the pool's samples, the
  critic's training-side value (above validation when the critic overfits).

Both sides are uint8 images shown to the critic at their bin centres (x + 0.5) / 256, so
real and generated images live on the same 256-level lattice. Prints a JSON summary
(final values, the standard error of the validation estimate, the curves); writes the
curves as a PNG (``--output_png``, default ``<model_dir>/critic/critic_<split>.png``) and
logs to the model directory's MLflow run: the curves as step metrics
``critic/<split>/{train,validation}_wasserstein_curve``, the summary as metrics
``critic/<split>/<name>`` (``validation_wasserstein``, ``validation_stderr``, ...), the
JSON and the PNG as artifacts under ``critic/``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app, flags
from tqdm import tqdm

from artifacts.tfrecord_dataset import make_image_dataset
from pipeline import config_flags, eval_harness
from pipeline import data as data_lib
from pipeline.eval_configs import CriticEvalConfig
from tfp_models import critic as critic_lib
from tfp_models import flows
from tfp_models.hybrid import HybridModel
from tfp_models.networks import Discriminator

log = logging.getLogger("pipeline.critic_eval")
# Seed offsets of the sample pools: the training pool and the fresh validation samples
# never share a row seed.
TRAIN_POOL_OFFSET, FRESH_OFFSET = 0, 1 << 30


# uint8 samples [num, H, W, C], row i from row seed seed * 2^31 + offset + i (the rows of
# ``model.sample_rows``, reproducible whatever the batch).
model_samples = eval_harness.draw_samples


def split_images(info: data_lib.DatasetInfo, split: str, limit: int | None = None,
                 seed: int | None = None) -> np.ndarray:
    """uint8 images [N, H, W, C] of a split (all, or the first ``limit`` after a shuffle
    seeded by ``seed``; no shuffle if seed is None)."""
    return eval_harness.EvalSplit.of(info, split, limit).images(shuffle_seed=seed)


def to_critic_inputs(images: np.ndarray | tf.Tensor) -> tf.Tensor:
    """uint8 [N, H, W, C] -> float32 bin centres (x + 0.5) / 256."""
    return flows.dequantize_images(tf.convert_to_tensor(images))


def scores(trainer: critic_lib.CriticTrainer, images: np.ndarray,
           batch_size: int = 500) -> np.ndarray:
    """Critic values D(x) [N] (float64) of uint8 images, in batches."""
    return np.concatenate([trainer.scores(to_critic_inputs(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)]).astype(np.float64)


def estimate(trainer: critic_lib.CriticTrainer, real: np.ndarray, fake: np.ndarray
             ) -> tuple[float, float]:
    """(E_real[D] - E_fake[D], its standard error sqrt(var_r / N + var_f / M)) on whole sets."""
    d_real, d_fake = scores(trainer, real), scores(trainer, fake)
    se = math.sqrt(d_real.var(ddof=1) / len(d_real) + d_fake.var(ddof=1) / len(d_fake))
    return float(d_real.mean() - d_fake.mean()), se


def critic_eval(model: HybridModel, data_dir: str, split: str = "validation", *,
                critic_steps: int = 2000, batch_size: int = 64, learning_rate: float = 1e-4,
                gp_weight: float = 10.0, critic_channels: int = 32, temperature: float = 1.0,
                seed: int = 0, train_samples: int = 10000, eval_every: int = 100,
                max_eval_examples: int | None = None, show_progress: bool = True
                ) -> dict[str, Any]:
    """Trains a fresh critic and returns {'validation_wasserstein', 'validation_stderr',
    'train_wasserstein', 'curves': {'step', 'train', 'validation', 'batch'}, settings}.

    'batch' is the mean of the per-step minibatch estimates since the previous point."""
    if critic_steps < 1 or batch_size < 2 or train_samples < batch_size or eval_every < 1:
        raise ValueError(f"--critic_steps={critic_steps}, --batch_size={batch_size}, "
                         f"--train_samples={train_samples}, --eval_every={eval_every}: expected "
                         "positive integers with batch_size >= 2 and train_samples >= batch_size")
    model.check_generator()
    # One seed fixes the data order (tf.data shuffles), the critic's initial weights, the
    # samples and the interpolation weights (this sets the global Python/NumPy/TF seeds).
    tf.keras.utils.set_random_seed(seed)
    train = eval_harness.load_split(model, data_dir, "train")
    held = eval_harness.load_split(model, data_dir, split, max_eval_examples)
    if split == "train":
        raise ValueError("--split=train: the critic trains on 'train'; evaluate it on a "
                         "held-out split (e.g. validation or test)")
    if train.count < batch_size:
        raise ValueError(f"--batch_size={batch_size} exceeds the {train.count} "
                         f"training images of {data_dir!r}")
    heldout = held.images()
    n_eval = len(heldout)
    if n_eval < 2:
        raise ValueError(f"split {split!r} of {data_dir!r} has {n_eval} images; expected >= 2")
    train_ref = train.limited(n_eval).images(shuffle_seed=seed + 1)  # the train curve's images
    pool = model_samples(model, train_samples, temperature, seed, TRAIN_POOL_OFFSET,
                         show_progress=show_progress, desc="training samples")
    fresh = model_samples(model, n_eval, temperature, seed, FRESH_OFFSET,
                          show_progress=show_progress, desc="fresh samples")
    pool_ref = pool[:min(n_eval, len(pool))]

    critic = Discriminator(model.config.image_shape, critic_channels, spectral_norm=False,
                           name="independent_critic")
    critic(tf.zeros((1,) + model.config.image_shape))
    trainer = critic_lib.CriticTrainer(critic, learning_rate, gp_weight)
    reals = iter(make_image_dataset(train.info, "train", batch_size, shuffle=True,
                                    repeat=True, seed=seed))
    rng = np.random.default_rng(seed)
    curves: dict[str, list] = {"step": [], "train": [], "validation": [], "batch": []}
    batch_values: list[float] = []

    def evaluate(step: int) -> None:
        curves["step"].append(step)
        curves["train"].append(estimate(trainer, train_ref, pool_ref)[0])
        curves["validation"].append(estimate(trainer, heldout, fresh)[0])
        curves["batch"].append(float(np.mean(batch_values)) if batch_values else float("nan"))
        batch_values.clear()

    evaluate(0)
    with tqdm(total=critic_steps, unit="step", desc="critic", disable=not show_progress) as bar:
        for step in range(1, critic_steps + 1):
            real = to_critic_inputs(next(reals))
            fake = to_critic_inputs(pool[rng.integers(0, len(pool), batch_size)])
            out = trainer.step(real, fake, [seed, step])
            if not math.isfinite(out["loss"]):
                raise FloatingPointError(f"critic loss is {out['loss']} at step {step}")
            batch_values.append(out["wasserstein"])
            bar.update(1)
            if step % eval_every == 0 or step == critic_steps:
                evaluate(step)
                bar.set_postfix(train=f"{curves['train'][-1]:.4g}",
                                validation=f"{curves['validation'][-1]:.4g}", refresh=False)
    value, stderr = estimate(trainer, heldout, fresh)
    return {"validation_wasserstein": value, "validation_stderr": stderr,
            "train_wasserstein": curves["train"][-1], "critic_steps": critic_steps,
            "batch_size": batch_size, "learning_rate": learning_rate, "gp_weight": gp_weight,
            "critic_channels": critic_channels, "temperature": temperature, "seed": seed,
            "train_samples": train_samples, "num_heldout": n_eval, "split": split,
            "curves": curves}


def plot_curves(result: dict[str, Any], path: str, title: str = "") -> str:
    """The train and validation critic curves (and the minibatch means) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["curves"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(c["step"][1:], c["batch"][1:], color="0.7", lw=1, label="training minibatches (mean)")
    ax.plot(c["step"], c["train"], lw=1.5, label="train: training images vs pool samples")
    ax.plot(c["step"], c["validation"], lw=1.5,
            label=f"validation: {result['split']} images vs fresh samples")
    ax.set_xlabel("critic step")
    ax.set_ylabel("E_real[D] - E_fake[D]  (W1 estimate)")
    ax.set_title(title or "independent WGAN-GP critic", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_to_mlflow(model_dir: str, result: dict[str, Any], png: str) -> str | None:
    """Curves as step metrics, the summary (metrics + JSON) and the PNG on the model's run."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from artifacts import tracking

    prefix = f"critic/{result['split']}"
    summary = {k: v for k, v in result.items() if k != "curves"}
    run_id = tracking.log_results(model_dir, summary, prefix)
    if run_id is None:
        return None
    client = MlflowClient()  # no fluent run: the caller's active run/experiment stay as they are
    c = result["curves"]
    now_ms = int(time.time() * 1000)
    curve = [Metric(f"{prefix}/{name}_wasserstein_curve", float(c[name][i]), now_ms, int(step))
             for i, step in enumerate(c["step"]) for name in ("train", "validation")]
    tracking.log_metrics_batched(client, run_id, curve)
    client.log_artifact(run_id, png, artifact_path="critic")
    client.log_dict(run_id, result, f"critic/{result['split']}.json")
    return run_id


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The CLI's flags, one per :class:`CriticEvalConfig` field (--model_dir and --data_dir
    required; defined only when run as a program)."""
    config_flags.define_flags(CriticEvalConfig, flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> CriticEvalConfig:
    """The parsed flags as a :class:`CriticEvalConfig`."""
    return CriticEvalConfig(**config_flags.values_from_flags(CriticEvalConfig, flag_values))


def main(argv):
    cfg = config_from_flags()
    model, step = eval_harness.start_cli(argv, cfg.model_dir, cfg.mlflow_tracking_uri,
                                         cfg.data_dir)
    result = critic_eval(
        model, cfg.data_dir, cfg.split, critic_steps=cfg.critic_steps,
        batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        gp_weight=cfg.gp_weight, critic_channels=cfg.critic_channels,
        temperature=cfg.temperature, seed=cfg.seed, train_samples=cfg.train_samples,
        eval_every=cfg.eval_every, max_eval_examples=cfg.max_eval_examples,
        show_progress=cfg.show_progress)
    png = plot_curves(result, cfg.output_png or os.path.join(
        cfg.model_dir, "critic", f"critic_{cfg.split}.png"),
        f"{model.spec.name} (step {step}): independent critic, {cfg.split}")
    run_id = log_to_mlflow(cfg.model_dir, result, png)
    payload = {"model_dir": os.path.abspath(cfg.model_dir), "step": step,
               "variant": model.spec.name, "data_dir": os.path.abspath(cfg.data_dir),
               "png": os.path.abspath(png), "mlflow_run_id": run_id, **result}
    if cfg.output_json:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.output_json)), exist_ok=True)
        with open(cfg.output_json, "w") as f:
            json.dump(payload, f, indent=2)
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    from artifacts.cli import user_errors

    define_flags()
    app.run(user_errors("python -m pipeline.critic_eval")(main))
