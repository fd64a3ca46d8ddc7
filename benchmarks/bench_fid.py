"""FID of N feature vectors: Beam (FnApiRunner) sufficient statistics vs in-process numpy.

    python benchmarks/bench_fid.py [--n=10000] [--d=2048] [--mode=in_memory]

Both sides fit (mu, sigma) to the same float32 features [N, d], generated
deterministically in chunks of 100 (in Beam: one element per feature vector, as
RunInference emits them; both timings include generating the features) and compute FID against the same reference
statistics with the same ``frechet_distance``; the sqrtm cost is reported separately.
Times are wall-clock seconds; peak memory is the tracemalloc peak of a separate pass
(numpy allocations are traced) and the process's max RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import sys
import tempfile
import time
import tracemalloc

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from beam_jobs import fid_math  # noqa: E402
from beam_jobs.fid_math import FeatureStatistics  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--mode", default="in_memory",
                        choices=["in_memory", "multi_threading", "multi_processing"])
    parser.add_argument("--no_memory", action="store_true", help="skip the tracemalloc pass")
    args = parser.parse_args()

    if args.n % CHUNK:
        raise SystemExit(f"--n must be a multiple of {CHUNK}, got {args.n}")
    ref_x = np.concatenate([make_chunk(10**6 + i, args.d, scale=1.1)
                            for i in range(args.n // CHUNK)]).astype(np.float64)
    reference = FeatureStatistics(ref_x.mean(0), np.cov(ref_x, rowvar=False), len(ref_x))
    del ref_x

    beam_stats, t_beam = _timed(beam_statistics, args.n, args.d, args.mode)
    np_stats, t_np = _timed(numpy_statistics, args.n, args.d)
    fid_beam, t_fd_beam = _timed(fid_math.fid_from_statistics, beam_stats, reference)
    fid_np, t_fd_np = _timed(fid_math.fid_from_statistics, np_stats, reference)
    rel = abs(fid_beam - fid_np) / abs(fid_np)
    report = {
        "n": args.n, "d": args.d, "beam_mode": args.mode,
        "beam_statistics_s": round(t_beam, 2), "numpy_statistics_s": round(t_np, 2),
        "statistics_ratio_beam_over_numpy": round(t_beam / t_np, 2),
        "frechet_distance_beam_side_s": round(t_fd_beam, 2),
        "frechet_distance_numpy_side_s": round(t_fd_np, 2),
        "beam_total_s": round(t_beam + t_fd_beam, 2), "numpy_total_s": round(t_np + t_fd_np, 2),
        "total_ratio_beam_over_numpy": round((t_beam + t_fd_beam) / (t_np + t_fd_np), 2),
        "fid_beam": fid_beam, "fid_numpy": fid_np, "fid_relative_difference": rel,
        "sigma_max_abs_difference": float(np.max(np.abs(beam_stats.sigma - np_stats.sigma))),
    }
    if not args.no_memory:
        report["beam_statistics_peak_traced_mb"] = round(
            _peak_mb(beam_statistics, args.n, args.d, args.mode), 1)
        report["numpy_statistics_peak_traced_mb"] = round(_peak_mb(numpy_statistics, args.n, args.d), 1)
    report["features_float32_mb"] = round(args.n * args.d * 4 / 2**20, 1)
    report["process_max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for k, v in report.items():
        print(f"{k:36s} {v}")
    print(json.dumps(report))
    if rel > 1e-6:
        raise SystemExit(f"Beam and numpy FID disagree: relative difference {rel:.3g}")


if __name__ == "__main__":
    main()
