"""Hostile inputs: oversized archive members and files are bad records, decompression bombs
do not stop the FID job, export names cannot escape the export directory, and a second
trainer cannot share a model directory."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from beam_jobs import fid
from beam_jobs.fid import extractors
from beam_jobs.preprocess import run_preprocess
from pipeline import model_lock, trainer
from serving import export
from tfp_models.hybrid import HybridConfig

from conftest import TINY, TINY_SHAPE, tiny_train_config

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_MEMORY = ["--direct_running_mode=in_memory"]


def _png(rng, side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (9e8 > 2 * PIL's
    MAX_IMAGE_PIXELS): PIL raises DecompressionBombError when it opens it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_zip_members_over_the_cap_are_bad_records(tmp_path):
    """A 65 MiB member (zeros, ~65 KB compressed) is refused by its declared size at the
    default 64 MiB cap; with --max_member_bytes=2000 a 12 KB PNG is a bad record too."""
    rng = np.random.default_rng(0)
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            zf.writestr(f"small{i}.png", _png(rng, 8))
        zf.writestr("large.png", _png(rng, 64))
        zf.writestr("bomb.png", b"\0" * (65 << 20))
    info = run_preprocess("image_zip", str(path), str(tmp_path / "default"), 8,
                          pipeline_args=IN_MEMORY)
    reasons = {r["key"]: r["reason"] for r in info["bad_records"]}
    assert list(reasons) == ["bomb.png"]
    assert reasons["bomb.png"] == (f"zip member of {65 << 20} bytes exceeds "
                                   f"--max_member_bytes={64 << 20}")
    assert info["source"]["max_member_bytes"] == 64 << 20
    info = run_preprocess("image_zip", str(path), str(tmp_path / "capped"), 8,
                          pipeline_args=IN_MEMORY, max_member_bytes=2000)
    assert sorted(r["key"] for r in info["bad_records"]) == ["bomb.png", "large.png"]
    assert info["splits"]["train"]["count"] == 4


def test_folder_files_over_the_cap_are_bad_records(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "small.png").write_bytes(_png(rng, 8))
    (root / "large.png").write_bytes(_png(rng, 64))
    info = run_preprocess("image_folder", str(root), str(tmp_path / "out"), 8,
                          pipeline_args=IN_MEMORY, max_member_bytes=2000)
    (bad,) = info["bad_records"]
    assert bad["key"] == "large.png" and "exceeds --max_member_bytes=2000" in bad["reason"]


def test_cli_flag_max_member_bytes(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "small.png").write_bytes(_png(rng, 8))
    (root / "large.png").write_bytes(_png(rng, 64))
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "beam_jobs.preprocess", "--source=image_folder",
         f"--input={root}", f"--output_dir={tmp_path / 'out'}", "--image_size=8",
         "--max_member_bytes=2000", "--direct_running_mode=in_memory"],
        capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 bad records" in result.stdout


@pytest.fixture(scope="module")
def extractor_dir(tmp_path_factory) -> str:
    _, features_model = extractors.build_mnist_classifier(feature_dim=16, seed=1)
    return extractors.export_mnist_classifier(
        features_model, str(tmp_path_factory.mktemp("ext") / "mnist_classifier"))


def test_fid_folder_skips_decompression_bombs_and_oversized_files(tmp_path, extractor_dir):
    rng = np.random.default_rng(3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "bomb.png").write_bytes(_bomb_png())
    with pytest.raises(Image.DecompressionBombError):  # the file is a real bomb for PIL
        Image.open(folder / "bomb.png")
    (folder / "huge.png").write_bytes(_png(rng, 64))
    info = extractors.resolve_extractor("mnist_classifier", extractor_dir)
    res = fid.run_features(fid.ImageFolderSource(str(folder), max_member_bytes=4000), info,
                           kid_samples=0)
    assert res.statistics.count == 3 and res.undecodable == 2


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "a\\b", "/abs", ".hidden", "a..b",
                                  "", "nämé"])
def test_export_refuses_names_that_are_not_plain(name, tmp_path):
    with pytest.raises(ValueError, match="plain name"):
        export.export_model(str(tmp_path / "no_model"), str(tmp_path / "ex"), name,
                            log_to_mlflow=False)
    assert not (tmp_path / "ex").exists()


def test_export_accepts_plain_names():
    for name in ("cqf", "mnist_cqf.v2", "A-1"):
        export.check_model_name(name)


def test_is_chief_from_tf_config():
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert model_lock.is_chief("")
    assert model_lock.is_chief(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert not model_lock.is_chief(json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": 1}}))
    with_chief = {**cluster, "chief": ["127.0.0.1:3"]}
    assert not model_lock.is_chief(json.dumps({"cluster": with_chief,
                                               "task": {"type": "worker", "index": 0}}))
    assert model_lock.is_chief(json.dumps({"cluster": with_chief, "task": {"type": "chief", "index": 0}}))


_HOLD = ("import sys, time; from pipeline.model_lock import ModelDirLock\n"
         "with ModelDirLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)\n")


def test_a_second_trainer_is_refused_and_a_stale_lock_taken_over(digits16, tmp_path, tracking_uri):
    model_dir = tmp_path / "m"
    model_cfg = HybridConfig(variant="vae", image_shape=TINY_SHAPE, **TINY)
    cfg = tiny_train_config(digits16, model_dir, tracking_uri, train_steps=1)
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(model_dir)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(model_lock.ModelDirInUse,
                           match=rf"in use by another trainer: pid {holder.pid} on host "
                                 rf"'{socket.gethostname()}'.*which is running"):
            trainer.train(model_cfg, cfg)
        assert not (model_dir / "model_config.json").exists()  # nothing touched
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: a stale lock
        holder.wait()
    assert json.loads((model_dir / "trainer.lock").read_text())["pid"] == holder.pid
    summary = trainer.train(model_cfg, cfg)
    assert summary["step"] == 1
    assert not (model_dir / "trainer.lock").exists()  # released at the end
    # A lock from another host cannot be checked here: refused, with the way out named.
    (model_dir / "trainer.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere-42"}))
    with pytest.raises(model_lock.ModelDirInUse, match="cannot be checked from this host.*delete"):
        trainer.train(model_cfg, tiny_train_config(digits16, model_dir, tracking_uri, train_steps=2))
