"""The paper's CIFAR-10 ablation ("impact of training objectives and NVP decoder") at CPU
scale: every variant trained on CIFAR-10's 50,000 training images with the same budget
and architecture (``configs/cifar10_cpu.cfg``), judged on the 10,000 test images.

    python experiments/cifar10_ablation.py [--variants vae,vae_f,cq,cqf,gan,flow,flowgan] \
        [--seeds 0] [--more_seeds 1,2 --more_seeds_variants vae_f,cqf,flow] \
        [--train_steps 1500] [--fid_samples 5000] [--eval_examples 2000] \
        [--tag main] [--out experiments/results/cifar10_ablation.md]

Stages (each the project's real CLI in a subprocess, each skipped when its output exists,
so the table is regenerated from stored results and any row can be re-judged):

1. the data set: ``beam_jobs.preprocess`` of the two shared zips (train 50,000, test
   10,000; ``--split_by=top_folder``);
2. the FID extractor: ``beam_jobs.fid.train_classifier`` on the training split (its test
   accuracy is in the table's header), and reference statistics of the training split
   with KID and precision/recall features;
3. per (variant, seed): ``pipeline.train`` (curve: ELBO of the first 500 test images),
   ``pipeline.evaluate`` (bits/dim on the first ``--eval_examples`` test images by the ELBO
   and the IW bound with K = ``--importance_samples``; the latent's KL and active units;
   FID/KID/IS, precision and recall of ``--fid_samples`` samples at temperature 0 and 1)
   and ``serving.export`` (a SavedModel under ``<runs_dir>/exports``);
4. the table, a JSON of every number, the validation-BPD curves (PNG) and a 64-sample grid
   per row at temperature 0 and 1, next to ``--out``.

FID/KID/IS/P/R are in the features of the project's CIFAR-10 classifier, not Inception:
comparable between the rows of this table only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ablation_protocol import Protocol, ensure_reference_stats, heldout_real
from ablation_report import (
    LIKELIHOOD_COLUMNS,
    PAPER_CIFAR10,
    cells,
    fmt,
    paired_differences,
    write_outputs,
)
from ablation_runs import add_run_arguments, jobs_of, run_one

from pipeline.quickstart import PROJECT_ROOT, run_stage

SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), "shared", "data")
TRAIN_ZIP = os.path.join(SHARED, "cifar10_train_jpg", "cifar10_train_jpg.zip")
TEST_ZIP = os.path.join(SHARED, "cifar10_test_jpg", "cifar10_test_jpg.zip")
ALL_VARIANTS = "vae,vae_f,cq,cqf,gan,flow,flowgan"
# The Real NVP baselines have no latent: they keep 3x3 coupling nets (a full Real NVP)
# where the latent variants have the config's local flow.
VARIANT_FLAGS = {"flow": "--flow_kernel_size=3", "flowgan": "--flow_kernel_size=3"}
# The FID extractor of the table: beam_jobs.fid.train_classifier's defaults (airbench width 32,
# 5 epochs, no time budget, so deterministic for its seed): 85.1 % test accuracy, 26 min on
# the loaded 2-core VM (2026-12-06).
CLASSIFIER_FLAGS = ("--width=32", "--epochs=5")


def prepare(work: str, data_dir: str, eval_examples: int) -> tuple[Protocol, dict]:
    """The CIFAR-10 protocol (data set, classifier, reference statistics of the training
    split), each made if missing; also returns the classifier's training report."""
    py = sys.executable
    if not os.path.isfile(os.path.join(data_dir, "dataset.json")):
        run_stage(1, 3, "Beam preprocessing: the two CIFAR-10 zips -> train/test TFRecords", [
            py, "-m", "beam_jobs.preprocess", "--source=image_zip",
            f"--input={TRAIN_ZIP},{TEST_ZIP}", "--split_by=top_folder",
            f"--output_dir={data_dir}", "--image_size=32"])
    classifier = os.path.join(work, "cifar10_classifier")
    if not os.path.isfile(os.path.join(classifier, "train_report.json")):
        run_stage(2, 3, "FID extractor: a classifier on the training split", [
            py, "-m", "beam_jobs.fid.train_classifier", f"--data_dir={data_dir}",
            f"--output={classifier}", "--train_split=train", "--eval_split=test",
            *CLASSIFIER_FLAGS])
    with open(os.path.join(classifier, "train_report.json")) as f:
        report = json.load(f)
    ref_stats = os.path.join(work, "reference_train_stats.npz")
    ensure_reference_stats(work, data_dir, "classifier", classifier, ref_stats)
    return Protocol(data_dir, "classifier", classifier, ref_stats, eval_split="test",
                    max_examples=eval_examples), report


def table(rows: dict[str, list[dict]], args, real: dict, report: dict) -> list[str]:
    flags = "".join(f"; {v}: `{f}`" for v, f in VARIANT_FLAGS.items() if rows.get(v))
    lines = [
        f"# CIFAR-10 ablation at CPU scale: {args.train_steps} steps of batch 32 per run",
        "",
        f"Command: `python experiments/cifar10_ablation.py {' '.join(sys.argv[1:])}`",
        "",
        f"Trained on the 50,000 training images, judged on the test images. Architecture and "
        f"optimizer: `{os.path.relpath(args.flagfile, PROJECT_ROOT)}` for every variant"
        f"{', plus `' + args.extra_flags + '`' if args.extra_flags else ''}{flags}. "
        f"BPD: the first {args.eval_examples} test images, ELBO bound (exact for the flows) "
        f"and importance-weighted bound with K={args.importance_samples}; bits/dim of the "
        "JPEG re-encodings, not comparable with published CIFAR-10 figures. KL: mean "
        "KL(q(z|x)||p(z)) on those images in nats; AU: active latent units (Cov_x E_q[z_u] > "
        f"0.01) of {'the latent'}. Samples: {args.fid_samples} at temperature 0 (x = "
        "f^-1(mu(z)); for the flows one image, f^-1(0)) and 1; FID/KID/IS against the "
        "training split and precision/recall (Kynkaanniemi et al. 2019, k = 3; P = the "
        "paper's quality, R = its coverage) in the features of the project's CIFAR-10 "
        f"classifier (test accuracy {report.get('accuracy', float('nan')):.3f}; not "
        "Inception: comparable between these rows only). Mean ± std over seeds where there "
        "are several (n in the seeds column). train s: training wall time as MLflow recorded "
        "it (run start to the last logged step) on the 2-core machine; load: the 1-minute "
        "load average when its training command returned (other jobs shared the cores while these "
        "rows trained: the times are not the config's speed alone). Last row: the real test "
        "images through the same FID job.",
        "",
        "| variant | seeds | BPD (bound) | BPD (IW) | KL nats | AU | FID T=0 | P T=0 | R T=0 "
        "| FID T=1 | KID T=1 | IS T=1 | P T=1 | R T=1 | train s | load | paper BPD / FID |",
        "|" + "---|" * 17,
    ]
    t0, t1 = "samples_t0", "samples_t1"
    columns = LIKELIHOOD_COLUMNS + [
        (t0, "fid", 1), (t0, "precision", 2), (t0, "recall", 2), (t1, "fid", 1),
        (t1, "kid_mean", 3), (t1, "is_mean", 2), (t1, "precision", 2), (t1, "recall", 2)]
    for variant, runs in rows.items():
        if not runs:
            continue
        paper = PAPER_CIFAR10.get(variant, ("—", "—"))
        lines.append(" | ".join([
            f"| {variant}", str(len(runs)), *cells(runs, columns),
            fmt([r["train_seconds"] for r in runs], 0),
            fmt([r.get("load_average_end") for r in runs], 1), f"{paper[0]} / {paper[1]} |"]))
    p, r = fmt([real.get("precision")], 2), fmt([real.get("recall")], 2)
    lines.append(" | ".join([
        f"| real test images ({real['num_samples']})", "—", "—", "—", "—", "—",
        f"{real['fid']:.1f}", p, r, f"{real['fid']:.1f}", f"{real['kid_mean']:.3f}",
        f"{real['is_mean']:.2f}", p, r, "—", "—", "— |"]))
    paired = paired_differences(rows, "vae_f", "cqf", [
        ("bpd", "bpd_iw", 3, "IW bits/dim"), (t0, "fid", 1, "FID T=0"), (t1, "fid", 1, "FID T=1"),
        (t0, "precision", 2, "P T=0"), (t1, "precision", 2, "P T=1"),
        (t1, "recall", 2, "R T=1")])
    if paired:
        lines += ["", paired]
    stored = [f"{v} seed {run['seed']}: `{run.get('extra_flags') or 'none'}`"
              for v, runs in rows.items() for run in runs]
    lines += ["", "Training flags beyond the flagfile, as each row recorded them when it was "
              "trained: " + "; ".join(stored) + "."]
    return lines


def export_row(variant: str, seed: int, args) -> str:
    """The row's model as a TF Serving SavedModel under ``<runs_dir>/exports`` (kept, so
    the row can be served or re-judged without retraining)."""
    export_dir = os.path.join(args.runs_dir, "exports")
    name = f"{variant}_seed{seed}"
    if not os.path.isdir(os.path.join(export_dir, name)):
        run_stage(0, 0, f"export {name}", [
            sys.executable, "-m", "serving.export",
            f"--model_dir={os.path.join(args.runs_dir, name)}", f"--export_dir={export_dir}",
            f"--model_name={name}", "--nomlflow"], capture=True)
    return os.path.join(export_dir, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, train_steps=1500, validation_every=250, fid_samples=5000,
                      flagfile=os.path.join(PROJECT_ROOT, "configs", "cifar10_cpu.cfg"))
    parser.set_defaults(variants=ALL_VARIANTS)
    parser.add_argument("--more_seeds_variants", default="vae_f,cqf,flow")
    parser.add_argument("--eval_examples", type=int, default=2000,
                        help="BPD on this many test images (a fixed prefix of the split)")
    parser.add_argument("--work_dir", default=os.path.join(PROJECT_ROOT, "work", "cifar10"),
                        help="data set, classifier and reference statistics")
    parser.add_argument("--data_dir", default=None, help="default: <work_dir>/data")
    parser.add_argument("--no_export", action="store_true", help="skip the SavedModel exports")
    parser.add_argument("--out", default=os.path.join(PROJECT_ROOT, "experiments", "results",
                                                      "cifar10_ablation.md"))
    args = parser.parse_args()
    work = os.path.abspath(args.work_dir)
    args.runs_dir = args.runs_dir or os.path.join(PROJECT_ROOT, "work", "cifar10_ablation", args.tag)
    jobs = jobs_of(args)
    protocol, report = prepare(work, args.data_dir or os.path.join(work, "data"),
                               args.eval_examples)
    rows: dict[str, list[dict]] = {v: [] for v, _ in jobs}
    for i, (variant, seed) in enumerate(jobs, 1):
        rows[variant].append(run_one(variant, seed, args, protocol, i, len(jobs),
                                     VARIANT_FLAGS, experiment="cifar10"))
        if not args.no_export:
            export_row(variant, seed, args)
    lines = table(rows, args, heldout_real(work, protocol, "real test images"), report)
    write_outputs(rows, args, lines, " (ELBO of the first 500 test images)",
                  {"classifier": report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
