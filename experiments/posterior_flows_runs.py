"""The rows of experiments/posterior_flows.py: a row's name parsed into its posterior,
its model (Bernoulli-decoder VAE) and directory, the data set, and one row trained in-process
through the trainer API and evaluated (-ln p(x) bound per held-out digit, latent use); a
finished row's stored result is reused.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from pipeline.quickstart import preprocess_mnist

RESULT_FILE = "posterior_flows_result.json"
PER_IMAGE_FILE = "posterior_flows_per_image.npz"  # -ln P(b) bounds per held-out digit


def parse_row(name: str) -> tuple[str, int]:
    """'planar10' -> ('planar', 10); 'diag' -> ('diag', 1); 'iaf' -> ('iaf', 2 steps)."""
    for kind in ("planar", "realnvp", "iaf"):
        if name.startswith(kind):
            rest = name[len(kind):]
            if kind == "iaf" and not rest:
                return kind, 2
            if rest.isdigit() and int(rest) >= 1:
                return kind, int(rest)
    if name == "diag":
        return "diag", 1
    raise SystemExit(f"error: row {name!r}: expected diag, iaf[K], planarK or realnvpK")


def prepare_data(work: str, mnist_dir: str) -> str:
    """The quickstart's MNIST data set in ``work``/data/mnist28, made if missing."""
    data_dir = os.path.join(work, "data", "mnist28")
    preprocess_mnist(data_dir, mnist_dir)
    return data_dir


def model_config(kind: str, steps: int, args):
    from tfp_models.hybrid import HybridConfig

    return HybridConfig(variant="vae", decoder="bernoulli", posterior=kind,
                        posterior_steps=steps, posterior_hidden=args.posterior_hidden,
                        latent_dim=args.latent_dim, enc_dec_channels=args.channels,
                        enc_dec_downsamples=2)


def row_dir(args, seed: int, name: str) -> str:
    """The model directory of row ``name`` trained with ``seed``: <runs_dir>/seed<seed>/<name>."""
    return os.path.join(args.runs_dir, f"seed{seed}", name)


def run_row(name: str, seed: int, args, data_dir: str, index: int, total: int) -> dict:
    """Trains row ``name`` with training seed ``seed`` and evaluates it (evaluation seed
    ``args.eval_seed``: the same binarized held-out digits for every row and seed); returns
    (and stores) its result."""
    from artifacts import model_io
    from pipeline import evaluate, trainer

    model_dir = row_dir(args, seed, name)
    result_file = os.path.join(model_dir, RESULT_FILE)
    if os.path.isfile(result_file):
        with open(result_file) as f:
            return json.load(f)
    kind, steps = parse_row(name)
    print(f"\n=== [{index}/{total}] {name} (seed {seed}): posterior={kind} "
          f"posterior_steps={steps}", flush=True)
    cfg = trainer.TrainConfig(
        data_dir=data_dir, model_dir=model_dir, train_steps=args.train_steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, seed=seed,
        checkpoint_every=args.train_steps, log_every=50, sample_every=10 ** 9,
        num_grid_samples=64, validation_every=args.validation_every,
        validation_examples=args.validation_examples, mlflow_tracking_uri=args.mlflow_tracking_uri,
        experiment=f"posterior-flows-{args.tag}", run_name=f"posterior-flows-{name}-seed{seed}",
        show_progress=args.progress)
    start = time.time()
    summary = trainer.train(model_config(kind, steps, args), cfg)
    train_seconds = time.time() - start
    model, step = model_io.load_trained_model(model_dir)
    start = time.time()
    nll = evaluate.evaluate_binary_nll(model, data_dir, "validation", args.eval_batch,
                                       args.importance_samples, args.eval_seed, args.heldout,
                                       show_progress=args.progress, per_image=True)
    np.savez(os.path.join(model_dir, PER_IMAGE_FILE), **nll.pop("per_image"))
    latent = evaluate.evaluate_latent(model, data_dir, "validation", args.eval_batch,
                                      args.eval_seed, args.heldout, show_progress=False)
    eval_seconds = time.time() - start
    from artifacts.tracking import log_results

    log_results(model_dir, nll, "eval/validation")
    row = {"row": name, "seed": seed, "posterior": kind, "posterior_steps": steps, "step": step,
           "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
           "nll": nll, "kl_mean": latent["kl_mean"], "active_units": latent["active_units"],
           "mlflow_run_id": summary["mlflow_run_id"],
           "parameters": int(sum(int(v.shape.num_elements()) for v in model.trainable_variables)),
           "posterior_parameters": int(sum(int(v.shape.num_elements())
                                           for v in model.posterior.trainable_variables))}
    print(f"    -ln p(x) <= {nll['nll_nats_iw']:.2f} ± {nll['nll_nats_iw_stderr']:.2f} nats "
          f"(IW, K={args.importance_samples}); -ELBO {nll['nll_nats']:.2f}; "
          f"train {train_seconds:.0f} s, eval {eval_seconds:.0f} s", flush=True)
    with open(result_file, "w") as f:
        json.dump(row, f, indent=2)
    return row
