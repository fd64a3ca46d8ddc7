"""Benchmark: the cost of ``--deterministic`` (TensorFlow op determinism) in training.

    python benchmarks/bench_deterministic.py [--flagfile configs/quickstart.cfg] \
        [--steps 60] [--warmup 10] [--repeats 5] [--input_batches 200] \
        [--out benchmarks/results/bench_deterministic.txt]

A: ``pipeline.trainer.train`` with ``--deterministic`` (op determinism on before the run's
first op); B: the same run without it. Op determinism is a process-wide switch that
TensorFlow reads when kernels and tf.data pipelines are built, so A and B cannot share a
process: each arm is one worker process (this script with ``--worker``) that trains
``--warmup`` + ``--steps`` steps of the flagfile's model on the MNIST digits (the
quickstart's data, 28x28) from step 0 and times the interval between successive
``on_step`` callbacks after the warm-up (tracing, the first steps). Everything the
trainer's loop does per step is in the time, the input pipeline included (op determinism
also changes tf.data: parallel map and prefetch may be serialized); validation,
checkpoints and grids are moved out of the timed steps. Each worker also times
``--input_batches`` batches of the training input alone (``make_train_dataset``, the
first batch left out), to tell an input cost from a compute cost.

The arms alternate, ABBA...: pair i runs A then B for even i, B then A for odd i, so a
drift in the machine's load hits both. Printed: per pair the medians and their ratio; at
the end the medians of all A and all B step times, their ratio, the median of the
per-pair ratios, the input pipeline's ms/batch, whether the A runs ended with bit-identical
checkpoints (they must) and whether the B runs did (the finding without the flag), and
the 1-minute load average at the start and the end. Compare ratios from an idle machine
only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TIMED_OUT_SCHEDULES = ["--validation_every=0", "--checkpoint_every=1000000",
                       "--sample_every=1000000", "--noshow_progress"]


def checkpoint_digest(model_dir: str) -> str:
    """sha256 over every tensor of the latest checkpoint in ``model_dir`` (names, dtypes,
    bytes): equal digests = bit-identical weights, optimizer slots and step."""
    import numpy as np
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
    digest = hashlib.sha256()
    for name in sorted(reader.get_variable_to_shape_map()):
        if name == "_CHECKPOINTABLE_OBJECT_GRAPH":  # metadata, not a tensor of the run
            continue
        value = np.asarray(reader.get_tensor(name))
        digest.update(name.encode() + value.dtype.str.encode() + value.tobytes())
    return digest.hexdigest()


def worker(args) -> None:
    """One arm: op determinism as ``--deterministic`` says, before any TensorFlow op; the
    input pipeline timed alone, then a training run timed per step. Prints one JSON line."""
    from absl import flags

    from pipeline import config_flags, trainer
    from pipeline import data as data_lib

    with trainer.op_determinism(args.deterministic):  # before the first op of the process
        info = data_lib.read_dataset_info(args.data_dir)
        fv = flags.FlagValues()
        config_flags.define_train_flags(fv)
        fv(["bench", f"--flagfile={args.flagfile}", f"--data_dir={args.data_dir}",
            f"--model_dir={args.model_dir}", f"--mlflow_tracking_uri={args.tracking_uri}",
            f"--train_steps={args.warmup + args.steps}",
            f"--deterministic={'true' if args.deterministic else 'false'}",
            *TIMED_OUT_SCHEDULES])
        model_values, cfg = config_flags.train_configs_from_flags(fv)
        model_config = trainer.model_config_for_data(model_values, cfg, info)

        import keras

        from tfp_models.hybrid import HybridModel
        keras.utils.set_random_seed(cfg.seed)  # op determinism refuses unseeded random ops
        noise = HybridModel(model_config).noise_shapes()
        batches = iter(trainer.make_train_dataset(info, cfg, 0, noise))
        next(batches)
        start = time.perf_counter()
        for _ in range(args.input_batches):
            next(batches)
        input_ms = (time.perf_counter() - start) * 1e3 / max(args.input_batches, 1)
        del batches

        stamps: list[float] = []
        trainer.train(model_values, cfg,
                      on_step=lambda step, values: stamps.append(time.perf_counter()))
    times = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup - 1:]
    print(json.dumps({"deterministic": args.deterministic, "step_s": times,
                      "input_ms": input_ms, "digest": checkpoint_digest(args.model_dir)}))


def run_arm(deterministic: bool, index: int, args, data_dir: str, tmp: str) -> dict:
    """Runs one worker process; returns its JSON result."""
    model_dir = os.path.join(tmp, f"model_{index}_{'A' if deterministic else 'B'}")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker",
           f"--deterministic={int(deterministic)}", f"--data_dir={data_dir}",
           f"--model_dir={model_dir}", f"--flagfile={args.flagfile}",
           f"--tracking_uri=sqlite:///{os.path.join(tmp, 'mlflow.db')}",
           f"--steps={args.steps}", f"--warmup={args.warmup}",
           f"--input_batches={args.input_batches}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flagfile", default=os.path.join(ROOT, "configs", "quickstart.cfg"))
    p.add_argument("--steps", type=int, default=60, help="timed steps per arm")
    p.add_argument("--warmup", type=int, default=10, help="untimed first steps per arm")
    p.add_argument("--repeats", type=int, default=5, help="A/B pairs")
    p.add_argument("--input_batches", type=int, default=200)
    p.add_argument("--mnist_dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist_test"))
    p.add_argument("--out", default="")
    # the worker's own flags
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--deterministic", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data_dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--model_dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--tracking_uri", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.warmup < 1:
        p.error("--warmup must be >= 1 (the first step traces the step function)")
    if args.worker:
        args.deterministic = bool(args.deterministic)
        return worker(args)

    from artifacts import machine_info
    from beam_jobs.preprocess import run_preprocess

    loads = [os.getloadavg()[0]]
    print(f"1-minute load average at start: {loads[0]:.2f}", flush=True)
    tmp = tempfile.mkdtemp(prefix="bench_deterministic_")
    data_dir = os.path.join(tmp, "mnist28")
    run_preprocess("mnist_idx", args.mnist_dir, data_dir, 28, grayscale=True,
                   validation_fraction=0.1)
    results: dict[bool, list[dict]] = {True: [], False: []}
    pair_ratios = []
    for i in range(args.repeats):
        order = (True, False) if i % 2 == 0 else (False, True)
        pair = {d: run_arm(d, i, args, data_dir, tmp) for d in order}
        for d in order:
            results[d].append(pair[d])
        a, b = (statistics.median(pair[d]["step_s"]) for d in (True, False))
        pair_ratios.append(a / b)
        print(f"pair {i} ({'AB' if order[0] else 'BA'}): deterministic {a * 1e3:.1f} ms/step, "
              f"default {b * 1e3:.1f} ms/step, ratio {a / b:.3f}; input "
              f"{pair[True]['input_ms']:.2f} vs {pair[False]['input_ms']:.2f} ms/batch; load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
    loads.append(os.getloadavg()[0])

    def med(d: bool, key: str = "step_s") -> float:
        if key == "step_s":
            return statistics.median(t for r in results[d] for t in r["step_s"])
        return statistics.median(r[key] for r in results[d])

    ta, tb = med(True), med(False)
    digests = {d: sorted({r["digest"] for r in results[d]}) for d in (True, False)}
    cpus = os.cpu_count() or 1
    this_machine = {k: v for k, v in machine_info.machine_info().items()
                    if k != "op_determinism"}  # the arms' setting, not this process's
    report = "\n".join([
        f"--deterministic cost: {os.path.relpath(args.flagfile, ROOT)}, {args.repeats} "
        f"interleaved A/B pairs (ABBA order), each arm one process: {args.warmup} warm-up + "
        f"{args.steps} timed steps of pipeline.trainer.train from step 0",
        f"machine: {machine_info.describe(this_machine)}",
        f"  A deterministic  {ta * 1e3:8.1f} ms/step (median of "
        f"{sum(len(r['step_s']) for r in results[True])}); input alone "
        f"{med(True, 'input_ms'):.2f} ms/batch",
        f"  B default        {tb * 1e3:8.1f} ms/step (median of "
        f"{sum(len(r['step_s']) for r in results[False])}); input alone "
        f"{med(False, 'input_ms'):.2f} ms/batch",
        f"ratio deterministic / default: {ta / tb:.3f}x (medians); median of per-pair ratios "
        f"{statistics.median(pair_ratios):.3f}x",
        f"final checkpoints: A runs {len(digests[True])} distinct of {args.repeats} "
        f"({'bit-identical' if len(digests[True]) == 1 else 'DIFFER'}), B runs "
        f"{len(digests[False])} distinct of {args.repeats} "
        f"({'bit-identical' if len(digests[False]) == 1 else 'differ'}); A == B: "
        f"{digests[True] == digests[False]}",
        f"1-minute load average {loads[0]:.2f} at start, {loads[1]:.2f} at end on {cpus} "
        f"CPUs: machine {'idle' if max(loads) < 0.25 * cpus else 'NOT idle'}"])
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
