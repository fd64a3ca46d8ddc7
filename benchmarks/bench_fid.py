"""The whole FID of N feature vectors: Beam (FnApiRunner) vs in-process numpy + sqrtm.

    python benchmarks/bench_fid.py [--n=10000] [--d=2048] [--repeats=3] [--mode=in_memory]

Beam side: the Beam pipeline (start-up included) fits (mu, sigma) with
``MeanCovCombineFn`` to float32 features [N, d], one element per feature vector as
RunInference emits them, then ``fid_math.frechet_distance`` (trace term from ``eigh`` /
``eigvalsh``). Baseline: ``np.mean`` / ``np.cov`` of the same features in float64, then
``fid_math.frechet_distance_sqrtm`` (``scipy.linalg.sqrtm``, the pytorch-fid / TTUR
computation). Features are generated deterministically in chunks of 100, inside the
pipeline and in process alike (both timings include generating them); both sides are
compared with the same reference statistics. The two sides run in interleaved repeats
(the order alternates) and medians are quoted. Times are wall-clock seconds; the load
average is reported because other jobs on the machine slow both sides. Peak memory is
the tracemalloc peak of a separate pass (numpy allocations are traced).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import resource
import tempfile
import time
import tracemalloc

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.fid import fid_math
from beam_jobs.fid.fid_math import FeatureStatistics


def _dump(value, path):
    with open(path, "wb") as f:
        pickle.dump(value, f)


CHUNK = 100


def make_chunk(index: int, d: int, scale: float = 1.0) -> np.ndarray:
    """Deterministic Inception-like features [CHUNK, d]: non-negative, correlated, offset.

    Generated identically inside the Beam pipeline and in process, so the pipeline does
    not embed the data in its graph (beam.Create pickles its values into the job).
    """
    rng = np.random.default_rng([index, d])
    mix = np.random.default_rng(d).normal(size=(64, d)).astype(np.float32) / 8.0
    low_rank = rng.normal(size=(CHUNK, 64)).astype(np.float32) @ mix
    return np.abs(low_rank + 0.5 * rng.normal(size=(CHUNK, d)).astype(np.float32)) * scale + 0.5


def _rows(index: int, d: int):
    yield from make_chunk(index, d)  # one element per feature vector, like RunInference


def beam_statistics(n: int, d: int, mode: str) -> FeatureStatistics:
    """(mu, sigma) through a Beam pipeline: chunk ids -> rows -> MeanCovCombineFn."""
    path = os.path.join(tempfile.mkdtemp(prefix="bench-fid-"), "stats.pkl")
    args = ["--runner=FnApiRunner", f"--direct_running_mode={mode}"]
    if mode != "in_memory":
        args.append("--direct_num_workers=2")
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        (p | beam.Create(range(n // CHUNK)) | beam.Reshuffle()
         | beam.FlatMap(_rows, d)
         | beam.CombineGlobally(fid_math.MeanCovCombineFn())
         | beam.Map(_dump, path))
    with open(path, "rb") as f:
        return FeatureStatistics.from_sufficient(pickle.load(f))


def numpy_statistics(n: int, d: int) -> FeatureStatistics:
    """(mu, sigma) with np.mean / np.cov in float64 of the same features, in process."""
    x = np.concatenate([make_chunk(i, d) for i in range(n // CHUNK)]).astype(np.float64)
    return FeatureStatistics(x.mean(axis=0), np.cov(x, rowvar=False), len(x))


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _peak_mb(fn, *args) -> float:
    tracemalloc.start()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def beam_fid(n: int, d: int, mode: str, reference: FeatureStatistics) -> dict:
    """The Beam side once: {"fid", "statistics_s", "distance_s", "total_s"}."""
    stats, t_stats = _timed(beam_statistics, n, d, mode)
    fid, t_dist = _timed(fid_math.frechet_distance, stats.mu, stats.sigma, reference.mu,
                         reference.sigma)
    return {"fid": fid, "statistics_s": t_stats, "distance_s": t_dist,
            "total_s": t_stats + t_dist, "sigma": stats.sigma}


def numpy_sqrtm_fid(n: int, d: int, reference: FeatureStatistics,
                    thread_limited: bool = False) -> dict:
    """The baseline once: numpy statistics and the sqrtm Frechet distance; with
    ``thread_limited`` under the Beam side's BLAS thread policy (a control run)."""
    stats, t_stats = _timed(numpy_statistics, n, d)
    with fid_math.limited_blas_threads() if thread_limited else contextlib.nullcontext():
        fid, t_dist = _timed(fid_math.frechet_distance_sqrtm, stats.mu, stats.sigma,
                             reference.mu, reference.sigma)
    return {"fid": fid, "statistics_s": t_stats, "distance_s": t_dist,
            "total_s": t_stats + t_dist, "sigma": stats.sigma}


def _median(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per side")
    parser.add_argument("--mode", default="in_memory",
                        choices=["in_memory", "multi_threading", "multi_processing"])
    parser.add_argument("--no_memory", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--control", action="store_true",
                        help="also run the baseline with the Beam side's BLAS thread limit "
                             "(fid_math.blas_threads_for_load), interleaved: how much of the "
                             "gain is the algorithm and how much the thread policy")
    args = parser.parse_args()

    if args.n % CHUNK:
        raise SystemExit(f"--n must be a multiple of {CHUNK}, got {args.n}")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be positive, got {args.repeats}")
    ref_x = np.concatenate([make_chunk(10**6 + i, args.d, scale=1.1)
                            for i in range(args.n // CHUNK)]).astype(np.float64)
    reference = FeatureStatistics(ref_x.mean(0), np.cov(ref_x, rowvar=False), len(ref_x))
    del ref_x

    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"beam": [], "numpy": [], "control": []}
    beam_runs, numpy_runs, control_runs = runs["beam"], runs["numpy"], runs["control"]
    loads = []
    for r in range(args.repeats):
        sides = [("beam", lambda: beam_fid(args.n, args.d, args.mode, reference)),
                 ("numpy", lambda: numpy_sqrtm_fid(args.n, args.d, reference))]
        if args.control:
            sides.append(("control", lambda: numpy_sqrtm_fid(args.n, args.d, reference, True)))
        for name, run in (sides if r % 2 == 0 else sides[::-1]):
            out = run()
            runs[name].append(out)
            print(f"repeat {r} {name:7s}: statistics {out['statistics_s']:.2f} s, Frechet "
                  f"distance {out['distance_s']:.2f} s, total {out['total_s']:.2f} s",
                  flush=True)
        loads.append(os.getloadavg()[0])
    load_after = os.getloadavg()
    fid_beam, fid_np = beam_runs[0]["fid"], numpy_runs[0]["fid"]
    rel = abs(fid_beam - fid_np) / abs(fid_np)
    beam_total, np_total = _median(beam_runs, "total_s"), _median(numpy_runs, "total_s")
    cpus = os.cpu_count() or 1
    idle = max(max(loads), load_before[0]) < 0.25 * cpus
    report = {
        "n": args.n, "d": args.d, "beam_mode": args.mode, "repeats": args.repeats,
        "beam_statistics_s": round(_median(beam_runs, "statistics_s"), 2),
        "numpy_statistics_s": round(_median(numpy_runs, "statistics_s"), 2),
        "statistics_ratio_beam_over_numpy": round(
            _median(beam_runs, "statistics_s") / _median(numpy_runs, "statistics_s"), 2),
        "frechet_distance_eigh_s": round(_median(beam_runs, "distance_s"), 2),
        "frechet_distance_sqrtm_s": round(_median(numpy_runs, "distance_s"), 2),
        "beam_total_s": round(beam_total, 2), "numpy_sqrtm_total_s": round(np_total, 2),
        "total_ratio_beam_over_numpy_sqrtm": round(beam_total / np_total, 3),
        "target_total_ratio_at_most_1": bool(beam_total <= np_total),
        "fid_beam": fid_beam, "fid_numpy_sqrtm": fid_np, "fid_relative_difference": rel,
        "sigma_max_abs_difference": float(np.max(np.abs(beam_runs[0]["sigma"]
                                                        - numpy_runs[0]["sigma"]))),
        "blas_threads_at_end": fid_math.blas_threads_for_load() or "library default",
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "cpus": cpus,
        "machine_idle": idle,
    }
    if control_runs:
        report["control_sqrtm_thread_limited_s"] = round(_median(control_runs, "distance_s"), 2)
        report["control_total_s"] = round(_median(control_runs, "total_s"), 2)
        report["total_ratio_beam_over_control"] = round(
            beam_total / _median(control_runs, "total_s"), 3)
    if not args.no_memory:
        report["beam_statistics_peak_traced_mb"] = round(
            _peak_mb(beam_statistics, args.n, args.d, args.mode), 1)
        report["numpy_statistics_peak_traced_mb"] = round(_peak_mb(numpy_statistics, args.n, args.d), 1)
    report["features_float32_mb"] = round(args.n * args.d * 4 / 2**20, 1)
    report["process_max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for k, v in report.items():
        print(f"{k:36s} {v}")
    if not idle:
        print(f"NOTE: the machine was not idle (1-min load average up to {max(loads):.2f} on "
              f"{cpus} CPUs): other jobs shared the cores during both sides' runs")
    print(json.dumps(report))
    if rel > 1e-6:
        raise SystemExit(f"Beam and numpy FID disagree: relative difference {rel:.3g}")


if __name__ == "__main__":
    main()
