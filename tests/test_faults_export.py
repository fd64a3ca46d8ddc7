"""Fault injection (issue 26 item 7) in ``python -m serving.export``: a read-only or full
disk and Ctrl-C are one line (exit 2 or 130, no traceback), the partial version directory
is removed (TF Serving never sees a version that is not whole) and the earlier versions
are left byte for byte. The disks are real: tmpfs mounts (read-only, or small and filled
up), since the tests may run as root, for whom a chmod-ed directory is still writable."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from test_faults_preprocess import _fill, mount_tmpfs  # noqa: F401 (a fixture)
from test_serving import write_untrained

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "python -m serving.export"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return write_untrained(str(tmp_path_factory.mktemp("export_faults") / "model"), "vae_f")


def _export(model_dir: str, export_dir, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    env.pop("AD_TRACEBACK", None)
    return subprocess.Popen(
        [sys.executable, "-m", "serving.export", f"--model_dir={model_dir}",
         f"--export_dir={export_dir}", "--model_name=m", "--nomlflow"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _earlier_version(export_dir) -> dict[str, str]:
    """A version 1 (stand-in files) and a models.config in ``export_dir``; returns their
    digests."""
    (export_dir / "m" / "1" / "variables").mkdir(parents=True)
    (export_dir / "m" / "1" / "saved_model.pb").write_bytes(b"version one")
    (export_dir / "m" / "1" / "variables" / "variables.index").write_bytes(b"index one")
    (export_dir / "models.config").write_text('model_config_list { config { name: "m" } }\n')
    return _digests(export_dir)


def _digests(root) -> dict[str, str]:
    return {os.path.relpath(os.path.join(d, n), root): hashlib.sha256(
        open(os.path.join(d, n), "rb").read()).hexdigest()
        for d, _, names in os.walk(root) for n in names}


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if f"{PROG}: " in ln or "error" in ln.lower()]
    assert len(errors) == 1, err[-3000:]
    return errors[0]


@pytest.mark.parametrize("full", [False, True], ids=["read_only", "full_disk"])
def test_a_read_only_or_full_export_disk_is_one_line_and_keeps_earlier_versions(
        model_dir, mount_tmpfs, full):
    """Before: a traceback (OSError EROFS from makedirs; ResourceExhaustedError from the
    SavedModel's variables write), exit 1. Now one line naming the version directory and
    the reason, exit 2; version 1 and models.config byte-identical, no .tmp-* directory."""
    disk = mount_tmpfs("size=4m")
    export_dir = disk / "exports"
    before = _earlier_version(export_dir)
    if full:
        _fill(disk)  # disk/filler, beside the export dir
        reason = "No space left on device"
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=30)
        reason = "Read-only file system"
    proc = _export(model_dir, export_dir)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 2, err[-3000:]
    line = _one_error_line(err)
    assert line.startswith(f"{PROG}: error: exporting version 2 of 'm' to "
                           f"'{export_dir}/m/2' failed: {reason}"), line
    assert line.endswith(f"nothing was added to '{export_dir}/m' (earlier versions are "
                         "untouched)"), line
    assert _digests(export_dir) == before
    assert sorted(os.listdir(export_dir / "m")) == ["1"]
    assert out.strip() == ""


def test_ctrl_c_during_the_savedmodel_write_is_one_line_and_leaves_no_version(
        model_dir, tmp_path):
    """SIGINT once the temporary version directory exists (the SavedModel is being
    written): exit 130, one line, no KeyboardInterrupt traceback; no .tmp-* and no version
    2 left, version 1 untouched. Before: a KeyboardInterrupt traceback, exit -2."""
    export_dir = tmp_path / "exports"
    before = _earlier_version(export_dir)
    proc = _export(model_dir, export_dir)
    deadline = time.time() + 600
    while not list((export_dir / "m").glob(".tmp-2-*")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "KeyboardInterrupt" not in err, err[-3000:]
    assert _one_error_line(err) == (f"{PROG}: interrupted; nothing was added to "
                                    f"'{export_dir}/m' (earlier versions are untouched)")
    assert sorted(os.listdir(export_dir / "m")) == ["1"]
    assert _digests(export_dir) == before


def test_a_version_is_readable_by_other_users(model_dir, tmp_path):
    """The version directory was mkdtemp's 0700: a TF Serving running as another user
    could not read it."""
    from serving import export

    version_dir = export.export_model(model_dir, str(tmp_path), "m", log_to_mlflow=False)
    assert os.stat(version_dir).st_mode & 0o777 == 0o755
