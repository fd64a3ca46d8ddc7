"""What an ablation writes (experiments/ablation.py, experiments/cifar10_ablation.py): table
cells (mean ± std over seeds), paired-by-seed differences, the machines, the
validation-BPD curves, sample grids, and the Markdown table and JSON next to ``--out``.
"""
from __future__ import annotations

import json
import os
import shlex
import statistics
import sys

from ablation_runs import TEMPERATURES, row_machine

from pipeline.quickstart import PROJECT_ROOT

PAPER_CIFAR10 = {  # Lucas et al. 2019, table "impact of training objectives and NVP decoder"
    "vae": ("4.4", "171"), "vae_f": ("3.5", "112"), "cq": ("4.4", "58.6"),
    "cqf": ("3.9", "28.0"), "gan": ("—", "31.4"), "flow": ("3.5 (Real NVP)", "—"),
    "flowgan": ("4.2 (FlowGAN, ADE table)", "IS 3.9, no FID"),
}
BPD_AXIS_TOP = 8.5  # bits/dim; a uniform model scores 8


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
    colours = plt.get_cmap("tab10").colors  # one colour per variant, one line style per seed
    styles = ("-", "--", ":", "-.")
    for v_index, (variant, runs) in enumerate(rows.items()):
        for s_index, r in enumerate(runs):
            run_id = tracking.run_id_of(os.path.join(args.runs_dir, f"{variant}_seed{r['seed']}"))
            if not run_id:
                continue
            hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "validation/bpd"))
            if hist:
                off = any(not 0.0 <= v <= BPD_AXIS_TOP for _, v in hist)
                ax.plot(*zip(*hist), lw=1.2, color=colours[v_index % len(colours)],
                        linestyle=styles[s_index % len(styles)],
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
