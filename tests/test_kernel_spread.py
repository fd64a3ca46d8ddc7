"""experiments/kernel_spread.py's table: every profile's numbers, mean +- std (n - 1) and
max - min per column, from the quickstarts' results files."""
from __future__ import annotations

import json
import os
import statistics
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spread(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "experiments"))
    sys.modules.pop("kernel_spread", None)
    import kernel_spread
    return kernel_spread


def _results(work_root, profile, iw, fid0, recall=None):
    os.makedirs(work_root / profile)
    t0 = {"fid": fid0, **({} if recall is None else {"recall": recall})}
    with open(work_root / profile / "quickstart_results.json", "w") as f:
        json.dump({"bpd": {"bpd": iw + 0.05, "bpd_iw": iw}, "samples_t0": t0,
                   "latent": {"active_units": 32}, "minutes": 12.5}, f)


def test_table_has_each_profile_and_the_spread(monkeypatch, tmp_path):
    ks = _spread(monkeypatch)
    _results(tmp_path, "default", 1.690, 3.88, recall=0.9)
    _results(tmp_path, "sse41", 1.707, 4.24)
    _results(tmp_path, "eigen", 1.701, 4.01, recall=0.8)
    text, data = ks.table(["default", "sse41", "eigen"], str(tmp_path))
    lines = text.splitlines()
    assert lines[0].startswith("| profile | IW-8 bits/dim |")
    assert lines[2].startswith("| default | 1.690 | 1.740 | 32 | 3.88 | n/a |")
    summary = data["summary"]
    assert summary["IW-8 bits/dim"]["std"] == pytest.approx(
        statistics.stdev([1.690, 1.707, 1.701]))
    assert summary["FID T=0"]["range"] == pytest.approx(4.24 - 3.88)
    assert summary["recall T=0"]["n"] == 2  # a missing number is left out, not zero
    assert "FID T=1" not in summary  # nobody had it
    assert lines[-2].startswith("| mean +- std | 1.699 +- 0.009 |")
    assert lines[-1].startswith("| max - min | 0.017 |")


def test_existing_results_are_not_rerun(monkeypatch, tmp_path, capsys):
    ks = _spread(monkeypatch)
    _results(tmp_path, "default", 1.690, 3.88)
    assert ks.launch("default", str(tmp_path), []) is None
    assert "skipped" in capsys.readouterr().out
