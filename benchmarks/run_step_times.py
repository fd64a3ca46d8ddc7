"""Not a benchmark: where the time of finished training runs went, from their MLflow metric
timestamps (``train/loss`` is logged every ``--log_every`` steps).

    python benchmarks/run_step_times.py --tracking_uri sqlite:///mlflow.db RUN_ID [RUN_ID ...] \
        [--out FILE]

For each run: its compute dtype and TensorFlow thread pools (the ``compute_dtype_used`` and
``machine.*_op_threads`` params), seconds from the run's start to the first logged step
(start-up, tracing, the first steps), seconds of the training loop from the first to the last
logged step (validation and sample grids in it included), the median ms per step over the
logging intervals, and seconds from the last logged step to the run's end (in a quickstart
that includes its later stages, which log into the same run).
"""
from __future__ import annotations

import argparse
import statistics
import sys


def run_lines(client, run_id: str) -> str:
    """One line of the report for ``run_id``."""
    run = client.get_run(run_id)
    stamps = {m.step: m.timestamp for m in client.get_metric_history(run_id, "train/loss")}
    if len(stamps) < 2:
        raise SystemExit(f"run {run_id}: fewer than two logged train/loss steps")
    steps = sorted(stamps)
    per_step = [(stamps[b] - stamps[a]) / (b - a) for a, b in zip(steps, steps[1:])]
    p = run.data.params
    end = (run.info.end_time - stamps[steps[-1]]) / 1e3 if run.info.end_time else float("nan")
    return (f"{run_id[:8]} {p.get('compute_dtype_used', '?')}, threads intra "
            f"{p.get('machine.intra_op_threads', '?')} / inter {p.get('machine.inter_op_threads', '?')}: "
            f"start to step {steps[0]} {(stamps[steps[0]] - run.info.start_time) / 1e3:.1f} s, "
            f"steps {steps[0]}-{steps[-1]} {(stamps[steps[-1]] - stamps[steps[0]]) / 1e3:.1f} s "
            f"(median {statistics.median(per_step):.1f} ms/step), after step {steps[-1]} {end:.1f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tracking_uri", required=True)
    p.add_argument("run_ids", nargs="+")
    p.add_argument("--out", default="")
    args = p.parse_args()
    from mlflow.tracking import MlflowClient
    from report import emit_report  # benchmarks/, the script's own folder

    client = MlflowClient(args.tracking_uri)
    return emit_report([run_lines(client, r) for r in args.run_ids], args.out)


if __name__ == "__main__":
    sys.exit(main())
