"""Maximum likelihood vs WGAN-GP training of one Real NVP (Danihelka et al., 2017,
"Comparison of maximum likelihood and GAN-based training of Real NVPs") at CPU scale on MNIST.

    python experiments/flow_mle_vs_wgan.py [--train_steps 600] [--critic_steps 800] \
        [--out experiments/results/flow_mle_vs_wgan.md]

The variants `flow` (Real NVP by maximum likelihood) and `flow_wgan` (the same Real NVP as
the generator of a WGAN-GP, its log-likelihood only monitored) are trained with the same
architecture, batch and number of generator steps on the quickstart's data set (the shared
MNIST test digits, 90 % train / 10 % validation, made by ``beam_jobs.preprocess`` if
missing). Each is a real ``pipeline.train`` run; then, per model:

* train and validation bits/dim over training (the exact likelihood logged by the trainer:
  ``train/bpd`` of each logged step's training batch, ``validation/bpd`` of the first 500
  validation digits with fixed dequantization noise), as one PNG, and the final exact
  bits/dim of the whole validation split and of as many training digits;
* the independent critic distance: ``pipeline.critic_eval`` (a fresh WGAN-GP critic trained
  on training digits vs the model's samples, reported on the validation digits vs fresh
  samples; lower = closer to the data), its curves as a PNG per model;
* the latent codes y = f(x~) of the validation digits (dequantized with fixed noise):
  mean, variance and excess kurtosis of all entries pooled, and the medians over the 784
  dimensions of the per-dimension variance and excess kurtosis, against a standard normal
  (0, 1, 0); a reference row gives the same statistics of as many N(0, 1) draws (their
  sampling noise), and a PNG the histograms;
* 64 samples at temperature 1 as a PNG grid.

Trained models and critic results are kept in ``--work_dir`` and reused when the script
runs again. Writes the table and a JSON of every number next to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import numpy as np

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT_ROOT)

from flow_mle_vs_wgan_measures import code_statistics, evaluate_model  # noqa: E402
from flow_mle_vs_wgan_plots import metric_history, plot_bpd, plot_codes  # noqa: E402

from pipeline.quickstart import DEFAULT_MNIST, last_json, preprocess_mnist, run_stage  # noqa: E402

VARIANTS = ("flow", "flow_wgan")
# Same Real NVP for both (the ablation's 3x3-coupling baseline: configs/quickstart.cfg's flow
# sizes with --flow_kernel_size=3).
ARCHITECTURE = ("--flow_scales=2 --flow_hidden=16 --flow_res_blocks=1 --flow_kernel_size=3 "
                "--use_actnorm")
# Optimizers per training criterion: Adam 1e-3 for MLE (the project's default); the WGAN-GP
# settings of Gulrajani et al. (2017) for the adversarial run: Adam 1e-4, beta_1 0.5 (critic
# beta_2 0.9), 5 critic updates per generator update, gradient penalty 10, no spectral norm.
VARIANT_FLAGS = {
    "flow": "--learning_rate=1e-3",
    "flow_wgan": ("--learning_rate=1e-4 --adam_beta1=0.5 --disc_learning_rate=1e-4 "
                  "--disc_adam_beta1=0.5 --disc_adam_beta2=0.9 --disc_steps=5 "
                  "--gradient_penalty=wgan-gp --gp_weight=10 --disc_channels=16 "
                  "--nospectral_norm"),
}
SOURCE = ("Danihelka et al. 2017 (full-size Real NVPs on 32x32 natural images, GPU budget), as "
          "issue 12 summarizes it: the WGAN-trained NVP gets nicer samples but worse than 8 "
          "bits/dim (worse than a uniform model) and non-Gaussian latent codes f(x) of data")


def prepare_data(work: str, mnist_dir: str) -> str:
    """The quickstart's MNIST data set in ``work``/data/mnist28, made if missing."""
    data_dir = os.path.join(work, "data", "mnist28")
    preprocess_mnist(data_dir, mnist_dir)
    return data_dir


def train(variant: str, args, data_dir: str, index: int, total: int) -> dict:
    model_dir = os.path.join(args.work_dir, variant)
    done = os.path.join(model_dir, "train_done.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    start = time.time()
    out = last_json(run_stage(index, total, f"train {variant}", [
        sys.executable, "-m", "pipeline.train", f"--data_dir={data_dir}",
        f"--model_dir={model_dir}", f"--variant={variant}", f"--seed={args.seed}",
        f"--train_steps={args.train_steps}", f"--batch_size={args.batch_size}",
        f"--validation_every={args.validation_every}", "--log_every=25",
        f"--checkpoint_every={args.train_steps}", f"--sample_every={args.train_steps}",
        f"--mlflow_tracking_uri={args.mlflow_tracking_uri}", "--experiment=flow-mle-vs-wgan",
        f"--run_name=flow-mle-vs-wgan-{variant}", "--noshow_progress",
        *shlex.split(ARCHITECTURE), *shlex.split(VARIANT_FLAGS[variant])], capture=True))
    row = {"variant": variant, "model_dir": model_dir, "train_seconds": round(time.time() - start, 1),
           "flags": f"{ARCHITECTURE} {VARIANT_FLAGS[variant]}", "final_train_metrics": out["metrics"]}
    with open(done, "w") as f:
        json.dump(row, f, indent=2)
    return row


def critic(variant: str, args, data_dir: str, stem: str, index: int, total: int) -> dict:
    model_dir = os.path.join(args.work_dir, variant)
    path = os.path.join(model_dir, "critic_validation.json")
    if not os.path.isfile(path):
        run_stage(index, total, f"independent critic {variant}", [
            sys.executable, "-m", "pipeline.critic_eval", f"--model_dir={model_dir}",
            f"--data_dir={data_dir}", "--split=validation", f"--critic_steps={args.critic_steps}",
            f"--batch_size={args.critic_batch_size}", f"--critic_channels={args.critic_channels}",
            f"--train_samples={args.critic_train_samples}", "--eval_every=50",
            f"--learning_rate={args.critic_learning_rate}", "--gp_weight=10", "--temperature=1",
            f"--seed={args.seed}", f"--output_json={path}",
            f"--output_png={stem}_critic_{variant}.png", "--noshow_progress"], capture=True)
    with open(path) as f:
        return json.load(f)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train_steps", type=int, default=600, help="generator steps of each model")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--validation_every", type=int, default=50)
    p.add_argument("--critic_steps", type=int, default=800)
    p.add_argument("--critic_batch_size", type=int, default=64)
    p.add_argument("--critic_channels", type=int, default=16)
    p.add_argument("--critic_learning_rate", type=float, default=1e-4)
    p.add_argument("--critic_train_samples", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work_dir", default=os.path.join(PROJECT_ROOT, "work", "flow_mle_vs_wgan"))
    p.add_argument("--mnist_dir", default=DEFAULT_MNIST)
    p.add_argument("--mlflow_tracking_uri", default=None,
                   help="default: sqlite:///<work_dir>/mlflow.db")
    p.add_argument("--out", default=os.path.join(PROJECT_ROOT, "experiments", "results",
                                                 "flow_mle_vs_wgan.md"))
    args = p.parse_args()
    args.work_dir = os.path.abspath(args.work_dir)
    args.mlflow_tracking_uri = (args.mlflow_tracking_uri
                                or f"sqlite:///{os.path.join(args.work_dir, 'mlflow.db')}")
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    stem = os.path.splitext(os.path.abspath(args.out))[0]
    t0 = time.time()
    data_dir = prepare_data(args.work_dir, args.mnist_dir)
    rows: dict[str, dict] = {}
    total = 2 * len(VARIANTS)
    for i, v in enumerate(VARIANTS):
        rows[v] = train(v, args, data_dir, i + 1, total)
    for i, v in enumerate(VARIANTS):
        rows[v]["critic"] = critic(v, args, data_dir, stem, len(VARIANTS) + i + 1, total)
    print("\n=== evaluation: exact bits/dim, latent codes, grids", flush=True)
    codes = {}
    histories = {}
    for v in VARIANTS:
        ev = evaluate_model(v, args, data_dir, stem)
        codes[v] = ev.pop("_codes")
        rows[v].update(ev)
        histories[v] = {k: metric_history(rows[v]["model_dir"], f"{k}/bpd",
                                          args.mlflow_tracking_uri)
                        for k in ("train", "validation")}
        rows[v]["bpd_curves"] = histories[v]
    reference = code_statistics(np.random.default_rng(args.seed).standard_normal(
        next(iter(codes.values())).shape))
    bpd_png = plot_bpd(histories, stem + "_bpd.png")
    codes_png = plot_codes(codes, stem + "_codes.png")
    total_minutes = (time.time() - t0) / 60

    def crit(r):
        c = r["critic"]
        return f"{c['validation_wasserstein']:.3f} ± {c['validation_stderr']:.3f}"

    def fmt_bpd(v):
        return f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}"

    cmd = " ".join(sys.argv[1:])
    lines = [
        "# Real NVP by maximum likelihood vs as a WGAN-GP generator (MNIST 28x28, CPU scale)",
        "",
        f"Command: `python experiments/flow_mle_vs_wgan.py{' ' + cmd if cmd else ''}` "
        f"(this invocation: {total_minutes:.1f} min; trainings and critic runs already in "
        "`--work_dir` are reused, not redone: the 'train s' column is the training time of the "
        "run that did it).",
        "",
        f"Both models: the same Real NVP (`{ARCHITECTURE}`), {args.train_steps} generator steps "
        f"of batch {args.batch_size}, seed {args.seed}, on the shared MNIST test digits (9,054 "
        "train / 946 validation). `flow`: maximum likelihood, "
        f"`{VARIANT_FLAGS['flow']}`. `flow_wgan`: WGAN-GP generator, `{VARIANT_FLAGS['flow_wgan']}`"
        " (5 critic updates per generator step, so it costs more per step; its likelihood is only "
        "monitored). Bits/dim: exact, of the 8-bit digits (uniform dequantization, fixed noise); "
        "validation = all 946 validation digits, train = as many training digits. Critic: "
        f"`pipeline.critic_eval`, a fresh WGAN-GP critic ({args.critic_channels} base channels, "
        f"{args.critic_steps} steps of batch {args.critic_batch_size}, Adam "
        f"{args.critic_learning_rate:g}, gp 10) trained on training digits vs "
        f"{args.critic_train_samples} samples at temperature 1, value E_real[D] - E_fake[D] on "
        "the validation digits vs 946 fresh samples ± its standard error (a W1 estimate in "
        "[0, 1]-pixel units; lower = closer to the data); the train column is its value on 946 "
        "training digits vs pool samples. Codes: y = f(x~) of the validation digits, all "
        "946 x 784 entries pooled (a standard normal has mean 0, variance 1, excess kurtosis 0) "
        "and medians over the 784 dimensions of the per-dimension variance and excess kurtosis.",
        "",
        "| model | train s | validation bpd | train bpd | critic W (validation) | critic W (train) "
        "| code mean | code var | code excess kurtosis | median dim var | median dim excess "
        "kurtosis | max abs code |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, r in rows.items():
        c = r["codes"]
        lines.append(
            f"| {v} | {r['train_seconds']:.0f} | {fmt_bpd(r['validation_bpd'])} | "
            f"{fmt_bpd(r['train_bpd'])} | {crit(r)} | {r['critic']['train_wasserstein']:.3f} | "
            f"{c['mean']:.3f} | {c['variance']:.3g} | {c['excess_kurtosis']:.3g} | "
            f"{c['median_dim_variance']:.3g} | {c['median_dim_excess_kurtosis']:.3g} | "
            f"{c['max_abs']:.3g} |")
    lines.append(f"| N(0, 1) draws, same count | — | — | — | — | — | {reference['mean']:.3f} | "
                 f"{reference['variance']:.3g} | {reference['excess_kurtosis']:.3g} | "
                 f"{reference['median_dim_variance']:.3g} | "
                 f"{reference['median_dim_excess_kurtosis']:.3g} | {reference['max_abs']:.3g} |")
    lines += [
        "",
        f"Source: {SOURCE}. Scale here: 28x28 grey MNIST (10k digits), a 2-scale Real NVP with "
        f"16-channel coupling ResNets, {args.train_steps} steps; far smaller and shorter than "
        "the source's.",
        "",
        f"Curves: bits/dim over training `{os.path.basename(bpd_png)}`; critic "
        + ", ".join(f"`{os.path.basename(stem)}_critic_{v}.png`" for v in VARIANTS)
        + f"; code histograms `{os.path.basename(codes_png)}`; samples (T = 1) "
        + ", ".join(f"`{rows[v]['grid']}`" for v in VARIANTS) + ".",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"rows": rows, "reference_normal_codes": reference,
                   "total_minutes": total_minutes, "args": vars(args)}, f, indent=2,
                  default=float)
    print("\n".join(lines))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
