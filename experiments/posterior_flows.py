"""VAE posteriors with normalizing flows on dynamically binarized MNIST (issue 12 item 2),
at CPU scale: -ln p(x) in nats (importance-weighted bound, K >= 100) on held-out digits for
the diagonal Gaussian, planar flows (k = 4, 10, 20), IAF and Real NVP posteriors
(k = 2, 5, 10, 20), every row with the Bernoulli decoder, the same architecture, budget
and evaluation.

    python experiments/posterior_flows.py [--rows diag,planar4,...] [--train_steps 3000] \
        [--seeds 0,1,2] [--importance_samples 100] [--heldout 500] \
        [--out experiments/results/posterior_flows.md]

One seed of every row at the default 3,000 steps took about 35 min on the 2-core
machine (2026-12-04); ``--seeds`` trains the whole table once per seed (mean ± std over seeds).

Data: the quickstart's preprocessing of ../shared/data/mnist_test (MNIST's 10,000 test
digits, 9,054 for training and 946 held out as the validation split; made here if
missing). Training binarizes each digit afresh at every step, b = 1[u < x/255] with the
step's dequantization noise u (dynamic binarization, :mod:`tfp_models.hybrid`); the
held-out digits are binarized once with a fixed seed (:func:`pipeline.evaluate.evaluate_binary_nll`).

Each row trains in-process through the trainer API (:func:`pipeline.trainer.train`, the
code path of ``python -m pipeline.train``: MLflow run, checkpoints, validation curve) and
is evaluated with :mod:`pipeline.evaluate`'s functions; a finished row is skipped when
the script runs again (its stored result is reused). Written next to ``--out``: the table
(.md), every number (.json), the validation curves (-ELBO in nats vs step, _curves.png)
and a grid of decoder means per row (_means.png).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from posterior_flows_runs import PER_IMAGE_FILE, parse_row, prepare_data, row_dir, run_row

from pipeline.quickstart import DEFAULT_MNIST, PROJECT_ROOT

ALL_ROWS = "diag,planar4,planar10,planar20,iaf,realnvp2,realnvp5,realnvp10,realnvp20"
CURVE_METRIC = "validation/nll_nats"


def first_seed(rows: list[dict]) -> list[dict]:
    """The rows trained with the smallest training seed, in table order."""
    seed = min(r["seed"] for r in rows)
    return [r for r in rows if r["seed"] == seed]


def curves(rows: list[dict], args, path: str) -> str | None:
    """-ELBO (nats) on the first validation digits vs step, one line per row (of the first
    training seed), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.mlflow_tracking_uri)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    drawn, lows = 0, []
    for r in first_seed(rows):
        hist = sorted((m.step, m.value) for m in
                      client.get_metric_history(r["mlflow_run_id"], CURVE_METRIC))
        if hist:
            style = {"diag": "-", "planar": "--", "iaf": ":", "realnvp": "-."}[r["posterior"]]
            ax.plot(*zip(*hist), style, lw=1.3, label=r["row"])
            lows.append(min(v for _, v in hist))
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation -ELBO, nats ({args.validation_examples} binarized digits)")
    ax.set_ylim(min(lows) - 5, min(lows) + 60)  # the early steps (~500 nats) off the top
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("VAE posteriors on dynamically binarized MNIST (Bernoulli decoder)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def means_grid(rows: list[dict], args, path: str) -> str:
    """16 decoder means sigmoid(logits(z)), z ~ N(0, I) (seed 0), of every row (of the first
    training seed): one row each."""
    from artifacts import images as images_lib
    from artifacts import model_io

    images = []
    for r in first_seed(rows):
        model, _ = model_io.load_trained_model(row_dir(args, r["seed"], r["row"]))
        images.append(model.sample(16, 0.0, seed=0).numpy())
    return images_lib.save_grid(np.concatenate(images), path, num_rows=len(images))


def paired_differences(rows: list[dict], args) -> dict[tuple[str, int], tuple[float, float]]:
    """(row, seed) -> (mean, standard error) over the held-out digits of the per-digit
    difference of the IW bounds, row minus diag of the same seed (negative: the row is
    better). Every row is evaluated on the same digits with the same binarization, so the
    pairing removes the spread between digits. Rows without a diag of their seed or without
    stored per-image values are left out."""
    def per_image(r: dict) -> np.ndarray | None:
        path = os.path.join(row_dir(args, r["seed"], r["row"]), PER_IMAGE_FILE)
        return np.load(path)["nll_iw_nats"] if os.path.isfile(path) else None

    bases = {r["seed"]: per_image(r) for r in rows if r["row"] == "diag"}
    out = {}
    for r in rows:
        base, values = bases.get(r["seed"]), per_image(r)
        if (r["row"] != "diag" and base is not None and values is not None
                and len(values) == len(base)):
            d = values - base
            out[(r["row"], r["seed"])] = (float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))))
    return out


def _spread(values: list[float], fmt: str = ".2f") -> str:
    """'m ± std over seeds' (sample std), or the one value."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{np.mean(values):{fmt}} ± {np.std(values, ddof=1):{fmt}}"


def table(rows: list[dict], args) -> list[str]:
    n_eval = rows[0]["nll"]["num_examples"] if rows else 0
    seeds = sorted({r["seed"] for r in rows})
    several = len(seeds) > 1
    lines = [
        "# VAE posteriors with normalizing flows on dynamically binarized MNIST (CPU scale)",
        "",
        f"Command: `python experiments/posterior_flows.py {' '.join(sys.argv[1:])}`",
        "",
        f"Every row: variant `vae` with `--decoder=bernoulli`, {args.latent_dim}-d latent, the "
        f"project's conv encoder/decoder with {args.channels} base channels (2 stride-2 stages), "
        f"posterior nets with {args.posterior_hidden} hidden units (IAF: MADE, 2 steps; Real "
        f"NVP: coupling MLPs), N(0, I) prior, exact ELBO objective (no KL warm-up, no free "
        f"bits), Adam {args.learning_rate:g}, {args.train_steps} steps of batch "
        f"{args.batch_size} (training seed{'s' if several else ''} "
        f"{', '.join(map(str, seeds))}). Training data: the 9,054 training digits of "
        "the quickstart's MNIST data set (the 10,000 MNIST *test* digits split 90/10), "
        "binarized afresh at every step (b = 1[u < x/255], u the step's dequantization noise: "
        f"dynamic binarization). Evaluation: the first {n_eval} held-out digits (validation "
        f"split), binarized once with a fixed seed ({args.eval_seed}, keyed on the image index; "
        "the same binary digits for every row and training seed); "
        f"-ln p(x) is the importance-weighted bound with K={args.importance_samples} (an upper "
        "bound on -ln P(b) in expectation), -ELBO the K=1 bound, in **nats per image of the "
        "binary digit** (not bits/dim of 8-bit data); "
        + ("± is the standard deviation over the training seeds (each seed's number is a mean "
           "over the held-out digits). " if several else
           "± is the standard error over the held-out digits. ")
        + "KL: mean one-sample KL(q(z|x) || p(z)) (analytic for diag), nats; AU: active "
        "units (Cov_x E_q[z_u] > 0.01; E_q[z] = the posterior mean pushed through the flow).",
        "",
        "Scale: the source trains to convergence on binarized MNIST (the usual protocol: "
        "the 60,000 training digits, -ln p(x) on the 10,000 test digits) and reports about "
        "81-86 nats for planar k = 4..40 and Real NVP k = 2..20 (issue 12's summary). "
        f"Here each row gets {args.train_steps * args.batch_size / 9054:.1f} epochs of 9,054 "
        "digits on a 2-core CPU, so the absolute numbers are far from convergence and "
        "the differences between rows are those of an early-training budget, not of converged "
        "models.",
        "",
        "Paired vs diag: the per-digit difference of the IW bound to the diag row of the same "
        "training seed on the same held-out digits (negative = better than diag); "
        + ("mean over the seeds of each seed's mean difference ± its standard deviation over "
           "the seeds. KL: mean over seeds; AU: the fewest over seeds." if several else
           "mean ± standard error of the differences."),
        "",
        f"| posterior | k | -ln p(x) nats (IW, K={args.importance_samples}) | paired vs diag | "
        "-ELBO nats | KL nats | AU | posterior params | train s | eval s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    paired = paired_differences(rows, args)
    for name in dict.fromkeys(r["row"] for r in rows):
        rs = [r for r in rows if r["row"] == name]
        first, nll = rs[0], rs[0]["nll"]
        k = "—" if first["posterior"] == "diag" else str(first["posterior_steps"])
        if not several:  # ± over the held-out digits
            iw = f"{nll['nll_nats_iw']:.2f} ± {nll['nll_nats_iw_stderr']:.2f}"
            elbo = f"{nll['nll_nats']:.2f} ± {nll['nll_nats_stderr']:.2f}"
            d = paired.get((name, first["seed"]))
            diff = f"{d[0]:+.2f} ± {d[1]:.2f}" if d else "—"
        else:  # ± over the training seeds
            iw = _spread([r["nll"]["nll_nats_iw"] for r in rs])
            elbo = _spread([r["nll"]["nll_nats"] for r in rs])
            ds = [paired[(name, r["seed"])][0] for r in rs if (name, r["seed"]) in paired]
            diff = (f"{np.mean(ds):+.2f} ± {np.std(ds, ddof=1):.2f}" if len(ds) > 1 else "—")
        lines.append(
            f"| {first['posterior']} | {k} | {iw} | {diff} | {elbo} | "
            f"{np.mean([r['kl_mean'] for r in rs]):.1f} | "
            f"{min(r['active_units'] for r in rs)} | {first['posterior_parameters']} | "
            f"{np.mean([r['train_seconds'] for r in rs]):.0f} | "
            f"{np.mean([r['eval_seconds'] for r in rs]):.0f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=ALL_ROWS,
                        help="comma-separated rows: diag, iaf, planarK, realnvpK")
    parser.add_argument("--train_steps", type=int, default=3000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--latent_dim", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8, help="encoder/decoder base channels")
    parser.add_argument("--posterior_hidden", type=int, default=128)
    parser.add_argument("--seeds", default="0",
                        help="comma-separated training seeds; every row is trained once per seed")
    parser.add_argument("--eval_seed", type=int, default=0,
                        help="seed of the held-out binarization and the evaluation noise "
                             "(the same for every row and training seed)")
    parser.add_argument("--importance_samples", type=int, default=100, help="K of the IW bound")
    parser.add_argument("--heldout", type=int, default=500, help="held-out digits evaluated")
    parser.add_argument("--eval_batch", type=int, default=50)
    parser.add_argument("--validation_every", type=int, default=100)
    parser.add_argument("--validation_examples", type=int, default=200)
    parser.add_argument("--tag", default="main", help="names the runs directory and experiment")
    parser.add_argument("--work_dir", default=os.path.join(PROJECT_ROOT, "work", "quickstart"))
    parser.add_argument("--runs_dir", default=None, help="default: work/posterior_flows/<tag>")
    parser.add_argument("--mnist_dir", default=DEFAULT_MNIST)
    parser.add_argument("--mlflow_tracking_uri", default=None,
                        help="default: sqlite:///<runs_dir>/mlflow.db")
    parser.add_argument("--progress", action="store_true", help="progress bars per row")
    parser.add_argument("--out", default=os.path.join(PROJECT_ROOT, "experiments", "results",
                                                      "posterior_flows.md"))
    args = parser.parse_args()
    if args.importance_samples < 1 or args.heldout < 2:
        raise SystemExit("error: --importance_samples must be >= 1 and --heldout >= 2")
    args.runs_dir = os.path.abspath(args.runs_dir or os.path.join(
        PROJECT_ROOT, "work", "posterior_flows", args.tag))
    os.makedirs(args.runs_dir, exist_ok=True)
    args.mlflow_tracking_uri = (args.mlflow_tracking_uri
                                or f"sqlite:///{os.path.join(args.runs_dir, 'mlflow.db')}")
    names = [n for n in args.rows.split(",") if n]
    for n in names:
        parse_row(n)
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds={args.seeds!r}: expected comma-separated integers")
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: --seeds={args.seeds!r}: expected distinct integers")
    data_dir = prepare_data(os.path.abspath(args.work_dir), args.mnist_dir)
    start, load_before = time.time(), os.getloadavg()[0]
    jobs = [(n, seed) for seed in seeds for n in names]  # a whole table per seed, in turn
    rows = [run_row(n, seed, args, data_dir, i, len(jobs)) for i, (n, seed) in enumerate(jobs, 1)]
    stem = os.path.splitext(args.out)[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    lines = table(rows, args)
    curve = curves(rows, args, stem + "_curves.png")
    grid = means_grid(rows, args, stem + "_means.png")
    lines += ["", f"Validation curves: `{os.path.basename(curve)}`" if curve else
              "Validation curves: none logged",
              f"Decoder means of z ~ N(0, I) (16 per row, rows in table order; curves and "
              f"means of training seed {min(r['seed'] for r in rows)}): "
              f"`{os.path.basename(grid)}`",
              f"Wall time of this invocation (rows already stored are not re-run): "
              f"{time.time() - start:.0f} s; 1-minute load average {load_before:.2f} at the "
              f"start, {os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} CPUs (above "
              "the CPU count: other jobs shared the cores)"]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"settings": {k: v for k, v in vars(args).items()}, "rows": rows}, f, indent=2)
    print("\n".join(lines))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
