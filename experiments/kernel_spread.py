"""How much the quickstart's numbers move from machine to machine: the whole quickstart
(preprocessing, classifier, reference statistics, training, prior refit, evaluation) run
once per *kernel profile*, each emulating a machine whose kernels add floating-point
numbers in another order, on this one machine, same code, same seed.

    python experiments/kernel_spread.py [--profiles default,sse41,eigen] [--parallel 2] \
        [--work_root work/kernel_spread] [--out experiments/results/kernel_spread.md]

Profiles (environment of every stage of that quickstart):

* ``default``: oneDNN with this CPU's widest vector ISA, TensorFlow's thread pools;
* ``avx``: ``ONEDNN_MAX_CPU_ISA=AVX`` (an AVX-only CPU: 8-wide, no FMA);
* ``sse41``: ``ONEDNN_MAX_CPU_ISA=SSE41`` (an old x86 CPU: 4-wide, no FMA);
* ``eigen``: ``TF_ENABLE_ONEDNN_OPTS=0`` (TensorFlow's Eigen kernels, as on a build
  without oneDNN, e.g. ARM);
* ``one_thread``: one intra-op thread (a machine with one core: other partial sums).

Runs on the same machine with ``--deterministic`` off and the same profile are bit-identical
(``benchmarks/results/bench_deterministic.txt``), so the table's spread is the kernels'
alone. A profile's quickstart is skipped when its ``quickstart_results.json`` exists.
The table gives every profile's numbers, then mean +- std (n - 1) and max - min per column.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILES = {
    "default": {},
    "avx": {"ONEDNN_MAX_CPU_ISA": "AVX"},
    "sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "one_thread": {"TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"},
}
# (column, key path in quickstart_results.json, format)
COLUMNS = [
    ("IW-8 bits/dim", ("bpd", "bpd_iw"), "{:.3f}"),
    ("ELBO bits/dim", ("bpd", "bpd"), "{:.3f}"),
    ("active units", ("latent", "active_units"), "{:.0f}"),
    ("FID T=0", ("samples_t0", "fid"), "{:.2f}"),
    ("FID T=1", ("samples_t1", "fid"), "{:.2f}"),
    ("precision T=0", ("samples_t0", "precision"), "{:.3f}"),
    ("recall T=0", ("samples_t0", "recall"), "{:.3f}"),
    ("held-out real FID", ("heldout_real", "fid"), "{:.2f}"),
]


def value(results: dict, path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in a quickstart's results, or None if absent."""
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else None


def launch(profile: str, work_root: str, extra: list[str]) -> subprocess.Popen | None:
    """Starts the quickstart of ``profile`` (None if its results exist), logging to
    ``<work_root>/<profile>.log``."""
    work = os.path.join(work_root, profile)
    if os.path.isfile(os.path.join(work, "quickstart_results.json")):
        print(f"{profile}: results exist, skipped", flush=True)
        return None
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, **PROFILES[profile])
    log = open(os.path.join(work_root, f"{profile}.log"), "a")
    cmd = [sys.executable, "-m", "pipeline.quickstart", f"--work_dir={work}", *extra]
    print(f"{profile}: {' '.join(f'{k}={v}' for k, v in PROFILES[profile].items())} "
          f"{' '.join(cmd[1:])}  (log {log.name})", flush=True)
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_all(profiles: list[str], work_root: str, parallel: int, extra: list[str]) -> None:
    """Every profile's quickstart, ``parallel`` at a time; raises if one fails."""
    pending, running = list(profiles), {}
    while pending or running:
        while pending and len(running) < parallel:
            name = pending.pop(0)
            proc = launch(name, work_root, extra)
            if proc is not None:
                running[name] = (proc, time.time())
        for name, (proc, start) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                print(f"{name}: exit {proc.returncode} after {(time.time() - start) / 60:.1f} "
                      "min", flush=True)
                if proc.returncode != 0:
                    raise SystemExit(f"the {name} quickstart failed; see "
                                     f"{os.path.join(work_root, name + '.log')}")
        time.sleep(5)


def table(profiles: list[str], work_root: str) -> tuple[str, dict]:
    """The markdown table and the JSON of every profile's numbers."""
    rows, numbers = [], {}
    for name in profiles:
        with open(os.path.join(work_root, name, "quickstart_results.json")) as f:
            results = json.load(f)
        numbers[name] = {col: value(results, path) for col, path, _ in COLUMNS}
        numbers[name]["minutes"] = results.get("minutes")
        rows.append(f"| {name} | " + " | ".join(
            "n/a" if numbers[name][c] is None else fmt.format(numbers[name][c])
            for c, _, fmt in COLUMNS) + f" | {results.get('minutes')} |")
    summary = {}
    for col, _, fmt in COLUMNS:
        vals = [numbers[p][col] for p in profiles if numbers[p][col] is not None]
        if len(vals) >= 2:
            summary[col] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals),
                            "range": max(vals) - min(vals), "n": len(vals)}
    head = "| profile | " + " | ".join(c for c, _, _ in COLUMNS) + " | minutes |"
    sep = "|" + "---|" * (len(COLUMNS) + 2)
    mean_row = "| mean +- std | " + " | ".join(
        f"{fmt.format(summary[c]['mean'])} +- {fmt.format(summary[c]['std'])}"
        if c in summary else "n/a" for c, _, fmt in COLUMNS) + " | |"
    range_row = "| max - min | " + " | ".join(
        fmt.format(summary[c]["range"]) if c in summary else "n/a" for c, _, fmt in COLUMNS
    ) + " | |"
    return "\n".join([head, sep, *rows, mean_row, range_row]), {
        "profiles": {p: PROFILES[p] for p in profiles}, "numbers": numbers, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profiles", default="default,sse41,eigen",
                   help=f"comma-separated, of {', '.join(PROFILES)}")
    p.add_argument("--parallel", type=int, default=1, help="quickstarts at once")
    p.add_argument("--work_root", default=os.path.join(PROJECT_ROOT, "work", "kernel_spread"))
    p.add_argument("--out", default=os.path.join(PROJECT_ROOT, "experiments", "results",
                                                 "kernel_spread.md"))
    args, extra = p.parse_known_args(argv)  # the rest goes to every pipeline.quickstart
    profiles = [s.strip() for s in args.profiles.split(",") if s.strip()]
    unknown = [s for s in profiles if s not in PROFILES]
    if unknown or len(profiles) < 2:
        p.error(f"--profiles={args.profiles!r}: expected two or more of {', '.join(PROFILES)}")
    run_all(profiles, args.work_root, args.parallel, extra)
    text, data = table(profiles, args.work_root)
    from artifacts import machine_info

    here = machine_info.machine_info()
    command = " ".join(["python experiments/kernel_spread.py", *(
        sys.argv[1:] if argv is None else argv)])
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({**data, "command": command, "machine": here}, f, indent=2)
    with open(args.out, "w") as f:
        f.write(f"# The quickstart under other kernels ({time.strftime('%Y-%m-%d')})\n\n"
                f"Command: `{command}`\n\nEvery row is a whole `make quickstart` (same code, "
                "seed and data) under one kernel profile (the script's docstring says what "
                "each emulates); `minutes` is wall time, with other jobs on the machine. "
                f"Machine: {machine_info.describe(here)}.\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
