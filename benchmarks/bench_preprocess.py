"""Throughput of beam_jobs.preprocess against a plain Python loop doing the same work.

    python benchmarks/bench_preprocess.py [--num_images=10000] [--image_size=64] \\
        [--workers=2] [--repeats=2] [--modes=multi_processing,multi_threading]

Every side reads the same CIFAR-10 JPEGs (N members of the shared zip, copied to a
temporary zip; beyond its 10,000 images the members repeat under ``copyK/`` names),
decodes, resizes the shorter side to image_size with the same transform, encodes PNG,
serializes the Example and writes framed TFRecords:

* ``loop``: one Python process, one output file (the baseline);
* ``pool``: the same loop split over ``--workers`` processes of an already started
  ``multiprocessing.Pool`` (how far this machine's cores scale for this work, with no
  framework at all);
* ``beam <mode>``: the whole Beam job (FnApiRunner, ``--workers`` workers): planning,
  worker start-up, shards + dataset.json.

The sides run interleaved ``--repeats`` times (this machine's speed drifts over minutes)
and medians are printed with the ratio against the loop per core (Beam rate / workers /
loop rate; goal >= 0.8) and against the pool. The Beam job's fixed cost (the same job on
20 images: planning, pipeline construction, worker start-up, stage hand-offs) is measured
too, and the steady-state rate N / (time - fixed cost) is printed beside the end-to-end one.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from artifacts import dataset_format
from beam_jobs.preprocess import run_preprocess
from beam_jobs.sources.image_transform import BadImage, ImageTransform

CIFAR_ZIP = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10_test_jpg",
                         "cifar10_test_jpg.zip")


def plain_loop(zip_path: str, out_path: str, image_size: int, start: int = 0,
               stop: int | None = None) -> int:
    """Decode/resize/encode/serialize members [start, stop) in one loop; returns #images."""
    transform = ImageTransform(image_size)
    n = 0
    with zipfile.ZipFile(zip_path) as zf, open(out_path, "wb") as f:
        names = sorted(i.filename for i in zf.infolist() if not i.is_dir())[start:stop]
        for name in names:
            try:
                png = transform.from_bytes(zf.read(name))
            except BadImage:
                continue
            f.write(dataset_format.frame_tfrecord(dataset_format.encode_example_fast(png, 0, name)))
            n += 1
    return n


def _pool_part(args: tuple) -> int:
    return plain_loop(*args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num_images", type=int, default=10000)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", default="multi_processing,multi_threading",
                   help="FnApiRunner running modes to measure")
    p.add_argument("--cifar_zip", default=CIFAR_ZIP)
    args = p.parse_args()
    modes = [m for m in args.modes.split(",") if m]

    tmp = tempfile.mkdtemp(prefix="bench_preprocess_")
    try:
        subset = os.path.join(tmp, "subset.zip")
        tiny = os.path.join(tmp, "tiny.zip")
        with zipfile.ZipFile(args.cifar_zip) as src, zipfile.ZipFile(subset, "w") as dst, \
                zipfile.ZipFile(tiny, "w") as dst_tiny:
            names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
            step = max(1, len(names) // args.num_images)  # every k-th: all classes present
            picked = names[::step]
            for i in range(args.num_images):
                name = picked[i % len(picked)]
                copy = i // len(picked)
                dst.writestr(f"copy{copy}/{name}" if copy else name, src.read(name))
            for name in picked[:20]:
                dst_tiny.writestr(name, src.read(name))
        n = args.num_images
        bounds = [round(i * n / args.workers) for i in range(args.workers + 1)]
        times: dict[str, list[float]] = {}

        def timed(name: str, fn) -> None:
            t0 = time.perf_counter()
            count = fn()
            times.setdefault(name, []).append(time.perf_counter() - t0)
            if count != n:
                raise RuntimeError(f"{name} wrote {count} images, expected {n}")

        def beam(mode: str, zip_path: str = subset) -> int:
            out = os.path.join(tmp, "beam")
            shutil.rmtree(out, ignore_errors=True)
            info = run_preprocess(
                "image_zip", zip_path, out, args.image_size,
                pipeline_args=[f"--direct_running_mode={mode}",
                               f"--direct_num_workers={args.workers}"])
            return sum(s["count"] for s in info["splits"].values())

        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            pool.map(_pool_part, [(subset, os.devnull, args.image_size, 0, 1)] * args.workers)
            for _ in range(args.repeats):
                timed("loop", lambda: plain_loop(subset, os.path.join(tmp, "loop.tfrecord"),
                                                 args.image_size))
                timed("pool", lambda: sum(pool.map(_pool_part, [
                    (subset, os.path.join(tmp, f"pool{i}.tfrecord"), args.image_size, lo, hi)
                    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))])))
                for mode in modes:
                    timed(f"beam {mode}", lambda: beam(mode))
                    t0 = time.perf_counter()
                    beam(mode, tiny)
                    times.setdefault(f"fixed {mode}", []).append(time.perf_counter() - t0)

        fixed = {k.split()[1]: statistics.median(times.pop(k)) for k in list(times)
                 if k.startswith("fixed ")}
        rate = {k: n / statistics.median(v) for k, v in times.items()}
        print(f"\nimages: {n} CIFAR-10 JPEGs -> {args.image_size}x{args.image_size} PNG, "
              f"{os.cpu_count()} CPUs, {args.workers} workers, median of {args.repeats}")
        for name, r in rate.items():
            runs = ", ".join(f"{t:.1f}" for t in times[name])
            print(f"  {name:28s} {r:7.1f} images/s   (runs: {runs} s)")
        loop = rate["loop"]
        print(f"  pool / loop per core: {rate['pool'] / args.workers / loop:.2f} "
              "(what the cores give without a framework)")
        for mode in modes:
            r = rate[f"beam {mode}"]
            steady = n / (statistics.median(times[f"beam {mode}"]) - fixed[mode])
            print(f"  beam {mode}: / loop {r / loop:.2f}, per core {r / args.workers / loop:.2f} "
                  f"(goal >= 0.8), / pool {r / rate['pool']:.2f}; fixed cost "
                  f"{fixed[mode]:.1f} s, steady state {steady:.0f} images/s = per core "
                  f"{steady / args.workers / loop:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
