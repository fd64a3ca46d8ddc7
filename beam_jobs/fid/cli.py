"""``python -m beam_jobs.fid``: the flags of :func:`beam_jobs.fid.api.evaluate`, the
source chosen by its flag (:data:`beam_jobs.fid.source_registry.FID_SOURCES`),
``--compare_stats`` (absl flags; ``--flagfile`` works, unknown flags are Beam's
PipelineOptions), and one-line user errors (:mod:`artifacts.cli`)."""
from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace
from typing import Any, Optional, Sequence

from absl import flags

import beam_jobs.fid
from artifacts import fs_errors, memory_errors
from artifacts.cli import (
    UsageError,
    define_choice,
    flag_values,
    parse_flags,
    setup_logging,
    user_errors,
)
from beam_jobs.fid import extractors, fid_math
from beam_jobs.fid.api import OutputNotWritten, compare_stats, evaluate
from beam_jobs.fid.fid_math import FeatureStatistics
from beam_jobs.fid.pipeline import DEFAULT_KID_SAMPLES, DEFAULT_PR_SAMPLES
from beam_jobs.fid.report import precision_recall_report
from beam_jobs.fid.source_registry import SOURCE_CHOICE_ERROR, chosen_sources, source_from_args
from beam_jobs.fid.sources import DEFAULT_BATCH_SIZE
from beam_jobs.sources.cli_flags import add_source_flags, add_tfds_flags, check_source_flags
from beam_jobs.sources.registry import DEFAULT_MAX_MEMBER_BYTES

log = logging.getLogger(__name__)

PROG = "python -m beam_jobs.fid"
DOC = beam_jobs.fid.__doc__.split("\n\n")[0] + f"""

Source: exactly one of --data_dir, --saved_model, --model_dir, --image_folder and --source
with --input (or --tfds_name), or --compare_stats. Unknown flags are Beam pipeline options
(--runner, --direct_running_mode, --temp_location: where the pipeline's combined results
go, required on a distributed runner). Paths may be local or on any Beam filesystem
(gs://...); SavedModel paths must exist on the driver and every worker. A --flagfile (one
--flag=value per line) may hold both.

usage: {PROG} SOURCE [--extractor=...] [flags] [Beam pipeline options]
       {PROG} --compare_stats=A.npz,B.npz"""


def define_flags() -> flags.FlagValues:
    """The job's flags on a new private FlagValues."""
    fv = flag_values()
    string, integer = flags.DEFINE_string, flags.DEFINE_integer
    string("data_dir", None, "source: preprocessed TFRecords directory (with --split)",
           flag_values=fv)
    string("split", "train", "split of --data_dir", flag_values=fv)
    string("saved_model", None, "source: generator SavedModel with a 'sample' signature",
           flag_values=fv)
    string("model_dir", None, "source: trained model directory (pipeline.train), sampled "
           "without an export", flag_values=fv)
    integer("num_samples", 10000, "samples of --saved_model / --model_dir", flag_values=fv)
    flags.DEFINE_float("temperature", 1.0, "sampling temperature of --saved_model / "
                       "--model_dir", flag_values=fv)
    integer("seed", 0, "sample i is drawn with seed * 2^31 + i", flag_values=fv)
    string("image_folder", None, "source: folder of image files", flag_values=fv)
    add_source_flags(fv)
    integer("max_member_bytes", DEFAULT_MAX_MEMBER_BYTES, "--image_folder files (--input "
            "entries) larger than this many bytes are skipped as undecodable (default 64 "
            "MiB)", flag_values=fv)
    define_choice("extractor", "mnist_classifier", extractors.EXTRACTORS,
                  "feature extractor", fv)
    string("extractor_path", None, "extractor SavedModel dir, or Inception .pb/.h5",
           flag_values=fv)
    string("extractor_cache", None, "where Inception SavedModels are built (a directory "
           "only you can write; default $ADE_EXTRACTOR_CACHE, else "
           "~/.cache/adaptive_density/extractors)", flag_values=fv)
    integer("batch_size", DEFAULT_BATCH_SIZE, "images per extractor (and generator) call",
            flag_values=fv)
    string("reference_stats", None, ".npz with mu and sigma to compute FID against",
           flag_values=fv)
    string("reference_data_dir", None, "TFRecords of the reference set, for KID",
           flag_values=fv)
    string("reference_split", "train", "split of --reference_data_dir", flag_values=fv)
    integer("kid_samples", DEFAULT_KID_SAMPLES, "features kept per side for KID (reservoir "
            "size)", flag_values=fv)
    integer("kid_subset_size", 1000, "KID subset size", flag_values=fv)
    integer("kid_num_subsets", 100, "KID subsets", flag_values=fv)
    string("output_stats", None, "write this run's statistics (.npz)", flag_values=fv)
    flags.DEFINE_bool("save_kid_features", False, "store the KID reservoir in "
                      "--output_stats (a KID reference)", flag_values=fv)
    integer("pr_max_samples", DEFAULT_PR_SAMPLES, "feature vectors per side for "
            "precision/recall (a deterministic subset if there are more; 0: no "
            "precision/recall)", flag_values=fv)
    integer("pr_k", fid_math.DEFAULT_K, "k of the k-NN manifolds of precision/recall",
            flag_values=fv)
    flags.DEFINE_bool("save_pr_features", False, "store the precision/recall feature subset "
                      "in --output_stats (a precision/recall reference)", flag_values=fv)
    string("compare_stats", None, "A.npz,B.npz: print the FID of two statistics files (and "
           "precision/recall of A against B if both hold P&R features)", flag_values=fv)
    flags.DEFINE_bool("allow_unverified_stats", False, "accept statistics files without an "
                      "extractor fingerprint (plain TTUR/pytorch-fid mu/sigma files, or files "
                      "of older versions); identities that both sides record are still "
                      "checked", flag_values=fv)
    add_tfds_flags(fv)
    return fv


@user_errors(PROG)
def parse_args(argv: Sequence[str]) -> tuple[SimpleNamespace, list[str]]:
    """Our flags -> namespace; everything else is returned for Beam's PipelineOptions. A
    usage error is one line on stderr and SystemExit(2)."""
    args, rest = parse_flags(define_flags(), argv, PROG, DOC)
    check_source_flags(args)
    if args.compare_stats:
        parts = args.compare_stats.split(",")
        if len(parts) != 2 or not all(parts):
            raise UsageError(f"--compare_stats expects A.npz,B.npz, got {args.compare_stats!r}")
    elif len(chosen_sources(args)) != 1:
        raise UsageError(SOURCE_CHOICE_ERROR.format(chosen_sources(args) or "none"))
    return args, rest


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI; user errors of the inputs (missing files, statistics that cannot be
    compared) print one ``error: ...`` line on stderr and return 2, a usage error is one
    ``python -m beam_jobs.fid: error: ...`` line and SystemExit(2)."""
    args, pipeline_args = parse_args(sys.argv[1:] if argv is None else list(argv))
    setup_logging()
    fs_errors.drop_failure_logs()  # Beam's tracebacks of a full disk or Ctrl-C: one line
    try:
        with memory_errors.out_of_memory("computing the statistics", memory_errors.size_settings(
                args, names=("batch_size", "kid_samples", "pr_max_samples"))):
            return _run(args, pipeline_args)
    except OutputNotWritten as e:  # the results are not lost: printed, then the error
        print(json.dumps(e.results))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (fid_math.StatisticsError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: SimpleNamespace, pipeline_args: Sequence[str]) -> int:
    if args.compare_stats:
        parts = args.compare_stats.split(",")
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


@fs_errors.interrupts_as_one_line(PROG, "the run's temporary results were deleted; "
                                  "--output_stats, if given, is written whole or not at all")
@user_errors(PROG)
def cli(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` for the command line: a user error (missing input, bad value, a full
    or read-only disk) is one line ``python -m beam_jobs.fid: error: ...`` on stderr and
    exit code 2, Ctrl-C one line ``... interrupted; ...`` and exit code 130, not a
    traceback (``AD_TRACEBACK=1`` shows it)."""
    return main(argv)
