"""Benchmark: start-up of a resumed training run's input, epoch-seeded vs replayed.

    python benchmarks/bench_resume.py [--batch 64] [--repeats 5] [--replay_probe 2000] \
        [--out benchmarks/results/bench_resume.txt]

The training input of a run resumed at step k (``pipeline.train_input.make_train_dataset``
with ``start_step=k``, batches of ``--batch`` MNIST digits with cqf's per-step noise) is
built and its first batch drawn; that wall time is the resume start-up of the input.
Measured at k = 10 and at a simulated k = 10^6 (no training: the step counter is what a
checkpoint at that step would restore). Baseline: the earlier implementation, which
replayed the stream (``make_image_dataset(...).skip(k)``, decoding every skipped batch),
at k = 10 and at k = ``--replay_probe``; its k = 10^6 figure is extrapolated linearly from
the probe (running it would take hours), and labelled so. A and B are interleaved per
repeat; medians are printed with the ratio and the 1-minute load average.

Data: the quickstart's preprocessing of ``--mnist_dir`` (9,000 training digits), made in
a temporary directory.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from artifacts.tfrecord_dataset import make_image_dataset  # noqa: E402
from beam_jobs.preprocess import run_preprocess  # noqa: E402
from pipeline import data as data_lib  # noqa: E402
from pipeline.train_config import TrainConfig  # noqa: E402
from pipeline.train_input import make_train_dataset  # noqa: E402

NOISE_SHAPES = {"dequant": (28, 28, 1), "posterior": (1, 32), "prior": (32,), "mix": (1, 1, 1)}  # cqf's


def first_batch_seconds(make) -> float:
    """Wall time of building a dataset and drawing its first element."""
    start = time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--replay_probe", type=int, default=2000,
                   help="step at which the replaying baseline is timed for extrapolation")
    p.add_argument("--mnist_dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist_test"))
    p.add_argument("--out", default="", help="also write the report to this file")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "mnist28")
        run_preprocess("mnist_idx", args.mnist_dir, data_dir, 28, grayscale=True,
                       validation_fraction=0.1)
        info = data_lib.read_dataset_info(data_dir)
        cfg = TrainConfig(data_dir=data_dir, model_dir=os.path.join(tmp, "m"),
                          batch_size=args.batch, seed=0)

        def epoch_seeded(step):
            return lambda: make_train_dataset(info, cfg, step, NOISE_SHAPES)

        def replayed(step):
            return lambda: make_image_dataset(
                info, "train", args.batch, seed=0).skip(step)

        cases = {"epoch-seeded k=10": epoch_seeded(10),
                 "epoch-seeded k=1e6": epoch_seeded(10 ** 6),
                 "replayed k=10": replayed(10),
                 f"replayed k={args.replay_probe}": replayed(args.replay_probe)}
        for make in cases.values():  # warm-up: tracing, file cache
            first_batch_seconds(make)
        times: dict[str, list[float]] = {name: [] for name in cases}
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeats):
            for name, make in cases.items():  # interleaved
                times[name].append(first_batch_seconds(make))
            loads.append(os.getloadavg()[0])

    med = {name: statistics.median(t) for name, t in times.items()}
    probe = med[f"replayed k={args.replay_probe}"]
    per_step = (probe - med["replayed k=10"]) / (args.replay_probe - 10)
    extrapolated = med["replayed k=10"] + per_step * (10 ** 6 - 10)
    cpus = os.cpu_count() or 1
    idle = max(loads) < 0.25 * cpus
    lines = [f"resume start-up of the training input (build + first batch), batch {args.batch}, "
             f"{info.split_counts['train']} training digits, median of {args.repeats} "
             "interleaved repeats",
             *(f"  {name:28s} {med[name] * 1000:10.1f} ms" for name in cases),
             f"  replayed k=1e6 (extrapolated: {per_step * 1000:.3f} ms per replayed step) "
             f"{extrapolated:10.1f} s",
             f"ratio epoch-seeded / replayed at k=10:  {med['epoch-seeded k=10'] / med['replayed k=10']:.2f}x",
             f"ratio epoch-seeded / replayed at k={args.replay_probe}: "
             f"{med['epoch-seeded k=1e6'] / probe:.4f}x (epoch-seeded at 1e6 vs replayed at the probe)",
             f"ratio epoch-seeded k=1e6 / epoch-seeded k=10: "
             f"{med['epoch-seeded k=1e6'] / med['epoch-seeded k=10']:.2f}x",
             f"1-minute load average {min(loads):.2f}-{max(loads):.2f} on {cpus} CPUs: "
             f"machine {'idle' if idle else 'NOT idle'}"]
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
