"""What every row of an ablation is judged on (experiments/ablation.py,
experiments/cifar10_ablation.py): the data set and held-out split, the FID extractor, the
reference statistics of the training split and the held-out real images' row, the
yardstick.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from pipeline.quickstart import last_json, missing_pr_features, run_stage


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What every row of an ablation is judged on: the data set and its held-out split
    (``max_examples``: a fixed prefix of it, None = all), the FID extractor and the
    reference statistics of the training split."""

    data_dir: str
    extractor: str
    extractor_path: str
    ref_stats: str
    eval_split: str = "validation"
    max_examples: int | None = None

    def extractor_flags(self) -> list[str]:
        return [f"--extractor={self.extractor}", f"--extractor_path={self.extractor_path}",
                f"--reference_stats={self.ref_stats}"]


def ensure_reference_stats(work: str, data_dir: str, extractor: str, extractor_path: str,
                           ref_stats: str) -> None:
    """Reference statistics of the training split (with KID and precision/recall features)
    in ``ref_stats``, (re)made when missing, of another extractor or without P&R features;
    the cached yardstick row in ``work`` goes with them."""
    from beam_jobs.fid.identity import stale_statistics_reason

    stale = (stale_statistics_reason(ref_stats, extractor, extractor_path)
             or missing_pr_features(ref_stats))
    if not stale:
        return
    print(f"reference statistics needed: {stale}")
    real_fid = os.path.join(work, "heldout_real_fid.json")
    if os.path.isfile(real_fid):
        os.remove(real_fid)
    run_stage(0, 0, "reference statistics of the training split", [
        sys.executable, "-m", "beam_jobs.fid", f"--data_dir={data_dir}", "--split=train",
        f"--extractor={extractor}", f"--extractor_path={extractor_path}",
        f"--output_stats={ref_stats}", "--save_kid_features", "--save_pr_features"],
        capture=True)


def heldout_real(work: str, protocol: Protocol, what: str = "held-out real digits") -> dict:
    """The FID job's numbers for the held-out real images (the protocol's split) against
    the same reference statistics: the yardstick of every sample row (cached in ``work``)."""
    path = os.path.join(work, "heldout_real_fid.json")
    if os.path.isfile(path):
        with open(path) as f:
            if "precision" not in json.load(f):  # written before precision/recall
                os.remove(path)
    if not os.path.isfile(path):
        out = last_json(run_stage(0, 0, what, [
            sys.executable, "-m", "beam_jobs.fid", f"--data_dir={protocol.data_dir}",
            f"--split={protocol.eval_split}", *protocol.extractor_flags()], capture=True))
        with open(path, "w") as f:
            json.dump(out, f)
    with open(path) as f:
        return json.load(f)
