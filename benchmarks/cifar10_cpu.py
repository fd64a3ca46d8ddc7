"""The main model on natural images at CPU scale: `cqf` with configs/cifar10_cpu.cfg on
the shared CIFAR-10 JPEGs (../shared/data/cifar10_test_jpg, 32x32x3, 10,000 images split
90/10 by the preprocessing job), then the held-out bits/dim and sample grids.

    python benchmarks/cifar10_cpu.py [--work_dir work/cifar10_cpu] \
        [--out benchmarks/results/cifar10_cpu.md]

Writes the table (training time, validation bits/dim as ELBO and IW bounds, the latent's
KL and active units), the validation-BPD curve values and 64-sample grids at temperature
0 and 1 (``<out stem>_t0.png``, ``_t1.png``). Every stage is the project's real CLI; a
finished stage is skipped when the script runs again.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pipeline.quickstart import PROJECT_ROOT, last_json, run_stage

DEFAULT_ZIP = os.path.join(os.path.dirname(PROJECT_ROOT), "shared", "data", "cifar10_test_jpg",
                           "cifar10_test_jpg.zip")
PAPER_BPD = "3.5-3.9 (ADE paper, full-scale CIFAR-10 training set)"


def load_note(trained: dict) -> str:
    """How busy the machine was while training ran, as recorded in train_seconds.json."""
    if "note" in trained:
        return trained["note"]
    return (f"1-min load average at the end {trained['load_average'][0]:.1f} on "
            f"{os.cpu_count()} CPUs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar_zip", default=DEFAULT_ZIP)
    parser.add_argument("--work_dir", default=os.path.join(PROJECT_ROOT, "work", "cifar10_cpu"))
    parser.add_argument("--flagfile", default=os.path.join(PROJECT_ROOT, "configs", "cifar10_cpu.cfg"))
    parser.add_argument("--importance_samples", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(PROJECT_ROOT, "benchmarks", "results",
                                                      "cifar10_cpu.md"))
    args = parser.parse_args()
    if not os.path.isfile(args.cifar_zip):
        raise SystemExit(f"--cifar_zip={args.cifar_zip!r} does not exist; expected the shared "
                         "cifar10_test_jpg.zip")
    py, work = sys.executable, os.path.abspath(args.work_dir)
    data_dir, model_dir = os.path.join(work, "data"), os.path.join(work, "cqf")
    if not os.path.isfile(os.path.join(data_dir, "dataset.json")):
        run_stage(1, 4, "Beam preprocessing: CIFAR-10 JPEG zip -> TFRecords", [
            py, "-m", "beam_jobs.preprocess", "--source=image_zip", f"--input={args.cifar_zip}",
            f"--output_dir={data_dir}", "--image_size=32", "--validation_fraction=0.1"])
    timing = os.path.join(model_dir, "train_seconds.json")
    if not os.path.isfile(timing):
        start = time.time()
        summary = last_json(run_stage(2, 4, f"training cqf ({args.flagfile})", [
            py, "-m", "pipeline.train", f"--flagfile={args.flagfile}", f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", "--show_progress=false"], capture=True))
        with open(timing, "w") as f:
            json.dump({"seconds": time.time() - start, "load_average": os.getloadavg(),
                       "step": summary.get("step"), "run_id": summary.get("mlflow_run_id")}, f)
    with open(timing) as f:
        trained = json.load(f)
    evaluation = last_json(run_stage(3, 4, "validation bits/dim and latent use", [
        py, "-m", "pipeline.evaluate", f"--model_dir={model_dir}", f"--data_dir={data_dir}",
        "--split=validation", f"--importance_samples={args.importance_samples}"], capture=True))

    from mlflow.tracking import MlflowClient

    from artifacts import images as images_lib
    from artifacts import model_io, tracking

    print("\n=== [4/4] sample grids", flush=True)
    model, step = model_io.load_trained_model(model_dir)
    stem = os.path.splitext(args.out)[0]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    grids = []
    for t in (0.0, 1.0):
        grids.append(images_lib.save_grid(model.sample(64, t, seed=0).numpy(), f"{stem}_t{t:g}.png"))
    tracking.configure(None)
    run_id = tracking.run_id_of(model_dir)
    curve = sorted((m.step, round(m.value, 3))
                   for m in MlflowClient().get_metric_history(run_id, "validation/bpd")) if run_id else []
    bpd, latent = evaluation.get("bpd", {}), evaluation.get("latent", {})
    lines = [
        "# cqf on CIFAR-10 at CPU scale",
        "",
        f"Command: `python benchmarks/cifar10_cpu.py {' '.join(sys.argv[1:])}`; config "
        f"`{os.path.relpath(args.flagfile, PROJECT_ROOT)}`, {step} steps. Data: the shared "
        "CIFAR-10 *test* set JPEGs (lossy), split 90/10 by `beam_jobs.preprocess`; the "
        "bits/dim are of the validation split.",
        "",
        "| training | BPD (ELBO) | BPD (IW, K=%d) | KL nats | active units | paper BPD |"
        % bpd.get("importance_samples", args.importance_samples),
        "|---|---|---|---|---|---|",
        f"| {trained['seconds'] / 60:.1f} min ({load_note(trained)}) | "
        f"{bpd.get('bpd', float('nan')):.3f} ± {bpd.get('bpd_stderr', float('nan')):.3f} | "
        f"{bpd.get('bpd_iw', float('nan')):.3f} | {latent.get('kl_mean', float('nan')):.1f} | "
        f"{latent.get('active_units', '—')} of {latent.get('latent_dim', '—')} | {PAPER_BPD} |",
        "",
        f"Validation bits/dim during training (ELBO, 500 images): {curve}",
        "",
        "Sample grids (64 samples, seed 0): " + ", ".join(f"`{os.path.basename(g)}`" for g in grids),
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
