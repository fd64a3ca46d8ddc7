"""Images/s of both Beam jobs on Beam's Dask runner (2 worker processes) vs the local runner.

    python benchmarks/bench_beam_dask.py [--num_images=2000] [--repeats=3] [--workers=2]

Input: the first ``--num_images`` JPEGs of the shared CIFAR-10 test zip (copied to a
temporary zip). Per repeat, interleaved A/B: ``beam_jobs.preprocess`` (32x32 PNG shards)
on the local runner (the job's default: FnApiRunner, mode by input size) then on Dask,
then ``beam_jobs.fid`` statistics of the preprocessed train split (an untrained
MNIST-architecture extractor, 32-d features) on each. The Dask side runs against one
``LocalCluster`` of ``--workers`` single-thread worker processes on 127.0.0.1, started
once before the runs (its start-up time is printed apart). Printed: median seconds and
images/s per side, the Dask/local ratio, and the 1-minute load average before and after
(the machine is called idle only if it stayed below 0.5 per CPU).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CIFAR_ZIP = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10_test_jpg",
                         "cifar10_test_jpg.zip")


def make_zip(src: str, dst: str, n: int) -> int:
    """Copies the first ``n`` JPEG members of ``src`` into ``dst``; returns how many."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        names = sorted(m for m in zin.namelist() if m.endswith(".jpg"))[:n]
        for name in names:
            zout.writestr(name, zin.read(name))
    return len(names)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def preprocess_job(raw: str, out: str, args: list[str]) -> Callable[[], object]:
    from beam_jobs.preprocess import run_preprocess

    return lambda: run_preprocess("image_zip", raw, out, 32, num_shards=4, overwrite=True,
                                  pipeline_args=args)


def fid_job(data_dir: str, extractor_dir: str, args: list[str]) -> Callable[[], object]:
    from beam_jobs import fid

    return lambda: fid.compute_statistics(fid.TFRecordSource(data_dir, "train"),
                                          "mnist_classifier", extractor_dir,
                                          kid_samples=0, pipeline_args=args)


def load_line(label: str) -> str:
    load1 = os.getloadavg()[0]
    return f"{label}: 1-min load average {load1:.2f} on {os.cpu_count()} CPUs"


def summary(name: str, n: int, local: list[float], dask: list[float]) -> str:
    ml, md = statistics.median(local), statistics.median(dask)
    return (f"{name:<11} local {ml:7.2f} s = {n / ml:7.1f} images/s | dask {md:7.2f} s = "
            f"{n / md:7.1f} images/s | dask/local {ml / md:5.2f}x  (runs local "
            f"{', '.join(f'{t:.1f}' for t in local)}; dask {', '.join(f'{t:.1f}' for t in dask)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()

    from dask.distributed import LocalCluster

    from beam_jobs.fid import extractors

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: python "
          f"{' '.join(sys.argv)}", flush=True)
    print(load_line("before"), flush=True)
    loads = [os.getloadavg()[0]]
    tmp = tempfile.mkdtemp(prefix="bench-beam-dask-")
    try:
        raw = os.path.join(tmp, "raw.zip")
        n = make_zip(CIFAR_ZIP, raw, a.num_images)
        _, model = extractors.build_mnist_classifier(feature_dim=32, seed=1)
        ext = extractors.export_mnist_classifier(model, os.path.join(tmp, "extractor"))
        start = time.perf_counter()
        with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=":0") as cluster:
            print(f"LocalCluster of {a.workers} worker processes x 1 thread up in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            dask_args = ["--runner=DaskRunner",
                         f"--dask_client_address={cluster.scheduler_address}",
                         f"--temp_location={tmp}"]
            data = os.path.join(tmp, "data")
            times: dict[str, list[float]] = {k: [] for k in
                                             ("pp_local", "pp_dask", "fid_local", "fid_dask")}
            timed(preprocess_job(raw, data, []))  # the FID input; warms imports/caches
            for r in range(a.repeats):
                times["pp_local"].append(timed(preprocess_job(raw, os.path.join(tmp, "l"), [])))
                times["pp_dask"].append(timed(preprocess_job(raw, os.path.join(tmp, "d"),
                                                             dask_args)))
                times["fid_local"].append(timed(fid_job(data, ext, [])))
                times["fid_dask"].append(timed(fid_job(data, ext, dask_args)))
                loads.append(os.getloadavg()[0])
                print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s"
                                                       for k, v in times.items()), flush=True)
        from beam_jobs.fid import TFRecordSource

        n_fid = TFRecordSource(data, "train").size_hint()
        print(f"{n} images (CIFAR-10 test JPEGs -> 32x32 PNG), {n_fid} in the FID split, "
              f"{a.repeats} interleaved repeats, medians:")
        print(summary("preprocess", n, times["pp_local"], times["pp_dask"]))
        print(summary("fid", n_fid, times["fid_local"], times["fid_dask"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(load_line("after"))
    cpus = os.cpu_count() or 1
    idle = max(loads) < 0.5 * cpus
    print(f"machine {'idle' if idle else 'NOT idle'}: 1-min load {min(loads):.2f}.."
          f"{max(loads):.2f} during the run on {cpus} CPUs"
          + ("" if idle else " (other jobs were running; ratios are indicative only)"))


if __name__ == "__main__":
    main()
