"""Fault injection (issue 26 item 10): inputs that could be made huge or meaningless are
refused in one line before any work (client image pixels, ``sample --n``, a NaN learning
rate), and ``pipeline.evaluate`` of a model without likelihood says why there is no
bits/dim."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib

import pytest

from pipeline import train_config
from serving import client_cli

from conftest import train_tiny

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _png_header_only(path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height grey pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side,expected", [
    (30000, "refused, Image size (900000000 pixels) exceeds limit"),
    (5000, "5000x5000 = 25000000 pixels, over the limit of 16777216")],
    ids=["pil_bomb", "over_max_pixels"])
def test_client_refuses_huge_images_in_one_line(tmp_path, capsys, side, expected):
    """Before: a DecompressionBombError traceback (30000^2), or a 25-megapixel decode and
    an upload (5000^2). Refused before any connection is made (no server here)."""
    path = tmp_path / "big.png"
    _png_header_only(path, side, side)
    code = client_cli.main(["--target=rest", "--address=127.0.0.1:9", "--model_name=m",
                            "score", str(path)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and expected in err[0], err


def test_client_sample_n_has_an_upper_limit(tmp_path, capsys):
    """Before: n = 1,000,000 ran past 90 s (100,000 took 1.4 GB)."""
    start = time.monotonic()
    code = client_cli.main(["--target=rest", "--address=127.0.0.1:9", "--model_name=m",
                            "sample", "--n=1000000", f"--out={tmp_path / 'g.png'}"])
    assert code == 1 and time.monotonic() - start < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --n=1000000: expected 1 to {client_cli.MAX_SAMPLES} samples (one "
                   "grid; draw more with several calls and --seed)"]


@pytest.mark.parametrize("name", ["learning_rate", "disc_learning_rate", "flow_learning_rate",
                                  "adam_beta1"])
def test_a_nan_learning_rate_is_refused_at_config_validation(name):
    """Before: refused only after ~40 s of compiling, leaving a FAILED MLflow run."""
    with pytest.raises(ValueError, match=f"--{name}=nan: expected a finite number"):
        train_config.TrainConfig(data_dir="d", model_dir="m", **{name: float("nan")})


@pytest.mark.slow
def test_evaluate_of_a_gan_with_data_dir_says_why_there_is_no_bpd(digits16, tmp_path,
                                                                  tracking_uri):
    """Before: the report had no bits/dim and no reason."""
    model_dir = train_tiny(digits16, tmp_path / "gan", tracking_uri, "gan", train_steps=2)
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", f"--model_dir={model_dir}",
         f"--data_dir={digits16}", f"--mlflow_tracking_uri={tracking_uri}"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert "bpd" not in report and "no likelihood" in report["bpd_note"], report
    assert "'gan' defines no likelihood" in done.stderr
