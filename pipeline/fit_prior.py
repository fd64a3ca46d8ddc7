"""Refit a trained model's prior to its aggregate posterior (ex-post density estimation,
Ghosh et al., 2020) and write the result as a new model directory:

    python -m pipeline.fit_prior --model_dir=runs/quickstart_cqf \
        --output_model_dir=runs/quickstart_cqf_mix50 --components=50

One posterior draw z ~ q(z|x) per training image (dequantized with seeded noise), a
mixture of K diagonal Gaussians fitted to them by EM (scikit-learn), written into a copy of
the model with ``prior='mixture'``. Every other weight is unchanged. The ELBO holds for any
prior and its prior term E_q[ln p(z)] is what EM maximizes on those draws, so the refit is
coordinate ascent on the training objective in the prior's parameters; scores stay
bounds, and samples come from where the posteriors put mass. A deviation from the paper
(its prior is N(0, I)). The input model directory is not modified; the new one links to
the same MLflow run (its evaluation metrics then overwrite the source's in that run).
"""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import tensorflow as tf
from absl import app, flags

from artifacts import model_io
from artifacts.cli import setup_logging, user_errors
from pipeline import config_flags
from pipeline.eval_configs import FitPriorConfig

log = logging.getLogger(__name__)

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The CLI's flags, one per :class:`FitPriorConfig` field; defined only when run as a
    program, so that importing this module next to another CLI's (pipeline.evaluate
    defines --model_dir too) is safe."""
    config_flags.define_flags(FitPriorConfig, flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> FitPriorConfig:
    """The parsed flags as a :class:`FitPriorConfig` (ValueError without --model_dir or
    --output_model_dir)."""
    return FitPriorConfig(**config_flags.values_from_flags(FitPriorConfig, flag_values))


def posterior_draws(model, data_dir: str, split: str = "train", batch_size: int = 500,
                    seed: int = 0, max_examples: int | None = None) -> np.ndarray:
    """One z ~ q(z|x~) per image of ``split``, [N, d] float64, seeded: the dequantization
    and the posterior draw of :mod:`pipeline.eval_harness` (keyed on seed and batch)."""
    from pipeline import eval_harness

    held = eval_harness.load_split(model, data_dir, split, max_examples)

    @tf.function
    def draw(images, index):
        x = eval_harness.dequantized_inputs(model, images, index, batch_size, seed)
        return {"z": eval_harness.posterior_draw(model, model.encoder(x), index, seed)[0]}

    return eval_harness.map_split(held, batch_size, draw)["z"]


def fit_mixture_prior(model_dir: str, output_model_dir: str, components: int,
                      data_dir: str | None = None, seed: int = 0,
                      max_examples: int | None = None) -> dict:
    """Writes ``output_model_dir`` (model_config.json with prior='mixture', K components,
    and a checkpoint at the same step) and returns a summary with the mean ln p(z) of the
    draws in nats under the old and the refitted prior."""
    import dataclasses

    from sklearn.mixture import GaussianMixture

    from tfp_models.hybrid import HybridModel

    if components < 1:
        raise ValueError(f"--components={components}: expected a positive integer")
    if os.path.abspath(output_model_dir) == os.path.abspath(model_dir):
        raise ValueError("--output_model_dir must differ from --model_dir (the input is kept)")
    if os.path.exists(os.path.join(output_model_dir, model_io.CONFIG_FILE)):
        raise FileExistsError(f"--output_model_dir={output_model_dir!r} already holds a model")
    model, step = model_io.load_trained_model(model_dir)
    if model.encoder is None:
        raise ValueError(f"variant {model.spec.name!r} has no posterior to fit a prior to")
    config, payload = model_io.load_model_config(model_dir)
    data_dir = data_dir or payload.get("data_dir")
    z = posterior_draws(model, data_dir, seed=seed, max_examples=max_examples)
    old_log_p = float(tf.reduce_mean(model.prior.log_prob(tf.constant(z, tf.float32))))
    fit = GaussianMixture(components, covariance_type="diag", random_state=seed,
                          reg_covar=1e-6).fit(z)
    new_config = dataclasses.replace(config, prior="mixture", prior_components=components)
    new = HybridModel(new_config)
    _copy_weights(model, new, tf.train.latest_checkpoint(model_dir))
    new.prior.assign(fit.weights_, fit.means_, np.sqrt(fit.covariances_))
    new_log_p = float(tf.reduce_mean(new.prior.log_prob(tf.constant(z, tf.float32))))
    os.makedirs(output_model_dir, exist_ok=True)
    model_io.save_model_config(output_model_dir, new_config, {
        **{k: v for k, v in payload.items() if k != "model"},
        "prior_fit": {"from_model_dir": os.path.abspath(model_dir), "components": components,
                      "num_draws": int(len(z)), "seed": seed}})
    step_var = tf.Variable(step, dtype=tf.int64, trainable=False)
    path = model_io.make_checkpoint(new, step_var).write(
        os.path.join(output_model_dir, f"ckpt-{step}"))
    with open(os.path.join(output_model_dir, "checkpoint"), "w") as f:
        name = os.path.basename(path)
        f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    # The refitted model belongs to the training run: its evaluations and export are
    # logged there (under the same metric names as the source's, so evaluate one of them).
    for name in ("mlflow_run_id", "mlflow_tracking_uri"):
        if os.path.isfile(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), output_model_dir)
    return {"model_dir": output_model_dir, "step": step, "components": components,
            "num_draws": int(len(z)), "mean_log_prior_before_nats": old_log_p,
            "mean_log_prior_after_nats": new_log_p}


def _copy_weights(source, target, checkpoint_path: str) -> None:
    """Restores ``source``'s checkpoint into ``target`` (the same model but its prior) and
    checks that every weight outside the prior equals the source's."""
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    model_io.make_checkpoint(target, step).read(checkpoint_path).expect_partial()
    prior_ids = {id(v) for v in target.prior.variables}
    theirs = [v for v in target.variables if id(v) not in prior_ids]
    mine = [v for v in source.variables if id(v) not in {id(w) for w in source.prior.variables}]
    if len(theirs) != len(mine) or not all(
            a.shape == b.shape and np.array_equal(a.numpy(), b.numpy())
            for a, b in zip(mine, theirs)):
        raise ValueError(f"checkpoint {checkpoint_path!r} did not restore into the refitted "
                         "model unchanged")


def main(argv):
    del argv
    setup_logging()
    cfg = config_from_flags()
    summary = fit_mixture_prior(cfg.model_dir, cfg.output_model_dir, cfg.components,
                                cfg.data_dir, cfg.seed, cfg.max_examples)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(user_errors("python -m pipeline.fit_prior")(main))
