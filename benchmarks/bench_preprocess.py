"""Throughput of beam_jobs.preprocess against a plain Python loop doing the same work.

    python benchmarks/bench_preprocess.py [--num_images=6000] [--image_size=64] [--workers=2]

Both sides read the same CIFAR-10 JPEGs (the first N members of the shared zip, copied to
a temporary zip), decode, resize the shorter side to image_size with the same transform,
encode PNG and serialize the Example; the loop writes one TFRecord file, the Beam job
(FnApiRunner, multi_processing, `--workers` workers) writes its shards + dataset.json.
Prints images/s of both, their ratio, and the ratio per core (Beam rate / workers / loop
rate). Wall-clock times include everything (Beam: planning, worker start-up, shuffle).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from beam_jobs import records  # noqa: E402
from beam_jobs.image_transform import BadImage, ImageTransform  # noqa: E402
from beam_jobs.preprocess import run_preprocess  # noqa: E402

CIFAR_ZIP = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10_test_jpg",
                         "cifar10_test_jpg.zip")


def plain_loop(zip_path: str, out_path: str, transform: ImageTransform) -> int:
    """The same decode/resize/encode/serialize work in one Python loop; returns #images."""
    n = 0
    with zipfile.ZipFile(zip_path) as zf, open(out_path, "wb") as f:
        for name in sorted(i.filename for i in zf.infolist() if not i.is_dir()):
            try:
                png = transform.from_bytes(zf.read(name))
            except BadImage:
                continue
            f.write(records.frame_tfrecord(records.encode_example_fast(png, 0, name)))
            n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num_images", type=int, default=6000)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cifar_zip", default=CIFAR_ZIP)
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench_preprocess_")
    try:
        subset = os.path.join(tmp, "subset.zip")
        with zipfile.ZipFile(args.cifar_zip) as src, zipfile.ZipFile(subset, "w") as dst:
            names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
            # every k-th member so that all classes are present
            step = max(1, len(names) // args.num_images)
            for n in names[::step][:args.num_images]:
                dst.writestr(n, src.read(n))
        transform = ImageTransform(args.image_size)

        t0 = time.perf_counter()
        n_loop = plain_loop(subset, os.path.join(tmp, "loop.tfrecord"), transform)
        loop_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        info = run_preprocess(
            "image_zip", subset, os.path.join(tmp, "beam"), args.image_size,
            pipeline_args=["--direct_running_mode=multi_processing",
                           f"--direct_num_workers={args.workers}"])
        beam_s = time.perf_counter() - t0
        n_beam = sum(s["count"] for s in info["splits"].values())
        if n_beam != n_loop:
            raise RuntimeError(f"Beam wrote {n_beam} images, the loop {n_loop}")

        loop_rate, beam_rate = n_loop / loop_s, n_beam / beam_s
        ratio = beam_rate / loop_rate
        print(f"images: {n_loop} CIFAR-10 JPEGs -> {args.image_size}x{args.image_size} PNG "
              f"({os.cpu_count()} CPUs)")
        print(f"plain loop (1 process):          {loop_rate:8.1f} images/s  ({loop_s:.2f} s)")
        print(f"Beam FnApiRunner multi_processing, {args.workers} workers: "
              f"{beam_rate:8.1f} images/s  ({beam_s:.2f} s)")
        print(f"ratio Beam/loop: {ratio:.2f}; per core: {ratio / args.workers:.2f} "
              f"(goal >= 0.8)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
