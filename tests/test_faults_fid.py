"""Fault injection (issue 26 item 7) in ``python -m beam_jobs.fid``: a read-only or full
disk where the pipeline writes its results (``--temp_location``) and Ctrl-C are one line
(exit 2 or 130, no traceback, Beam's logged tracebacks dropped), the run's temporary
files are deleted and an existing ``--output_stats`` file is left byte for byte. The
disks are real tmpfs mounts (the tests may run as root, for whom chmod does not stop
writes). Item 3 in process: ``--output_stats`` is written whole or not at all (an
unwritable path or a full disk keeps the old file) and the results are never lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_faults_preprocess import _fill, mount_tmpfs  # noqa: F401 (a fixture)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "python -m beam_jobs.fid"


def _extractor_and_digits(root, mnist_dir, n: int, feature_dim: int, seed: int
                          ) -> tuple[str, str]:
    """(an untrained MNIST-architecture extractor, a folder of ``n`` real MNIST digits)
    under ``root``."""
    from PIL import Image

    from beam_jobs.fid import extractors
    from beam_jobs.sources.mnist_idx import load_mnist

    _, model = extractors.build_mnist_classifier(feature_dim=feature_dim, seed=seed)
    extractor = extractors.export_mnist_classifier(model, str(root / "extractor"))
    (root / "digits").mkdir()
    for i, image in enumerate(load_mnist(str(mnist_dir))[0][:n]):
        Image.fromarray(image).save(root / "digits" / f"{i:02d}.png")
    return extractor, str(root / "digits")


@pytest.fixture(scope="module")
def extractor_and_digits(tmp_path_factory, mnist_dir) -> tuple[str, str]:
    """(an untrained MNIST-architecture extractor, a folder of 60 real MNIST digits)."""
    return _extractor_and_digits(tmp_path_factory.mktemp("fid_faults"), mnist_dir, 60, 16, 2)


@pytest.fixture
def old_stats(tmp_path) -> tuple[str, bytes]:
    """An existing --output_stats file (path, bytes)."""
    from beam_jobs.fid.fid_math import FeatureStatistics

    path = tmp_path / "stats" / "ref.npz"
    path.parent.mkdir()
    FeatureStatistics.from_features(np.random.default_rng(0).normal(size=(30, 2)),
                                    extractor="mnist_classifier").save(str(path))
    return str(path), path.read_bytes()


def _fid(inputs: tuple[str, str], *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    env.pop("AD_TRACEBACK", None)
    extractor, digits = inputs
    return subprocess.Popen(
        [sys.executable, "-m", "beam_jobs.fid", f"--image_folder={digits}",
         "--extractor=mnist_classifier", f"--extractor_path={extractor}", "--kid_samples=20",
         *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_line(err: str) -> str:
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if f"{PROG}: " in ln or "error" in ln.lower()]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("options,reason", [
    ("ro,size=64k", "Read-only file system"), ("size=64k", "No space left on device")],
    ids=["read_only", "full_disk"])
def test_a_read_only_or_full_temp_location_is_one_line(extractor_and_digits, mount_tmpfs,
                                                       old_stats, options, reason):
    """Before: Beam's logged traceback and 2-3 chained ones (RuntimeError: OSError ...
    [while running 'WriteShapes']), exit 1. Now one line naming the results folder, exit
    2, the run's files deleted, --output_stats unchanged."""
    disk = mount_tmpfs(options)
    if "ro" not in options:
        os.mkdir(disk / "t")
        _fill(disk)
    proc = _fid(extractor_and_digits, f"--temp_location={disk}/t",
                f"--output_stats={old_stats[0]}")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 2, err[-3000:]
    line = _one_line(err)
    assert line.startswith(f"{PROG}: error: the FID pipeline writing its results to "
                           f"'{disk}/t/fid-run-"), line
    assert f"' failed: {reason}" in line, line
    assert line.endswith("its temporary results were deleted"), line
    assert out.strip() == ""
    assert sorted(os.listdir(disk)) == ([] if "ro" in options else ["filler", "t"])
    assert "ro" in options or os.listdir(disk / "t") == []
    with open(old_stats[0], "rb") as f:
        assert f.read() == old_stats[1]


def test_ctrl_c_is_one_line_and_leaves_no_partial_output(extractor_and_digits, tmp_path,
                                                         old_stats):
    """SIGINT while the pipeline runs (the extractor is being loaded): exit 130, one line,
    no KeyboardInterrupt traceback; the run's results folder is deleted and --output_stats
    unchanged, with no temporary file beside it. Before: 'RuntimeError: KeyboardInterrupt
    [while running 'Features/Infer']' with its traceback, exit 1."""
    temp = tmp_path / "temp"
    temp.mkdir()
    proc = _fid(extractor_and_digits, f"--temp_location={temp}",
                f"--output_stats={old_stats[0]}")
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "loading SavedModel" in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    err = "".join(seen) + err
    assert proc.returncode == 130, err[-3000:]
    assert _one_line(err) == (f"{PROG}: interrupted; the run's temporary results were "
                              "deleted; --output_stats, if given, is written whole or not "
                              "at all")
    assert out.strip() == ""
    assert os.listdir(temp) == []
    assert os.listdir(os.path.dirname(old_stats[0])) == ["ref.npz"]
    with open(old_stats[0], "rb") as f:
        assert f.read() == old_stats[1]


def test_beam_s_reports_of_a_disk_error_are_recognized_and_dropped():
    """Beam re-raises an OSError as text ('RuntimeError: OSError: [Errno 30] ...') and
    logs it with a traceback: the reason keeps the path, and the filter drops Beam's
    record but keeps the project's own warnings."""
    import logging

    from artifacts import fs_errors

    err = RuntimeError("OSError: [Errno 30] Read-only file system: '/x/t' [while running "
                       "'WriteShapes']")
    assert fs_errors.disk_error_reason(err) == "Read-only file system (/x/t)"
    assert fs_errors.disk_error_reason(RuntimeError("No space left on device")) == (
        "No space left on device")

    def record(name: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, str(err), None,
                                 (RuntimeError, err, None))

    drop = fs_errors._DropFailureRecords()
    assert not drop.filter(record("apache_beam.runners.common"))
    assert drop.filter(record("artifacts.tracking"))
    assert drop.filter(record("artifacts.run_tracker"))
    assert drop.filter(record("artifacts.store_creation"))


# --------------------------------------------------------------------------------------
# beam_jobs.fid outputs: written whole or not at all; the results are never lost.
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fid_inputs(tmp_path_factory, mnist_dir) -> tuple[str, str]:
    """(an untrained MNIST-architecture extractor, a folder of 40 real MNIST digits)."""
    return _extractor_and_digits(tmp_path_factory.mktemp("fid"), mnist_dir, 40, 32, 1)


def _fid_main(capsys, fid_inputs, *extra: str) -> tuple[int, dict | None, list[str]]:
    """``beam_jobs.fid.main`` in process on the 40 digits: (exit code, the printed results
    or None, the ``error:`` lines of stderr)."""
    from beam_jobs import fid

    extractor, folder = fid_inputs
    capsys.readouterr()
    code = fid.main([f"--image_folder={folder}", "--extractor=mnist_classifier",
                     f"--extractor_path={extractor}", "--kid_samples=20", *extra])
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert "Traceback" not in err, err
    return (code, json.loads(lines[-1]) if lines else None,
            [ln for ln in err.splitlines() if ln.startswith("error: ")])


def test_unwritable_output_stats_is_one_error_and_the_results_are_printed(
        capsys, fid_inputs, tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    target = tmp_path / "a_file" / "stats.npz"
    code, results, errors = _fid_main(capsys, fid_inputs, f"--output_stats={target}")
    assert code == 2
    assert len(errors) == 1 and str(target) in errors[0] and "not written" in errors[0], errors
    assert results is not None and results["num_samples"] == 40, results
    assert results["is_mean"] > 0 and results["feature_dim"] == 32
    assert not list(tmp_path.glob("**/.stats.npz.tmp-*"))


@pytest.fixture
def small_disk(mount_tmpfs):
    """A 64 KiB tmpfs (a disk that fills up); skipped where mounting is not allowed."""
    return mount_tmpfs("size=64k")


def test_full_disk_keeps_the_old_statistics_and_prints_the_results(capsys, fid_inputs, small_disk):
    """--output_stats over a good statistics file on a disk that fills up during the write:
    the old file is left whole and readable (before: truncated, BadZipFile), no temporary
    file is left, one error line, and the computed results are printed."""
    from beam_jobs.fid.fid_math import FeatureStatistics

    target = small_disk / "ref.npz"
    old = FeatureStatistics.from_features(np.random.default_rng(0).normal(size=(50, 2)),
                                          extractor="mnist_classifier")
    old.save(str(target))
    before = target.read_bytes()
    _fill(small_disk)
    code, results, errors = _fid_main(capsys, fid_inputs, f"--output_stats={target}",
                                      "--save_kid_features")
    assert code == 2
    assert len(errors) == 1 and "No space left on device" in errors[0], errors
    assert results is not None and results["num_samples"] == 40, results
    assert target.read_bytes() == before
    assert FeatureStatistics.load(str(target)).count == 50
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "ref.npz"]
    # with room again, the same run replaces the file whole
    (small_disk / "filler").unlink()
    code, again, errors = _fid_main(capsys, fid_inputs, f"--output_stats={target}",
                                    "--save_kid_features")
    assert code == 0 and not errors
    assert FeatureStatistics.load(str(target)).count == 40
    assert again["is_mean"] == pytest.approx(results["is_mean"])
    assert sorted(p.name for p in small_disk.iterdir()) == ["ref.npz"]
