"""The paper's ablation ("impact of training objectives and NVP decoder") at CPU scale on
real data: every variant trained with the same budget and architecture (a flagfile,
default configs/quickstart.cfg), then the same evaluation for every row.

    python experiments/ablation.py [--variants vae,vae_f,cq,cqf,gan,flow,flow_wgan,flowgan] \
        [--seeds 0] [--more_seeds 1,2 --more_seeds_variants vae_f,cqf] \
        [--train_steps 800] [--fid_samples 2000] [--extra_flags="--free_bits=1.0"] \
        [--tag NAME] [--out experiments/results/ablation.md]

Per run: validation bits/dim (ELBO bound, exact for flows; IW bound with K samples), the
latent's use (mean KL in nats, active units), and for samples at temperature 0
(x = f^-1(mu(z)), what L_adv trains) and 1: FID/KID/IS, precision and recall
(Kynkaanniemi et al. 2019, k = 3), the confident-sample rate and the label coverage, all
in the features of the project's MNIST classifier. The table,
a JSON of every number, the validation-BPD curves (PNG) and temperature-0/1 sample grids
of each variant's first seed are written next to ``--out``.

Uses the quickstart's data set, MNIST classifier and reference statistics (made here
if missing). Each run is the project's real CLI (pipeline.train, pipeline.evaluate) in
a subprocess; a finished (variant, seed) is skipped when the script is run again, so the
table is regenerated from the stored results.
"""
from __future__ import annotations

import argparse
import os
import sys

from ablation_protocol import Protocol, ensure_reference_stats, heldout_real
from ablation_report import LIKELIHOOD_COLUMNS, PAPER_CIFAR10, cells, fmt, write_outputs
from ablation_runs import VARIANT_FLAGS, add_run_arguments, jobs_of, run_one

from pipeline.quickstart import DEFAULT_MNIST, PROJECT_ROOT, preprocess_mnist, run_stage


def prepare(work: str, mnist_dir: str) -> Protocol:
    """The MNIST protocol (data set, classifier, reference statistics) made like the
    quickstart does."""
    py = sys.executable
    data_dir = os.path.join(work, "data", "mnist28")
    classifier = os.path.join(work, "mnist_classifier")
    ref_stats = os.path.join(work, "reference_train_stats.npz")
    preprocess_mnist(data_dir, mnist_dir)
    if not os.path.isdir(classifier):
        run_stage(0, 0, "classifier", [py, "-m", "pipeline.train_mnist_classifier",
                                       f"--mnist_dir={mnist_dir}", f"--output={classifier}"])
    ensure_reference_stats(work, data_dir, "mnist_classifier", classifier, ref_stats)
    return Protocol(data_dir, "mnist_classifier", classifier, ref_stats)


def table(rows: dict[str, list[dict]], args, real: dict) -> list[str]:
    lines = [
        f"# Ablation on MNIST 28x28 (CPU scale): {args.train_steps} steps of batch 32 per run",
        "",
        f"Command: `python experiments/ablation.py {' '.join(sys.argv[1:])}`",
        "",
        f"Architecture and optimizer: `{os.path.relpath(args.flagfile, PROJECT_ROOT)}` for every "
        f"variant{', plus `' + args.extra_flags + '`' if args.extra_flags else ''}"
        + "".join(f"; {v}: `{f}`" for v, f in VARIANT_FLAGS.items()
                  if v in rows and rows[v]) + ". "
        f"BPD: validation split (946 images), ELBO bound (exact for the flows) and "
        f"importance-weighted bound with K={args.importance_samples}. KL: mean KL(q(z|x)||p(z)) "
        "on the validation split in nats; AU: active latent units (Cov_x E_q[z_u] > 0.01). "
        f"Samples: {args.fid_samples} at temperature 0 (x = f^-1(mu(z)), for the flows f^-1(0)"
        " times noise scaled by 0, i.e. one image) and 1, FID/KID/IS in the features of the "
        "project's MNIST classifier against the training split (not Inception: not comparable "
        "to published FIDs); P/R: precision and recall (Kynkaanniemi et al. 2019, k = 3 "
        "nearest neighbours, same features); conf: share of samples the classifier gives >= "
        "0.9 to one class; "
        "cov: entropy of the predicted-label histogram / ln 10. Mean ± std over seeds where "
        "there are several (n in the seeds column). Last row: the held-out real digits "
        "(validation split) through the same FID job, the yardstick (fewer images than the "
        "samples, and FID is biased upward at small counts).",
        "",
        "| variant | seeds | BPD (bound) | BPD (IW) | KL nats | AU | FID T=0 | P T=0 | R T=0 "
        "| conf T=0 | cov T=0 | FID T=1 | KID T=1 | IS T=1 | P T=1 | R T=1 | conf T=1 "
        "| cov T=1 | train s | paper CIFAR-10 BPD / FID |",
        "|" + "---|" * 20,
    ]
    t0, t1 = "samples_t0", "samples_t1"
    columns = LIKELIHOOD_COLUMNS + [
        (t0, "fid", 1), (t0, "precision", 2), (t0, "recall", 2), (t0, "confident_rate", 2),
        (t0, "label_coverage", 2), (t1, "fid", 1), (t1, "kid_mean", 3), (t1, "is_mean", 2),
        (t1, "precision", 2), (t1, "recall", 2), (t1, "confident_rate", 2),
        (t1, "label_coverage", 2)]
    for variant, runs in rows.items():
        if not runs:
            continue
        paper = PAPER_CIFAR10.get(variant, ("—", "—"))
        lines.append(" | ".join([
            f"| {variant}", str(len(runs)), *cells(runs, columns),
            fmt([r["train_seconds"] for r in runs], 0), f"{paper[0]} / {paper[1]} |"]))
    p, r = fmt([real.get("precision")], 2), fmt([real.get("recall")], 2)
    lines.append(" | ".join([
        f"| held-out real digits ({real['num_samples']})", "—", "—", "—", "—", "—",
        f"{real['fid']:.1f}", p, r, f"{real['confident_rate']:.2f}",
        f"{real['label_coverage']:.2f}", f"{real['fid']:.1f}", f"{real['kid_mean']:.3f}",
        f"{real['is_mean']:.2f}", p, r, f"{real['confident_rate']:.2f}",
        f"{real['label_coverage']:.2f}", "—", "— |"]))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, train_steps=800, validation_every=100, fid_samples=2000,
                      flagfile=os.path.join(PROJECT_ROOT, "configs", "quickstart.cfg"))
    parser.add_argument("--more_seeds_variants", default="vae_f,cqf")
    parser.add_argument("--work_dir", default=os.path.join(PROJECT_ROOT, "work", "quickstart"))
    parser.add_argument("--mnist_dir", default=DEFAULT_MNIST)
    parser.add_argument("--out", default=os.path.join(PROJECT_ROOT, "experiments", "results", "ablation.md"))
    args = parser.parse_args()
    args.runs_dir = args.runs_dir or os.path.join(PROJECT_ROOT, "work", "ablation", args.tag)
    jobs = jobs_of(args)
    protocol = prepare(os.path.abspath(args.work_dir), args.mnist_dir)
    rows: dict[str, list[dict]] = {v: [] for v, _ in jobs}
    for i, (variant, seed) in enumerate(jobs, 1):
        rows[variant].append(run_one(variant, seed, args, protocol, i, len(jobs)))
    lines = table(rows, args, heldout_real(os.path.abspath(args.work_dir), protocol))
    write_outputs(rows, args, lines, "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
