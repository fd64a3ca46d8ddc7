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
import dataclasses
import json
import os
import shlex
import statistics
import sys
import time

from pipeline.quickstart import (
    DEFAULT_MNIST,
    PROJECT_ROOT,
    last_json,
    missing_pr_features,
    preprocess_mnist,
    run_stage,
)

ALL_VARIANTS = "vae,vae_f,cq,cqf,gan,flow,flow_wgan,flowgan"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What every row of an ablation is judged on: the data set and its held-out split
    (``max_examples``: a fixed prefix of it, None = all), the FID extractor and the
    reference statistics of the training split."""

    data_dir: str
    extractor: str
    extractor_path: str
    ref_stats: str
    eval_split: str = "validation"
    max_examples: int | None = None

    def extractor_flags(self) -> list[str]:
        return [f"--extractor={self.extractor}", f"--extractor_path={self.extractor_path}",
                f"--reference_stats={self.ref_stats}"]
PAPER_CIFAR10 = {  # Lucas et al. 2019, table "impact of training objectives and NVP decoder"
    "vae": ("4.4", "171"), "vae_f": ("3.5", "112"), "cq": ("4.4", "58.6"),
    "cqf": ("3.9", "28.0"), "gan": ("—", "31.4"), "flow": ("3.5 (Real NVP)", "—"),
    "flowgan": ("4.2 (FlowGAN, ADE table)", "IS 3.9, no FID"),
}
# The Real NVP baselines have no latent: they keep 3x3 coupling nets (a full Real NVP)
# whatever --flow_kernel_size the flagfile gives the latent variants (a local flow alone
# would only be a model of 2x2 pixel blocks).
VARIANT_FLAGS = {"flow": "--flow_kernel_size=3", "flow_wgan": "--flow_kernel_size=3",
                 "flowgan": "--flow_kernel_size=3"}
TEMPERATURES = (0.0, 1.0)
BPD_AXIS_TOP = 8.5  # bits/dim; a uniform model scores 8


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


def ensure_reference_stats(work: str, data_dir: str, extractor: str, extractor_path: str,
                           ref_stats: str) -> None:
    """Reference statistics of the training split (with KID and precision/recall features)
    in ``ref_stats``, (re)made when missing, of another extractor or without P&R features;
    the cached yardstick row in ``work`` goes with them."""
    from beam_jobs.fid.identity import stale_statistics_reason

    stale = (stale_statistics_reason(ref_stats, extractor, extractor_path)
             or missing_pr_features(ref_stats))
    if not stale:
        return
    print(f"reference statistics needed: {stale}")
    real_fid = os.path.join(work, "heldout_real_fid.json")
    if os.path.isfile(real_fid):
        os.remove(real_fid)
    run_stage(0, 0, "reference statistics of the training split", [
        sys.executable, "-m", "beam_jobs.fid", f"--data_dir={data_dir}", "--split=train",
        f"--extractor={extractor}", f"--extractor_path={extractor_path}",
        f"--output_stats={ref_stats}", "--save_kid_features", "--save_pr_features"],
        capture=True)


def heldout_real(work: str, protocol: Protocol, what: str = "held-out real digits") -> dict:
    """The FID job's numbers for the held-out real images (the protocol's split) against
    the same reference statistics: the yardstick of every sample row (cached in ``work``)."""
    path = os.path.join(work, "heldout_real_fid.json")
    if os.path.isfile(path):
        with open(path) as f:
            if "precision" not in json.load(f):  # written before precision/recall
                os.remove(path)
    if not os.path.isfile(path):
        out = last_json(run_stage(0, 0, what, [
            sys.executable, "-m", "beam_jobs.fid", f"--data_dir={protocol.data_dir}",
            f"--split={protocol.eval_split}", *protocol.extractor_flags()], capture=True))
        with open(path, "w") as f:
            json.dump(out, f)
    with open(path) as f:
        return json.load(f)


def fmt(values: list, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def cells(runs: list[dict], columns: list[tuple[str, str, int]]) -> list[str]:
    """One table cell per (result key, field, digits) column: :func:`fmt` over the runs."""
    return [fmt([r.get(key, {}).get(field) for r in runs], digits) for key, field, digits in columns]


def paired_differences(rows: dict[str, list[dict]], base: str, other: str,
                       columns: list[tuple[str, str, int, str]]) -> str | None:
    """One line: ``other`` minus ``base`` seed by seed (seeds both ran; same seed = same
    initialisation of the shared networks and the same data order), mean ± std over the
    pairs and each pair's value, for each (result key, field, digits, label) column; None
    when fewer than two seeds pair up."""
    by_seed = {r["seed"]: r for r in rows.get(base, [])}
    pairs = [(by_seed[r["seed"]], r) for r in rows.get(other, []) if r["seed"] in by_seed]
    if len(pairs) < 2:
        return None
    parts = []
    for key, field, digits, label in columns:
        diffs = [o.get(key, {}).get(field) - b.get(key, {}).get(field) for b, o in pairs
                 if o.get(key, {}).get(field) is not None and b.get(key, {}).get(field) is not None]
        if len(diffs) == len(pairs):
            each = ", ".join(f"{d:+.{digits}f}" for d in diffs)
            parts.append(f"{label} {fmt(diffs, digits)} ({each})")
    seeds = ", ".join(str(o["seed"]) for _, o in pairs)
    return (f"Paired by seed, {other} minus {base} (seeds {seeds}; mean ± std of the "
            f"differences, then each seed's): " + "; ".join(parts) + ".")


LIKELIHOOD_COLUMNS = [("bpd", "bpd", 3), ("bpd", "bpd_iw", 3), ("latent", "kl_mean", 1),
                      ("latent", "active_units", 1)]


def add_run_arguments(parser: argparse.ArgumentParser, *, train_steps: int,
                      validation_every: int, fid_samples: int, flagfile: str) -> None:
    """The flags every ablation script shares: which runs, their budget and evaluation."""
    parser.add_argument("--variants", default=ALL_VARIANTS)
    parser.add_argument("--seeds", default="0", help="seeds of every variant")
    parser.add_argument("--more_seeds", default="", help="further seeds of --more_seeds_variants")
    parser.add_argument("--train_steps", type=int, default=train_steps)
    parser.add_argument("--validation_every", type=int, default=validation_every)
    parser.add_argument("--fid_samples", type=int, default=fid_samples)
    parser.add_argument("--importance_samples", type=int, default=8)
    parser.add_argument("--flagfile", default=flagfile)
    parser.add_argument("--extra_flags", default="", help="more pipeline.train flags, e.g. "
                        "'--free_bits=1.0' (applied to every run and named in the table)")
    parser.add_argument("--tag", default="main", help="names the runs directory and MLflow experiment")
    parser.add_argument("--runs_dir", default=None)
    parser.add_argument("--mlflow_tracking_uri",
                        default=f"sqlite:///{os.path.join(PROJECT_ROOT, 'mlflow.db')}")
    parser.add_argument("--no_grids", action="store_true", help="skip the sample grid PNGs")


def jobs_of(args) -> list[tuple[str, int]]:
    """(variant, seed) of every run: --seeds for each variant, --more_seeds for
    --more_seeds_variants."""
    seeds = [int(s) for s in args.seeds.split(",") if s]
    more = [int(s) for s in args.more_seeds.split(",") if s]
    more_variants = set(args.more_seeds_variants.split(","))
    return [(v, s) for v in args.variants.split(",") if v
            for s in seeds + (more if v in more_variants else [])]


def row_machine(model_dir: str, tracking_uri: str) -> dict[str, str]:
    """The machine that trained a row: the ``machine.*`` params its MLflow run logged
    (:func:`artifacts.machine_info.of_mlflow_run`; {} for runs from before they were
    logged, or without a run)."""
    from artifacts import machine_info, tracking

    return machine_info.of_mlflow_run(tracking.run_id_of(model_dir), tracking_uri)


def machine_line(rows: dict[str, list[dict]], this_machine: dict) -> str:
    """One Markdown line: the machine that wrote the results file, and the machines that
    trained its rows (their runs' ``machine.*`` params, where logged)."""
    from artifacts import machine_info

    groups: dict[str, list[str]] = {}
    for variant, runs in rows.items():
        for run in runs:
            key = machine_info.describe_trained(run.get("machine") or {}, this_machine)
            groups.setdefault(key, []).append(f"{variant} s{run['seed']}")
    trained_on = "; ".join(f"{key}: {', '.join(names)}" for key, names in groups.items())
    return (f"Machine: this file was written on {machine_info.describe(this_machine)}. "
            f"Rows trained on: {trained_on}.")


def write_outputs(rows: dict[str, list[dict]], args, lines: list[str], curve_note: str,
                  extra_json: dict | None = None) -> None:
    """The validation-BPD curves and sample grids next to ``args.out``, then the table
    (``lines`` plus their names, and a line on the machine that wrote the file and the
    machines that trained the rows) and a JSON of every row with the same (``machine``,
    each row's ``machine``: its run's, where logged) and the command; prints the table."""
    from artifacts import machine_info

    this_machine = machine_info.machine_info()
    for variant, runs in rows.items():  # rows stored before rows recorded their machine
        for run in runs:
            if "machine" not in run:
                run["machine"] = row_machine(
                    os.path.join(args.runs_dir, f"{variant}_seed{run['seed']}"),
                    args.mlflow_tracking_uri)
    stem = os.path.splitext(args.out)[0]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    curves = validation_curves(rows, args, stem + "_validation_bpd.png")
    if curves:
        lines += ["", f"Validation-BPD curves{curve_note}: "
                  f"`{os.path.relpath(curves, os.path.dirname(args.out))}`"]
    if not args.no_grids:
        grids = sample_grids(rows, args, stem)
        lines += ["", "Sample grids (64 samples, seed 0, first seed's model): " +
                  ", ".join(f"`{os.path.basename(g)}`" for g in grids)]
    lines += ["", machine_line(rows, this_machine)]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({**(extra_json or {}), "machine": this_machine,
                   "command": " ".join(["python", os.path.relpath(sys.argv[0], PROJECT_ROOT),
                                        *map(shlex.quote, sys.argv[1:])]),
                   "args": dict(vars(args)), "rows": rows}, f, indent=2)
    print("\n".join(lines))
    print(f"\nwritten to {args.out}")


def tracked_train_seconds(model_dir: str, tracking_uri: str) -> float | None:
    """Wall time of a run's training as MLflow recorded it: from the run's start to its
    last ``train/`` metric (so a run that was stopped and resumed later, or whose last
    command only finalized it, still reports its training time); None without a run."""
    from mlflow.tracking import MlflowClient

    from artifacts import tracking

    run_id = tracking.run_id_of(model_dir)
    if not run_id:
        return None
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    last = max((m.timestamp for m in client.get_metric_history(run_id, "train/loss")),
               default=None)
    return None if last is None else (last - run.info.start_time) / 1000.0


def run_one(variant: str, seed: int, args, protocol: Protocol, index: int, total: int,
            variant_flags: dict[str, str] | None = None, experiment: str = "ablation") -> dict:
    """Trains and evaluates one (variant, seed) (``variant_flags``: extra training flags by
    variant, default :data:`VARIANT_FLAGS`); returns its stored result row."""
    variant_flags = VARIANT_FLAGS if variant_flags is None else variant_flags
    py = sys.executable
    model_dir = os.path.join(args.runs_dir, f"{variant}_seed{seed}")
    result_file = os.path.join(model_dir, "ablation_result.json")
    if os.path.isfile(result_file):
        with open(result_file) as f:
            return json.load(f)
    start = time.time()
    run_stage(index, total, f"train {variant} seed {seed}", [
        py, "-m", "pipeline.train", f"--flagfile={args.flagfile}",
        f"--data_dir={protocol.data_dir}",
        f"--model_dir={model_dir}", f"--variant={variant}", f"--seed={seed}",
        f"--train_steps={args.train_steps}", f"--validation_every={args.validation_every}",
        f"--run_name={experiment}-{args.tag}-{variant}-{seed}",
        f"--experiment={experiment}-{args.tag}",
        f"--mlflow_tracking_uri={args.mlflow_tracking_uri}", "--show_progress=false",
        *shlex.split(variant_flags.get(variant, "")), *shlex.split(args.extra_flags)],
        capture=True)
    command_seconds = time.time() - start
    row = {"variant": variant, "seed": seed,
           "train_seconds": round(tracked_train_seconds(model_dir, args.mlflow_tracking_uri)
                                  or command_seconds, 1),
           "command_seconds": round(command_seconds, 1),
           "extra_flags": " ".join(filter(None, [variant_flags.get(variant, ""),
                                                  args.extra_flags])),
           "train_steps": args.train_steps, "load_average_end": os.getloadavg()[0],
           "machine": row_machine(model_dir, args.mlflow_tracking_uri)}
    for t in TEMPERATURES:
        cmd = [py, "-m", "pipeline.evaluate", f"--model_dir={model_dir}",
               f"--fid_samples={args.fid_samples}", f"--temperature={t}",
               *protocol.extractor_flags(), f"--seed={seed}",
               f"--mlflow_tracking_uri={args.mlflow_tracking_uri}"]
        if t == TEMPERATURES[0]:  # BPD and latent once
            cmd += [f"--data_dir={protocol.data_dir}", f"--split={protocol.eval_split}",
                    f"--importance_samples={args.importance_samples}"]
            if protocol.max_examples:
                cmd.append(f"--max_examples={protocol.max_examples}")
        evaluation = last_json(run_stage(index, total, f"evaluate {variant} seed {seed} T={t:g}",
                                         cmd, capture=True))
        row.setdefault("bpd", evaluation.get("bpd", {}))
        row.setdefault("latent", evaluation.get("latent", {}))
        row[f"samples_t{t:g}"] = evaluation.get("samples", {})
    with open(result_file, "w") as f:
        json.dump(row, f, indent=2)
    return row


def validation_curves(rows: dict[str, list[dict]], args, path: str) -> str | None:
    """Validation bits/dim over training of every run (from MLflow) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    from artifacts import tracking

    client = MlflowClient(tracking_uri=args.mlflow_tracking_uri)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for variant, runs in rows.items():
        for r in runs:
            run_id = tracking.run_id_of(os.path.join(args.runs_dir, f"{variant}_seed{r['seed']}"))
            if not run_id:
                continue
            hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "validation/bpd"))
            if hist:
                off = any(not 0.0 <= v <= BPD_AXIS_TOP for _, v in hist)
                ax.plot(*zip(*hist), lw=1.2,
                        label=f"{variant} s{r['seed']}" + (" (off scale)" if off else ""))
                drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training step")
    ax.set_ylabel("validation bits/dim (ELBO bound; exact for flows)")
    ax.set_ylim(0.0, BPD_AXIS_TOP)  # a diverged run must not flatten the others
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sample_grids(rows: dict[str, list[dict]], args, prefix: str) -> list[str]:
    """64 samples at temperature 0 and 1 of each variant's first seed, as PNG grids."""
    from artifacts import images as images_lib
    from artifacts import model_io

    paths = []
    for variant, runs in rows.items():
        if not runs:
            continue
        model, _ = model_io.load_trained_model(
            os.path.join(args.runs_dir, f"{variant}_seed{runs[0]['seed']}"))
        for t in TEMPERATURES:
            path = f"{prefix}_{variant}_t{t:g}.png"
            images_lib.save_grid(model.sample(64, t, seed=0).numpy(), path)
            paths.append(path)
    return paths


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
