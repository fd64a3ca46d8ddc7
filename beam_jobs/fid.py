"""FID / KID / IS / precision and recall as an Apache Beam job: images -> extractor
features -> statistics.

One image source per run:

* ``--data_dir=DIR --split=S``: the TFRecords written by ``beam_jobs.preprocess``;
* ``--saved_model=PATH --num_samples=N [--temperature=1.0] [--seed=0]``: a generator
  SavedModel with signature ``sample(seed int64 [B], temperature float32 [B]) ->
  {"images": uint8 [B, H, W, C]}``; sample i uses seed ``seed + i``;
* ``--model_dir=DIR --num_samples=N [...]``: a trained model directory (pipeline.train),
  sampled without an export (the same rows as its export's ``sample`` signature);
* ``--image_folder=DIR``: image files under DIR (the extensions of
  :data:`artifacts.dataset_format.IMAGE_EXTENSIONS`; dotfiles and ``__MACOSX`` skipped).

Features come from Beam RunInference over an extractor SavedModel (see
:mod:`beam_jobs.extractors`); FID statistics are float64 sufficient statistics merged
by a CombineFn (O(d^2) memory whatever N is), IS per-split softmax statistics, KID a
bounded reservoir of features per side, precision and recall (Kynkaanniemi et al. 2019,
k = 3) the features of at most ``--pr_max_samples`` images per side (a deterministic
subset if there are more: the records whose keys hash smallest), computed on the driver
after the features in row blocks of distances. Their reference side is the features of
``--reference_data_dir``, or those stored in the ``--reference_stats`` file (written by
``--output_stats ... --save_pr_features``); without either they are reported as null
with a note (``pr_note``).

This module is the job's CLI and programmatic API; the sources are in
:mod:`beam_jobs.fid_sources`, the pipeline in :mod:`beam_jobs.fid_pipeline`, the math in
:mod:`beam_jobs.fid_math`.

Examples::

    # reference statistics of a data set, once
    python -m beam_jobs.fid --data_dir=data/mnist --split=train \\
        --extractor=mnist_classifier --extractor_path=work/mnist_classifier \\
        --output_stats=ref.npz --save_kid_features --save_pr_features
    # FID/KID/IS/precision/recall of 10,000 model samples
    python -m beam_jobs.fid --saved_model=export/model/1 --num_samples=10000 \\
        --reference_stats=ref.npz --extractor=mnist_classifier \\
        --extractor_path=work/mnist_classifier
    # FID of two statistics files (and precision/recall if both hold P&R features)
    python -m beam_jobs.fid --compare_stats=a.npz,b.npz

Statistics files record the extractor's identity (name, content fingerprint, resize
protocol), the image shape and the sample count; statistics that differ in any of them,
or that record no fingerprint (files of older versions, plain TTUR mu/sigma files), are
refused with a one-line error. Regenerate old files; ``--allow_unverified_stats`` uses a
file without a fingerprint anyway (what both sides record is still checked).

Unknown flags are passed to Beam (``--runner``, ``--direct_running_mode``, ...); the
default is ``--runner=FnApiRunner`` (DirectRunner's Prism path needs the network).
Data sets, image folders and statistics files are read and written through Beam's
FileSystems (local, mounted, ``gs://``, ...); the pipeline's combined results go under
``--temp_location`` (required on a distributed runner; a local temporary directory
otherwise). Extractor and generator SavedModels are read by TensorFlow from a path that
must exist on the driver and on every worker.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from typing import Any, Optional, Sequence, Union

import numpy as np

from artifacts import fs_errors
from artifacts.cli import setup_logging
from beam_jobs import extractors, fid_math, fid_results
from beam_jobs.beam_options import pipeline_options
from beam_jobs.fid_math import FeatureStatistics
from beam_jobs.fid_pipeline import (
    DEFAULT_KID_SAMPLES,
    DEFAULT_PR_SAMPLES,
    NUM_IS_SPLITS,
    PR_SUBSET_RULE,
    DistinctShapesCombineFn,
    FeatureResult,
    run_features,
)
from beam_jobs.fid_sources import (
    DEFAULT_BATCH_SIZE,
    ImageFolderSource,
    ImageSource,
    ModelDirSampleSource,
    ReadImages,
    SampleSource,
    Source,
    TFRecordSource,
)
from beam_jobs.raw_source import DEFAULT_MAX_MEMBER_BYTES

log = logging.getLogger(__name__)

__all__ = [
    "TFRecordSource", "SampleSource", "ModelDirSampleSource", "ImageFolderSource",
    "ImageSource", "Source", "ReadImages", "FeatureResult", "DistinctShapesCombineFn",
    "run_features", "pipeline_options", "compute_statistics", "compare_stats",
    "check_reference_stats", "evaluate", "evaluate_samples", "precision_recall_report",
    "main", "cli", "OutputNotWritten", "DEFAULT_BATCH_SIZE", "DEFAULT_KID_SAMPLES", "DEFAULT_PR_SAMPLES",
    "NUM_IS_SPLITS",
]


# --------------------------------------------------------------------------------------
# Programmatic API.
# --------------------------------------------------------------------------------------
def compute_statistics(source: Source, extractor: str, extractor_path: str, *,
                       batch_size: int = DEFAULT_BATCH_SIZE, kid_samples: int = 0,
                       cache_dir: Optional[str] = None,
                       pipeline_args: Optional[Sequence[str]] = None,
                       pr_samples: int = 0) -> FeatureStatistics:
    """FID statistics (mu [d], sigma [d, d], count) of a source's extractor features.

    With ``kid_samples > 0`` the result also carries a reservoir sample of features
    (``kid_features``) so it can serve as a KID reference; with ``pr_samples > 0`` a
    deterministic subset of at most that many features (``pr_features``, in the
    subset's rank order) so it can serve as a precision/recall reference.
    """
    info = extractors.resolve_extractor(extractor, extractor_path, cache_dir)
    res = run_features(source, info, batch_size=batch_size, kid_samples=kid_samples,
                       pipeline_args=pipeline_args, pr_samples=pr_samples)
    res.statistics.kid_features = res.kid_features
    res.statistics.pr_features = res.pr_features
    return res.statistics


def precision_recall_report(features: Optional[np.ndarray], total: Optional[int],
                            reference: Optional[np.ndarray], reference_total: Optional[int],
                            *, k: int = fid_math.DEFAULT_K, max_samples: int = DEFAULT_PR_SAMPLES,
                            unavailable: str = "") -> dict[str, Any]:
    """Precision and recall of ``features`` [n, d] (of ``total`` images) against
    ``reference`` [m, d] (of ``reference_total`` images) as the results' keys:
    {"precision", "recall", "pr_k", "pr_num_samples", "pr_num_reference", "pr_note"}.

    Each side is cut to its first ``max_samples`` rows (the features of
    :func:`run_features` are in the rank order of their subset, so this is the same
    subset rule). With a side missing (``unavailable`` says why), with fewer than k + 1
    rows, or with ``max_samples`` 0, the numbers are None and ``pr_note`` says why;
    otherwise ``pr_note`` states how many feature vectors of how many images were used
    per side.
    """
    out: dict[str, Any] = {"precision": None, "recall": None, "pr_k": k,
                           "pr_num_samples": None, "pr_num_reference": None}
    if max_samples <= 0:
        out["pr_note"] = "precision/recall turned off (pr_max_samples=0)"
        return out
    if features is None or reference is None:
        out["pr_note"] = f"precision/recall unavailable: {unavailable or 'no features'}"
        return out
    features, reference = features[:max_samples], reference[:max_samples]
    n, m = len(features), len(reference)
    if min(n, m) < k + 1:
        out["pr_note"] = (f"precision/recall unavailable: k={k} needs at least {k + 1} "
                          f"feature vectors per side, got {n} evaluated and {m} reference")
        return out
    log.info("computing precision/recall (k=%d) on %d vs %d feature vectors", k, n, m)
    pr = fid_math.precision_recall(reference, features, k=k)
    out.update(precision=pr.precision, recall=pr.recall, pr_num_samples=n, pr_num_reference=m)

    def side(used: int, of: Optional[int], what: str) -> str:
        return (f"{used} of {of} {what}" if of is not None and used < of
                else f"all {used} {what}")

    subset = ((total is not None and n < total)
              or (reference_total is not None and m < reference_total))
    out["pr_note"] = (f"k={k} nearest neighbours; {side(n, total, 'evaluated images')} and "
                      f"{side(m, reference_total, 'reference images')}"
                      + (f" (deterministic subsets: {PR_SUBSET_RULE})" if subset else ""))
    return out


def compare_stats(path_a: str, path_b: str, *, allow_unverified: bool = False) -> float:
    """FID of two ``.npz`` statistics files, refused (:class:`fid_math.StatisticsError`)
    if their extractor identities differ or one has none (unless ``allow_unverified``)."""
    return fid_math.fid_from_statistics(FeatureStatistics.load(path_a),
                                        FeatureStatistics.load(path_b),
                                        allow_unverified=allow_unverified)


def check_reference_stats(path: str, extractor: Union[str, extractors.ExtractorInfo],
                          extractor_path: str = "", *, cache_dir: Optional[str] = None,
                          allow_unverified: bool = False) -> FeatureStatistics:
    """Loads reference statistics and checks, before any feature is computed, that they
    were made with this extractor (name, fingerprint, resize protocol, feature dimension);
    raises :class:`fid_math.StatisticsError` otherwise. The image shape is checked when
    the FID is computed (:func:`fid_math.fid_from_statistics`)."""
    info = (extractor if isinstance(extractor, extractors.ExtractorInfo)
            else extractors.resolve_extractor(extractor, extractor_path, cache_dir))
    reference = FeatureStatistics.load(path)
    fid_math.check_identity(
        reference, against=f"extractor {info.saved_model_dir!r}", extractor=info.name,
        fingerprint=info.fingerprint, resize_protocol=info.resize_protocol,
        dim=info.feature_dim, allow_unverified=allow_unverified)
    return reference


def evaluate(source: Source, extractor: str, extractor_path: str, *,
             reference_stats_path: Optional[str] = None,
             reference_data_dir: Optional[str] = None, reference_split: str = "train",
             batch_size: int = DEFAULT_BATCH_SIZE, kid_samples: int = DEFAULT_KID_SAMPLES,
             kid_subset_size: int = 1000, kid_num_subsets: int = 100,
             output_stats: Optional[str] = None, save_kid_features: bool = False,
             cache_dir: Optional[str] = None, allow_unverified: bool = False,
             pipeline_args: Optional[Sequence[str]] = None,
             pr_max_samples: int = DEFAULT_PR_SAMPLES, pr_k: int = fid_math.DEFAULT_K,
             save_pr_features: bool = False) -> dict:
    """FID (vs reference statistics), KID and precision/recall (vs reference features)
    and IS of a source.

    KID reference features come from ``reference_data_dir`` (run through the same
    extractor) or else from the reference ``.npz``'s ``kid_features``; without either
    KID is None. Precision/recall (k = ``pr_k``, at most ``pr_max_samples`` feature
    vectors per side, a deterministic subset if more; 0 turns them off) likewise use the
    features of ``reference_data_dir`` or the ``.npz``'s ``pr_features``; without
    either they are None and ``pr_note`` says why (:func:`precision_recall_report`).
    ``save_pr_features`` stores this run's subset in ``output_stats``.

    Reference statistics of another extractor (fingerprint), resize protocol or image
    shape, or without a fingerprint (unless ``allow_unverified``), are refused with
    :class:`fid_math.StatisticsError`: the extractor's identity is checked before the
    pipeline runs, the image shape after it (``output_stats`` is written first). Returns
    the JSON-able dict of the CLI.

    ``output_stats`` is written atomically (whole, under a temporary name in its directory,
    then renamed: :func:`beam_jobs.fid_results.write_atomically`), so a file already there
    is either replaced whole or left as it was. If it cannot be written (a full disk, a
    read-only or impossible path) everything else is still computed and
    :class:`OutputNotWritten` is raised at the end, its ``results`` the dict this function
    would have returned.
    """
    if pr_max_samples < 0 or isinstance(pr_k, bool) or not isinstance(pr_k, int) or pr_k < 1:
        raise ValueError(f"pr_max_samples={pr_max_samples}, pr_k={pr_k!r}: expected "
                         "pr_max_samples >= 0 and an integer pr_k >= 1")
    if save_pr_features and not (output_stats and pr_max_samples > 0):
        raise ValueError("save_pr_features stores precision/recall features in "
                         "output_stats: it needs output_stats and pr_max_samples > 0")
    info = extractors.resolve_extractor(extractor, extractor_path, cache_dir)
    reference = (check_reference_stats(reference_stats_path, info,
                                       allow_unverified=allow_unverified)
                 if reference_stats_path else None)
    pr_reference_known = bool(reference_data_dir) or (
        reference is not None and reference.pr_features is not None)
    pr_samples = pr_max_samples if (pr_reference_known or save_pr_features) else 0
    res = run_features(source, info, batch_size=batch_size, kid_samples=kid_samples,
                       pipeline_args=pipeline_args, pr_samples=pr_samples)
    stats = res.statistics
    not_written = None
    if output_stats:
        if save_kid_features:
            stats.kid_features = res.kid_features
        if save_pr_features:
            stats.pr_features = res.pr_features
        try:
            fid_results.write_atomically(output_stats, stats.save)
            log.info("wrote statistics of %d images to %s", stats.count, output_stats)
        except OSError as err:  # a full disk, a read-only or missing path: keep the results
            not_written = (f"--output_stats={output_stats!r} was not written "
                           f"({_os_error_text(err)}); any file already there is unchanged, "
                           "and the results were computed and are reported")
    out: dict[str, Any] = {"fid": None, "kid_mean": None, "kid_std": None,
                           "precision": None, "recall": None,
                           "is_mean": res.is_mean, "is_std": res.is_std,
                           "confident_rate": res.confident_rate,
                           "label_coverage": res.label_coverage,
                           "num_samples": stats.count, "feature_dim": stats.dim,
                           "extractor": info.name, "resize_protocol": info.resize_protocol,
                           "extractor_fingerprint": info.fingerprint,
                           "image_shape": stats.image_shape}
    if reference is not None:
        log.info("computing FID against %s", reference_stats_path)
        out["fid"] = fid_math.fid_from_statistics(stats, reference,
                                                  allow_unverified=allow_unverified)
        out["reference_num_samples"] = reference.count
    ref_features = None
    pr_reference, pr_reference_total, pr_missing = None, None, ""
    if reference_data_dir:
        ref = run_features(TFRecordSource(reference_data_dir, reference_split), info,
                           batch_size=batch_size, kid_samples=kid_samples,
                           pipeline_args=pipeline_args, pr_samples=pr_max_samples)
        ref_features = ref.kid_features
        pr_reference, pr_reference_total = ref.pr_features, ref.statistics.count
    elif reference is not None:
        ref_features = reference.kid_features
        pr_reference, pr_reference_total = reference.pr_features, reference.count
        pr_missing = (f"{reference.describe()} hold no precision/recall features (write "
                      "them with beam_jobs.fid --output_stats=PATH --save_pr_features, or "
                      "give --reference_data_dir)")
    else:
        pr_missing = ("no reference features (--reference_data_dir, or --reference_stats "
                      "written with --save_pr_features)")
    if ref_features is not None and res.kid_features is not None:
        log.info("computing KID on %d vs %d feature vectors", len(res.kid_features),
                 len(ref_features))
        out["kid_mean"], out["kid_std"] = fid_math.kernel_inception_distance(
            res.kid_features, ref_features, subset_size=kid_subset_size,
            num_subsets=kid_num_subsets)
    out.update(precision_recall_report(
        res.pr_features, stats.count, pr_reference, pr_reference_total, k=pr_k,
        max_samples=pr_max_samples, unavailable=pr_missing))
    out["undecodable"] = res.undecodable
    out["seconds"] = round(res.seconds, 2)
    if not_written:
        raise OutputNotWritten(not_written, out)
    return out


class OutputNotWritten(OSError):
    """An output file of the job (``output_stats``) could not be written; ``results``
    holds everything the job computed (the CLI prints it, then one ``error:`` line)."""

    def __init__(self, message: str, results: dict):
        super().__init__(message)
        self.results = results

    def __str__(self) -> str:
        return str(self.args[0])


def _os_error_text(err: OSError) -> str:
    """An OSError (or Beam's wrapping BeamIOError) on one line: 'No space left on device:
    /path' rather than the wrapper's dict of exceptions."""
    inner = err
    details = getattr(err, "exception_details", None)
    if isinstance(details, dict) and details:
        inner = next(iter(details.values()))
        while isinstance(getattr(inner, "args", None), tuple) and inner.args and isinstance(
                inner.args[0], OSError):
            inner = inner.args[0]
    if isinstance(inner, OSError) and inner.strerror:
        where = f": {inner.filename}" if inner.filename else ""
        if inner.errno in (errno.EEXIST, errno.ENOTDIR):  # from creating the parent folders
            return f"a part of the path is a file, not a directory{where}"
        return f"{inner.strerror}{where}"
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    return lines[0] if lines else type(inner).__name__


def evaluate_samples(saved_model_dir: str, num_samples: int, reference_stats_path: str,
                     extractor: str, extractor_path: str, *, temperature: float = 1.0,
                     seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                     source_kind: str = "saved_model", **kwargs) -> dict:
    """FID/KID/IS of ``num_samples`` samples of a generator (see :func:`evaluate`):
    ``saved_model_dir`` is a SavedModel with a ``sample`` signature, or with
    ``source_kind="model_dir"`` a trained model directory sampled without an export.

    Returns {"fid", "kid_mean", "kid_std", "precision", "recall" (None without reference
    features; "pr_k", "pr_num_samples", "pr_num_reference", "pr_note"), "is_mean",
    "is_std", "confident_rate" (top class probability >= 0.9), "label_coverage"
    (predicted-label entropy / ln K), "num_samples", "feature_dim", "extractor",
    "resize_protocol", ...}.
    """
    if source_kind not in ("saved_model", "model_dir"):
        raise ValueError(f"source_kind={source_kind!r}: expected 'saved_model' or 'model_dir'")
    kind = SampleSource if source_kind == "saved_model" else ModelDirSampleSource
    source = kind(saved_model_dir, num_samples, temperature, seed, batch_size)
    return evaluate(source, extractor, extractor_path,
                    reference_stats_path=reference_stats_path, batch_size=batch_size, **kwargs)


# --------------------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.fid", description=__doc__.split("\n\n")[0],
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
    src.add_argument("--max_member_bytes", type=int, default=DEFAULT_MAX_MEMBER_BYTES,
                     help="--image_folder files larger than this many bytes are skipped as "
                          "undecodable (default 64 MiB)")
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
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI; user errors (missing files, statistics that cannot be compared) print one
    ``error: ...`` line on stderr and return 2."""
    args, pipeline_args = _parser().parse_known_args(argv)
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
    chosen = [n for n in ("data_dir", "saved_model", "model_dir", "image_folder")
              if getattr(args, n)]
    if len(chosen) != 1:
        raise SystemExit("give exactly one source: --data_dir, --saved_model, --model_dir or "
                         f"--image_folder (got {chosen or 'none'}), or --compare_stats")
    if args.data_dir:
        source: Source = TFRecordSource(args.data_dir, args.split)
    elif args.saved_model:
        source = SampleSource(args.saved_model, args.num_samples, args.temperature, args.seed,
                              args.batch_size)
    elif args.model_dir:
        source = ModelDirSampleSource(args.model_dir, args.num_samples, args.temperature,
                                      args.seed, args.batch_size)
    else:
        source = ImageFolderSource(args.image_folder, args.max_member_bytes)
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


if __name__ == "__main__":
    sys.exit(cli())
