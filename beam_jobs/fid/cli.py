"""``python -m beam_jobs.fid``: the flags of :func:`beam_jobs.fid.api.evaluate`, the
source chosen by its flag (:data:`beam_jobs.fid.source_registry.FID_SOURCES`),
``--compare_stats``, and one-line user errors."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Optional, Sequence

import beam_jobs.fid
from artifacts import fs_errors
from artifacts.cli import setup_logging
from beam_jobs.fid import extractors, fid_math
from beam_jobs.fid.api import OutputNotWritten, compare_stats, evaluate
from beam_jobs.fid.fid_math import FeatureStatistics
from beam_jobs.fid.pipeline import DEFAULT_KID_SAMPLES, DEFAULT_PR_SAMPLES
from beam_jobs.fid.report import precision_recall_report
from beam_jobs.fid.source_registry import source_from_args
from beam_jobs.fid.sources import DEFAULT_BATCH_SIZE
from beam_jobs.sources.cli_flags import add_source_flags, add_tfds_flags, check_source_flags
from beam_jobs.sources.registry import DEFAULT_MAX_MEMBER_BYTES

log = logging.getLogger(__name__)

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.fid", description=beam_jobs.fid.__doc__.split("\n\n")[0],
        epilog="Unknown flags are Beam pipeline options (--runner, --direct_running_mode,\n"
               "--temp_location: where the pipeline's combined results go, required on a\n"
               "distributed runner). Paths may be local or on any Beam filesystem (gs://...);\n"
               "SavedModel paths must exist on the driver and every worker.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbosity", type=int, default=0, help="1: TF/Beam start-up noise")
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("--data_dir", help="preprocessed TFRecords directory (with --split)")
    src.add_argument("--split", default="train")
    src.add_argument("--saved_model", help="generator SavedModel with a 'sample' signature")
    src.add_argument("--model_dir", help="trained model directory (pipeline.train), sampled "
                                         "without an export")
    src.add_argument("--num_samples", type=int, default=10000)
    src.add_argument("--temperature", type=float, default=1.0)
    src.add_argument("--seed", type=int, default=0)
    src.add_argument("--image_folder", help="folder of image files")
    add_source_flags(p, required=False, group=src)
    src.add_argument("--max_member_bytes", type=int, default=DEFAULT_MAX_MEMBER_BYTES,
                     help="--image_folder files (--input entries) larger than this many bytes "
                          "are skipped as undecodable (default 64 MiB)")
    p.add_argument("--extractor", choices=extractors.EXTRACTORS, default="mnist_classifier")
    p.add_argument("--extractor_path", help="extractor SavedModel dir, or Inception .pb/.h5")
    p.add_argument("--extractor_cache", help="where Inception SavedModels are built (a "
                   "directory only you can write; default $ADE_EXTRACTOR_CACHE, else "
                   "~/.cache/adaptive_density/extractors)")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--reference_stats", help=".npz with mu and sigma to compute FID against")
    p.add_argument("--reference_data_dir", help="TFRecords of the reference set, for KID")
    p.add_argument("--reference_split", default="train")
    p.add_argument("--kid_samples", type=int, default=DEFAULT_KID_SAMPLES,
                   help="features kept per side for KID (reservoir size)")
    p.add_argument("--kid_subset_size", type=int, default=1000)
    p.add_argument("--kid_num_subsets", type=int, default=100)
    p.add_argument("--output_stats", help="write this run's statistics (.npz)")
    p.add_argument("--save_kid_features", action="store_true",
                   help="store the KID reservoir in --output_stats (a KID reference)")
    p.add_argument("--pr_max_samples", type=int, default=DEFAULT_PR_SAMPLES,
                   help="feature vectors per side for precision/recall (a deterministic "
                        "subset if there are more; 0: no precision/recall)")
    p.add_argument("--pr_k", type=int, default=fid_math.DEFAULT_K,
                   help="k of the k-NN manifolds of precision/recall")
    p.add_argument("--save_pr_features", action="store_true",
                   help="store the precision/recall feature subset in --output_stats (a "
                        "precision/recall reference)")
    p.add_argument("--compare_stats", help="A.npz,B.npz: print the FID of two statistics "
                   "files (and precision/recall of A against B if both hold P&R features)")
    p.add_argument("--allow_unverified_stats", action="store_true",
                   help="accept statistics files without an extractor fingerprint (plain "
                        "TTUR/pytorch-fid mu/sigma files, or files of older versions); "
                        "identities that both sides record are still checked")
    add_tfds_flags(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI; user errors (missing files, statistics that cannot be compared) print one
    ``error: ...`` line on stderr and return 2."""
    parser = _parser()
    args, pipeline_args = parser.parse_known_args(argv)
    check_source_flags(parser, args)
    setup_logging()
    fs_errors.drop_failure_logs()  # Beam's tracebacks of a full disk or Ctrl-C: one line
    try:
        return _run(args, pipeline_args)
    except OutputNotWritten as e:  # the results are not lost: printed, then the error
        print(json.dumps(e.results))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (fid_math.StatisticsError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, pipeline_args: Sequence[str]) -> int:
    if args.compare_stats:
        parts = args.compare_stats.split(",")
        if len(parts) != 2 or not all(parts):
            raise SystemExit(f"--compare_stats expects A.npz,B.npz, got {args.compare_stats!r}")
        out: dict[str, Any] = {"fid": compare_stats(
            *parts, allow_unverified=args.allow_unverified_stats)}
        a, b = FeatureStatistics.load(parts[0]), FeatureStatistics.load(parts[1])
        missing = [s.describe() for s in (a, b) if s.pr_features is None]
        out.update(precision_recall_report(
            a.pr_features, a.count, b.pr_features, b.count, k=args.pr_k,
            max_samples=args.pr_max_samples,
            unavailable=f"{' and '.join(missing)} hold no precision/recall features"))
        print(json.dumps(out))
        return 0
    source = source_from_args(args)
    if not (args.reference_stats or args.output_stats):
        log.info("no --reference_stats or --output_stats: reporting IS only")
    out = evaluate(source, args.extractor, args.extractor_path,
                   reference_stats_path=args.reference_stats,
                   reference_data_dir=args.reference_data_dir,
                   reference_split=args.reference_split, batch_size=args.batch_size,
                   kid_samples=args.kid_samples, kid_subset_size=args.kid_subset_size,
                   kid_num_subsets=args.kid_num_subsets, output_stats=args.output_stats,
                   save_kid_features=args.save_kid_features, cache_dir=args.extractor_cache,
                   allow_unverified=args.allow_unverified_stats, pipeline_args=pipeline_args,
                   pr_max_samples=args.pr_max_samples, pr_k=args.pr_k,
                   save_pr_features=args.save_pr_features)
    print(json.dumps(out))
    return 0


PROG = "python -m beam_jobs.fid"
_USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError, ValueError)


@fs_errors.interrupts_as_one_line(PROG, "the run's temporary results were deleted; "
                                  "--output_stats, if given, is written whole or not at all")
def cli(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` for the command line: a user error (missing input, bad value, a full
    or read-only disk) is one line ``python -m beam_jobs.fid: error: ...`` on stderr and
    exit code 2, Ctrl-C one line ``... interrupted; ...`` and exit code 130, not a
    traceback (``AD_TRACEBACK=1`` shows it)."""
    try:
        return main(argv)
    except _USER_ERRORS as e:
        if os.environ.get("AD_TRACEBACK"):
            raise
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        print(f"{PROG}: error: {lines[0] if lines else type(e).__name__}", file=sys.stderr)
        return 2
