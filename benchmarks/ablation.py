"""The paper's ablation ("impact of training objectives and NVP decoder") at CPU scale on
real data: every variant trained with the same budget and architecture
(configs/quickstart.cfg), then validation bits/dim and FID/KID/IS of its samples.

    python benchmarks/ablation.py [--variants vae,vae_f,cq,cqf,gan,flow] [--seeds 0,1] \
        [--train_steps 800] [--fid_samples 2000] [--out benchmarks/results/ablation.md]

Uses the quickstart's data set, MNIST classifier and reference statistics
(``make quickstart`` creates them under work/quickstart; they are made here if missing).
Each run is the project's real CLI (pipeline.train, pipeline.evaluate) in a subprocess,
so a finished (variant, seed) is skipped when the script is run again.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.quickstart import DEFAULT_MNIST, PROJECT_ROOT, last_json, run_stage  # noqa: E402

PAPER_CIFAR10 = {  # Lucas et al. 2019, table "impact of training objectives and NVP decoder"
    "vae": ("4.4", "171"), "vae_f": ("3.5", "112"), "cq": ("4.4", "58.6"),
    "cqf": ("3.9", "28.0"), "gan": ("—", "31.4"), "flow": ("3.5 (Real NVP)", "—"),
}


def prepare(work: str, mnist_dir: str) -> tuple[str, str, str]:
    """(data_dir, classifier_dir, reference_stats) made like the quickstart does."""
    py = sys.executable
    data_dir = os.path.join(work, "data", "mnist28")
    classifier = os.path.join(work, "mnist_classifier")
    ref_stats = os.path.join(work, "reference_train_stats.npz")
    if not os.path.isfile(os.path.join(data_dir, "dataset.json")):
        run_stage(0, 0, "preprocess", [py, "-m", "beam_jobs.preprocess", "--source=mnist_idx",
                                       f"--input={mnist_dir}", f"--output_dir={data_dir}",
                                       "--image_size=28", "--grayscale",
                                       "--validation_fraction=0.1"])
    if not os.path.isdir(classifier):
        run_stage(0, 0, "classifier", [py, "-m", "beam_jobs.train_mnist_classifier",
                                       f"--mnist_dir={mnist_dir}", f"--output={classifier}"])
    if not os.path.isfile(ref_stats):
        run_stage(0, 0, "reference stats", [
            py, "-m", "beam_jobs.fid", f"--data_dir={data_dir}", "--split=train",
            "--extractor=mnist_classifier", f"--extractor_path={classifier}",
            f"--output_stats={ref_stats}", "--save_kid_features"], capture=True)
    return data_dir, classifier, ref_stats


def fmt(values: list[float], digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="vae,vae_f,cq,cqf,gan,flow")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--train_steps", type=int, default=800)
    parser.add_argument("--fid_samples", type=int, default=2000)
    parser.add_argument("--importance_samples", type=int, default=8)
    parser.add_argument("--flagfile", default=os.path.join(PROJECT_ROOT, "configs", "quickstart.cfg"))
    parser.add_argument("--work_dir", default=os.path.join(PROJECT_ROOT, "work", "quickstart"))
    parser.add_argument("--runs_dir", default=os.path.join(PROJECT_ROOT, "work", "ablation"))
    parser.add_argument("--mnist_dir", default=DEFAULT_MNIST)
    parser.add_argument("--out", default=os.path.join(PROJECT_ROOT, "benchmarks", "results", "ablation.md"))
    args = parser.parse_args()
    variants = args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    data_dir, classifier, ref_stats = prepare(os.path.abspath(args.work_dir), args.mnist_dir)
    py = sys.executable
    results: dict[str, list[dict]] = {v: [] for v in variants}
    total = len(variants) * len(seeds)
    for i, (variant, seed) in enumerate(((v, s) for v in variants for s in seeds), 1):
        model_dir = os.path.join(args.runs_dir, f"{variant}_seed{seed}")
        result_file = os.path.join(model_dir, "ablation_result.json")
        if os.path.isfile(result_file):
            with open(result_file) as f:
                results[variant].append(json.load(f))
            continue
        start = time.time()
        run_stage(i, total, f"train {variant} seed {seed}", [
            py, "-m", "pipeline.train", f"--flagfile={args.flagfile}", f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", f"--variant={variant}", f"--seed={seed}",
            f"--train_steps={args.train_steps}", f"--run_name=ablation-{variant}-{seed}",
            "--experiment=ablation"], capture=True)
        train_seconds = time.time() - start
        evaluation = last_json(run_stage(i, total, f"evaluate {variant} seed {seed}", [
            py, "-m", "pipeline.evaluate", f"--model_dir={model_dir}", f"--data_dir={data_dir}",
            "--split=validation", f"--importance_samples={args.importance_samples}",
            f"--fid_samples={args.fid_samples}", "--extractor=mnist_classifier",
            f"--extractor_path={classifier}", f"--reference_stats={ref_stats}",
            f"--seed={seed}"], capture=True))
        row = {"variant": variant, "seed": seed, "train_seconds": round(train_seconds, 1),
               "bpd": evaluation.get("bpd", {}), "samples": evaluation.get("samples", {})}
        with open(result_file, "w") as f:
            json.dump(row, f, indent=2)
        results[variant].append(row)

    lines = [
        f"# Ablation on MNIST 28x28 (CPU scale): {args.train_steps} steps of batch 32 per run, "
        f"seeds {args.seeds}",
        "",
        f"Architecture and optimizer: `{os.path.relpath(args.flagfile, PROJECT_ROOT)}` for every "
        f"variant. BPD: validation split (946 images), ELBO bound (exact for `flow`) and "
        f"importance-weighted bound with K={args.importance_samples}. FID/KID/IS: "
        f"{args.fid_samples} samples at temperature 1 against the training split, features of "
        "the project's MNIST classifier (not Inception: not comparable to published FIDs). "
        "Mean ± std over seeds where there are several.",
        "",
        "| variant | BPD (bound) | BPD (IW bound) | FID | KID | IS | train s | paper CIFAR-10 BPD / FID |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in variants:
        rows = results[variant]
        bpd = [r["bpd"].get("bpd") for r in rows if r["bpd"]]
        iw = [r["bpd"].get("bpd_iw") for r in rows if r["bpd"]]
        fid = [r["samples"].get("fid") for r in rows]
        kid = [r["samples"].get("kid_mean") for r in rows]
        inception = [r["samples"].get("is_mean") for r in rows]
        secs = [r["train_seconds"] for r in rows]
        paper = PAPER_CIFAR10.get(variant, ("—", "—"))
        lines.append(f"| {variant} | {fmt(bpd, 3)} | {fmt(iw, 3)} | {fmt(fid, 2)} | "
                     f"{fmt(kid, 4)} | {fmt(inception, 2)} | {fmt(secs, 0)} | "
                     f"{paper[0]} / {paper[1]} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=2)
    print("\n".join(lines))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
