"""Precision and recall of two sides' feature subsets as the FID job's result keys."""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from beam_jobs.fid import fid_math
from beam_jobs.fid.pipeline import DEFAULT_PR_SAMPLES, PR_SUBSET_RULE

log = logging.getLogger(__name__)


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
