"""experiments/ablation_report.py's paired-by-seed differences (the CIFAR-10 table's
cqf - vae_f line)."""
from __future__ import annotations

import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ablation(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "experiments"))
    sys.modules.pop("ablation_report", None)
    import ablation_report
    return ablation_report


def _row(seed, fid, bpd=None):
    row = {"seed": seed, "samples_t0": {"fid": fid}}
    if bpd is not None:
        row["bpd"] = {"bpd_iw": bpd}
    return row


def test_pairs_only_common_seeds_and_reports_mean_std_and_each_pair(monkeypatch):
    ablation = _ablation(monkeypatch)
    rows = {"vae_f": [_row(0, 300.0, 4.5), _row(1, 240.0, 4.4), _row(2, 325.0, 4.6)],
            "cqf": [_row(0, 306.0 - 34.0, 4.5), _row(2, 295.0, 4.56), _row(5, 1.0, 1.0)]}
    line = ablation.paired_differences(rows, "vae_f", "cqf", [
        ("samples_t0", "fid", 1, "FID T=0"), ("bpd", "bpd_iw", 3, "IW")])
    diffs = [272.0 - 300.0, 295.0 - 325.0]
    assert "seeds 0, 2" in line and "seed 5" not in line
    assert (f"FID T=0 {statistics.mean(diffs):.1f} ± {statistics.stdev(diffs):.1f} "
            "(-28.0, -30.0)") in line
    assert "IW -0.020 ± 0.028 (+0.000, -0.040)" in line


def test_a_column_missing_from_a_row_is_left_out_and_one_pair_is_not_enough(monkeypatch):
    ablation = _ablation(monkeypatch)
    rows = {"vae_f": [_row(0, 300.0), _row(1, 240.0, 4.4)],
            "cqf": [_row(0, 290.0, 4.5), _row(1, 230.0, 4.3)]}
    line = ablation.paired_differences(rows, "vae_f", "cqf", [
        ("samples_t0", "fid", 1, "FID T=0"), ("bpd", "bpd_iw", 3, "IW")])
    assert "FID T=0 -10.0 ± 0.0" in line and "IW" not in line
    assert ablation.paired_differences({"vae_f": rows["vae_f"][:1], "cqf": rows["cqf"]},
                                       "vae_f", "cqf", [("samples_t0", "fid", 1, "F")]) is None


def test_the_runs_are_seeds_of_every_variant_then_more_then_extra(monkeypatch):
    import argparse

    import pytest

    monkeypatch.syspath_prepend(os.path.join(ROOT, "experiments"))
    sys.modules.pop("ablation_runs", None)
    import ablation_runs

    args = argparse.Namespace(variants="vae,vae_f,cq", seeds="0", more_seeds="1,2",
                              more_seeds_variants="vae_f", extra_seeds="vae=1;cq=2,0")
    assert ablation_runs.jobs_of(args) == [("vae", 0), ("vae", 1), ("vae_f", 0), ("vae_f", 1),
                                           ("vae_f", 2), ("cq", 0), ("cq", 2)]
    args.extra_seeds = "vae=one"
    with pytest.raises(SystemExit, match="--extra_seeds"):
        ablation_runs.jobs_of(args)
