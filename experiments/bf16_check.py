"""Does bfloat16 training track float32 training? (issue #23 item 2's check.)

    python experiments/bf16_check.py [--train_steps 200] [--validation_every 50] \
        [--fp32_seeds 0,1] [--bf16_seeds 0] [--work_dir /tmp/bf16_check] \
        [--out experiments/results/bf16_check.md]

Trains the quickstart model (``configs/quickstart.cfg``: ``cqf`` on MNIST 28x28) with
``pipeline.train`` for ``--train_steps`` steps, once per seed of ``--fp32_seeds`` in float32
and once per seed of ``--bf16_seeds`` with ``--compute_dtype=bfloat16`` (a seed gives the
same initial weights, data order and noise in both dtypes), one run after the other. Every
validation bits/dim (the ELBO on the first 500 validation digits) is computed in float32
(a bfloat16 run measures with its float32 twin). Then each final checkpoint is restored
into a float32 model and its flow's round trip max |f^-1(f(x)) - x| is measured on 256
dequantized validation digits.

The question: is the bfloat16 runs' mean within the float32 runs' seed spread at every
validation step (mean +- std over seeds, and the pairwise bf16 - fp32 difference on the
seeds both dtypes ran), and is the bfloat16-trained flow's float32 round trip as exact as
the float32-trained one's? Also printed: seconds per training step of each run (whole run /
steps: start-up included; the load average is printed: on a CPU without bfloat16
instructions bfloat16 is emulated, and other jobs on the cores slow every run).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def arms(fp32_seeds: list[int], bf16_seeds: list[int]) -> list[tuple[str, str, int]]:
    """(name, compute dtype, seed) of every run: float32 ones first."""
    return ([(f"fp32 seed {s}", "float32", s) for s in fp32_seeds]
            + [(f"bf16 seed {s}", "bfloat16", s) for s in bf16_seeds])


def seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] (argparse type)."""
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def mean_std(values: list[float], sign: str = "") -> str:
    """'mean +- std' (sample std; just the value for one); ``sign`` '+' always signs it."""
    if len(values) == 1:
        return f"{values[0]:{sign}.4f}"
    return f"{statistics.mean(values):{sign}.4f} +- {statistics.stdev(values):.4f}"


def train(arm: tuple, args, data_dir: str, uri: str) -> tuple[str, float]:
    """Trains one arm with pipeline.train (unless an earlier invocation did); returns
    (model_dir, wall seconds of its training)."""
    name, dtype, seed = arm
    model_dir = os.path.join(args.work_dir, name.replace(" ", "_"))
    cmd = [sys.executable, "-m", "pipeline.train", "--flagfile=configs/quickstart.cfg",
           f"--data_dir={data_dir}", f"--model_dir={model_dir}", f"--seed={seed}",
           f"--train_steps={args.train_steps}", f"--validation_every={args.validation_every}",
           f"--checkpoint_every={args.train_steps}", f"--sample_every={args.train_steps}",
           f"--compute_dtype={dtype}", f"--mlflow_tracking_uri={uri}",
           "--experiment=bf16_check", f"--run_name={name}", "--show_progress=false"]
    done = os.path.join(model_dir, "bf16_check_seconds.json")
    if os.path.exists(done):  # trained by an earlier invocation
        with open(done) as f:
            return model_dir, json.load(f)["seconds"]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(done, "w") as f:
        json.dump({"seconds": seconds}, f)
    return model_dir, seconds


def round_trip_error(model_dir: str, data_dir: str) -> float:
    """max |f^-1(f(x)) - x| of the checkpoint's flow, restored in float32, on 256
    validation digits with seeded dequantization noise."""
    import tensorflow as tf

    from artifacts import model_io
    from artifacts.dataset_format import read_dataset_info
    from artifacts.tfrecord_dataset import make_image_dataset
    from tfp_models import flows
    from tfp_models.hybrid import HybridModel

    config, _ = model_io.load_model_config(model_dir)
    model = HybridModel(config)  # float32
    model_io.make_checkpoint(model, tf.Variable(0, dtype=tf.int64)).restore(
        tf.train.latest_checkpoint(model_dir)).expect_partial()
    info = read_dataset_info(data_dir)
    images = next(iter(make_image_dataset(info, "validation", 256, shuffle=False,
                                          repeat=False, drop_remainder=False)))
    x = flows.dequantize_images(images, tf.random.stateless_uniform(tf.shape(images), (0, 1)))
    return float(tf.reduce_max(tf.abs(model.flow.inverse(model.flow.forward(x)) - x)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train_steps", type=int, default=200)
    p.add_argument("--validation_every", type=int, default=50)
    p.add_argument("--work_dir", default="/tmp/bf16_check")
    p.add_argument("--mnist_dir", default=os.path.join(SHARED, "mnist_test"))
    p.add_argument("--fp32_seeds", type=seeds, default=[0, 1])
    p.add_argument("--bf16_seeds", type=seeds, default=[0])
    p.add_argument("--out", default="")
    args = p.parse_args()
    if not args.fp32_seeds or not args.bf16_seeds:
        p.error("--fp32_seeds and --bf16_seeds: expected at least one seed each")
    sys.path.insert(0, ROOT)
    from mlflow.tracking import MlflowClient

    from artifacts import tracking
    from beam_jobs.preprocess import run_preprocess

    os.makedirs(args.work_dir, exist_ok=True)
    data_dir = os.path.join(args.work_dir, "mnist28")
    if not os.path.exists(os.path.join(data_dir, "dataset.json")):
        run_preprocess("mnist_idx", args.mnist_dir, data_dir, 28, grayscale=True,
                       validation_fraction=0.1)
    uri = f"sqlite:///{os.path.join(args.work_dir, 'mlflow.db')}"
    runs = arms(args.fp32_seeds, args.bf16_seeds)
    loads, rows = [os.getloadavg()[0]], {}
    for arm in runs:
        model_dir, seconds = train(arm, args, data_dir, uri)
        loads.append(os.getloadavg()[0])
        history = MlflowClient(uri).get_metric_history(tracking.run_id_of(model_dir),
                                                      "validation/bpd")
        rows[arm] = ({m.step: m.value for m in history}, seconds / args.train_steps,
                     round_trip_error(model_dir, data_dir))
    fp32 = [a for a in runs if a[1] == "float32"]
    bf16 = [a for a in runs if a[1] == "bfloat16"]
    paired = sorted(set(args.fp32_seeds) & set(args.bf16_seeds))
    steps = sorted(rows[runs[0]][0])
    lines = [f"# bfloat16 vs float32 training, quickstart model, {args.train_steps} steps",
             "", f"Command: `python experiments/bf16_check.py --train_steps {args.train_steps} "
             f"--validation_every {args.validation_every} --fp32_seeds "
             f"{','.join(map(str, args.fp32_seeds))} --bf16_seeds "
             f"{','.join(map(str, args.bf16_seeds))}`; {datetime.date.today().isoformat()}; "
             f"1-minute load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs.",
             "", "Validation bits/dim (ELBO, first 500 validation digits, float32); mean +- std "
             "over seeds; bf16 - fp32 paired on seeds "
             f"{','.join(map(str, paired)) or '(none)'}:", "",
             "| step | " + " | ".join(a[0] for a in runs) + " | fp32 | bf16 | bf16 - fp32 "
             "(means) | bf16 - fp32 (paired) |", "|---" * (len(runs) + 5) + "|"]
    arm_of = {(a[1], a[2]): a for a in runs}  # (dtype, seed) -> arm
    for s in steps:
        values = {a: rows[a][0][s] for a in runs}
        diffs = [values[arm_of["bfloat16", k]] - values[arm_of["float32", k]] for k in paired]
        lines.append(
            f"| {s} | " + " | ".join(f"{values[a]:.4f}" for a in runs)
            + f" | {mean_std([values[a] for a in fp32])} | {mean_std([values[a] for a in bf16])}"
            f" | {statistics.mean(values[a] for a in bf16) - statistics.mean(values[a] for a in fp32):+.4f}"
            f" | {mean_std(diffs, '+') if diffs else '-'} |")
    lines += ["", "| run | s per step (whole run) | float32 round trip max abs error |",
              "|---|---|---|"]
    lines += [f"| {a[0]} | {rows[a][1]:.2f} | {rows[a][2]:.2e} |" for a in runs]
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
