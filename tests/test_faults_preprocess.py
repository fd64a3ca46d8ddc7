"""Fault injection (issue 26 items 6, 7, 10) in ``beam_jobs.preprocess``: a full or
read-only disk and Ctrl-C are one line (no traceback), killed jobs' work folders are
cleaned up, symbolic links to missing files are listed as bad records, and ``--verify``
checks a written data set against its dataset.json; training on a disk that fills up
stops in one line and keeps its last checkpoint."""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from artifacts import dataset_format
from beam_jobs import preprocess

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "python -m beam_jobs.preprocess"
IN_MEMORY = ["--direct_running_mode=in_memory"]


def _images(folder, n: int, side: int = 24) -> str:
    rng = np.random.default_rng(0)
    (folder / "a").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
            folder / "a" / f"{i:04d}.png")
    return str(folder)


def _cli(*args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    env.pop("AD_TRACEBACK", None)
    return subprocess.Popen([sys.executable, "-m", "beam_jobs.preprocess", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(options) -> a fresh tmpfs directory mounted with ``options`` (e.g.
    'size=96k', 'ro'); unmounted afterwards; skipped where mounting is not allowed."""
    mounted = []

    def mount(options: str):
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(f"cannot mount a tmpfs: {err}")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): "
                        f"{done.stderr.strip()}")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


@pytest.mark.parametrize("options,reason", [
    ("size=96k", "No space left on device"), ("ro,size=96k", "Read-only file system")],
    ids=["full_disk", "read_only"])
def test_a_full_or_read_only_disk_is_one_line(tmp_path, mount_tmpfs, options, reason):
    """Before: 2 chained tracebacks per failed bundle on ENOSPC (20 with more workers), a
    traceback on a read-only file system. The work folder is removed."""
    images = _images(tmp_path / "in", 60)
    disk = mount_tmpfs(options)
    proc = _cli("--source=image_folder", f"--input={images}", f"--output_dir={disk}/out",
                "--image_size=24", *IN_MEMORY)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0].startswith(
        f"{PROG}: error: writing the data set {disk}/out failed: {reason}"), errors
    assert os.listdir(disk) == []  # no work folder, no partial data set


def test_ctrl_c_is_one_line_and_removes_the_work_folder(tmp_path):
    """SIGINT while the Beam job runs: exit 130, one line, no KeyboardInterrupt traceback,
    nothing in the output and no .work folder left."""
    images = _images(tmp_path / "in", 1500, side=64)
    out_dir = tmp_path / "out"
    proc = _cli("--source=image_folder", f"--input={images}", f"--output_dir={out_dir}",
                "--image_size=32", *IN_MEMORY)
    deadline = time.time() + 240
    while not list(tmp_path.glob(".out.work-*/parts")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(0.5)  # inside the pipeline
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (f"{PROG}: interrupted; nothing was committed to "
                                            f"{out_dir}")
    assert not list(tmp_path.glob(".out.work-*")) and not out_dir.exists()


def test_work_folders_of_killed_jobs_are_removed_on_the_next_run(tmp_path):
    """A killed job's folder (its owner pid is dead) and an old one without owner file are
    removed; a live job's folder is kept. Before: left behind forever."""
    images = _images(tmp_path / "in", 20)
    dead = tmp_path / ".out.work-0000deadbeef"
    live = tmp_path / ".out.work-00000000a11e"
    old = tmp_path / ".out.work-0000000000fd"
    for work, pid in ((dead, 999999), (live, os.getpid())):
        (work / "parts").mkdir(parents=True)
        (work / preprocess.OWNER_FILE).write_text(json.dumps(
            {"host": socket.gethostname(), "pid": pid}))
    (old / "parts").mkdir(parents=True)
    os.utime(old, (time.time() - 2 * preprocess.STALE_WORK_AGE_S,) * 2)
    preprocess.run_preprocess("image_folder", images, str(tmp_path / "out"), 24,
                              pipeline_args=IN_MEMORY)
    assert not dead.exists() and not old.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.glob(".out.work-*")) == [live.name]


def test_symlinks_to_missing_files_are_bad_records(tmp_path):
    """Before: omitted without a word (the folder listing skips them)."""
    images = _images(tmp_path / "in", 12)
    os.symlink(tmp_path / "nowhere.png", tmp_path / "in" / "a" / "gone.png")
    os.symlink(tmp_path / "in" / "a" / "0000.png", tmp_path / "in" / "a" / "alias.png")
    info = preprocess.run_preprocess("image_folder", images, str(tmp_path / "out"), 24,
                                     pipeline_args=IN_MEMORY)
    assert info["num_bad_records"] == 1
    assert info["bad_records"][0]["key"] == "a/gone.png"
    assert "symbolic link to a missing file" in info["bad_records"][0]["reason"]
    assert info["splits"]["train"]["count"] == 13  # the 12 images and the live link
    saved = dataset_format.read_dataset_json(str(tmp_path / "out"))
    assert saved["bad_records"] == info["bad_records"]


def test_verify_mode_checks_a_written_data_set(tmp_path, capsys):
    images = _images(tmp_path / "in", 20)
    out = tmp_path / "out"
    preprocess.run_preprocess("image_folder", images, str(out), 24, pipeline_args=IN_MEMORY)
    assert preprocess.main(["--verify", f"--output_dir={out}"]) == 0
    assert "verified" in capsys.readouterr().out
    shard = next(out.glob("train-*.tfrecord"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    shard.write_bytes(bytes(raw))
    with pytest.raises(SystemExit) as exit_info:  # user_errors: one line, exit code 2
        preprocess.main(["--verify", f"--output_dir={out}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{PROG}: error: shard {shard.name}"), err


# --------------------------------------------------------------------------------------
# Training on a disk that fills up: one line, the last checkpoint kept, no _temp left.
# --------------------------------------------------------------------------------------
def _fill(disk) -> None:
    """Fills ``disk`` up with the file 'filler'."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_disk_full_at_a_checkpoint_is_one_line_and_keeps_the_last_one(
        digits16, mount_tmpfs, capsys, tracking_uri):
    """The model dir's disk fills up after step 3: the save of ckpt-4 fails as one
    `error:` line naming the checkpoint, the disk and the kept ckpt-2; no ckpt-4_temp is
    left and ckpt-2 still loads. Before: a traceback and a ckpt-4_temp folder."""
    from artifacts import cli, model_io
    from pipeline import trainer
    from tfp_models.hybrid import HybridConfig

    from conftest import TINY, TINY_SHAPE, tiny_train_config

    disk = mount_tmpfs("size=8m")
    model_dir = disk / "m"

    def fill_after_3(step, values):
        if step == 3:
            _fill(disk)

    model_cfg = HybridConfig(variant="vae_f", image_shape=TINY_SHAPE, **TINY)
    cfg = tiny_train_config(digits16, model_dir, tracking_uri, train_steps=4)
    main = cli.user_errors("python -m pipeline.train")(
        lambda: trainer.train(model_cfg, cfg, on_step=fill_after_3))
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert "Traceback" not in err and len(errors) == 1, err[-3000:]
    assert errors[0].startswith("python -m pipeline.train: error: cannot write checkpoint "
                                f"ckpt-4 in '{model_dir}': No space left on device"), errors
    assert "ckpt-2, is kept" in errors[0], errors
    assert not list(model_dir.glob("ckpt-4_temp*"))
    os.remove(disk / "filler")
    assert model_io.load_trained_model(str(model_dir))[1] == 2
