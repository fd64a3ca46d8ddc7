"""The FID job's programmatic API: statistics of a source, FID/KID/IS/precision/recall
of a source against a reference, reference checks (see :mod:`beam_jobs.fid`)."""
from __future__ import annotations

import errno
import logging
from typing import Any, Optional, Sequence, Union

from beam_jobs.fid import extractors, fid_math
from beam_jobs.fid import results as fid_results
from beam_jobs.fid.fid_math import FeatureStatistics
from beam_jobs.fid.pipeline import DEFAULT_KID_SAMPLES, DEFAULT_PR_SAMPLES, run_features
from beam_jobs.fid.report import precision_recall_report
from beam_jobs.fid.source_registry import GENERATOR_SOURCES
from beam_jobs.fid.sources import DEFAULT_BATCH_SIZE, ImageSource, TFRecordSource

log = logging.getLogger(__name__)

def compute_statistics(source: ImageSource, extractor: str, extractor_path: str, *,
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


def evaluate(source: ImageSource, extractor: str, extractor_path: str, *,
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
    then renamed: :func:`beam_jobs.fid.results.write_atomically`), so a file already there
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
    if source_kind not in GENERATOR_SOURCES:
        raise ValueError(f"source_kind={source_kind!r}: expected 'saved_model' or 'model_dir'")
    kind = GENERATOR_SOURCES[source_kind]
    source = kind(saved_model_dir, num_samples, temperature, seed, batch_size)
    return evaluate(source, extractor, extractor_path,
                    reference_stats_path=reference_stats_path, batch_size=batch_size, **kwargs)
