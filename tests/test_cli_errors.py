"""Every CLI answers a user error (missing directory, wrong flag, mismatched model settings)
with one clear line on stderr and a non-zero exit code, never a Python traceback."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import train_tiny

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def extractor(tmp_path_factory) -> str:
    from beam_jobs.fid import extractors

    _, features_model = extractors.build_mnist_classifier(feature_dim=16, seed=1)
    return extractors.export_mnist_classifier(
        features_model, str(tmp_path_factory.mktemp("ext") / "mnist_classifier"))


@pytest.fixture(scope="module")
def tiny_model(digits16, tmp_path_factory, tracking_uri) -> str:
    return train_tiny(digits16, str(tmp_path_factory.mktemp("cli") / "model"), tracking_uri,
                      "vae", train_steps=1)


def _cases(data: str, model: str, missing: str, extractor: str = "e") -> dict[str, tuple[list[str], str]]:
    """name -> (command after `python -m`, text the error line must contain)."""
    train = ["pipeline.train", f"--data_dir={data}", f"--model_dir={model}", "--variant=vae",
             "--noshow_progress", "--train_steps=2"]
    return {
        "train_missing_data": (["pipeline.train", f"--data_dir={missing}",
                                f"--model_dir={missing}_m"], "does not exist"),
        "train_mismatched_settings": (train + ["--latent_dim=5"], "different settings"),
        "train_bad_value": (train + ["--checkpoint_every=0"], "--checkpoint_every=0"),
        "train_batch_too_large": (["pipeline.train", f"--data_dir={data}",
                                   f"--model_dir={missing}_b", "--batch_size=100000"], "exceeds"),
        "train_unknown_flag": (train + ["--no_such_flag=1"], "no_such_flag"),
        "evaluate_missing_model": (["pipeline.evaluate", f"--model_dir={missing}"],
                                   "not a model directory"),
        "export_missing_model": (["serving.export", f"--model_dir={missing}",
                                  f"--export_dir={missing}_ex", "--model_name=m", "--nomlflow"],
                                 "not a model directory"),
        "export_bad_name": (["serving.export", f"--model_dir={model}", f"--export_dir={missing}_ex",
                             "--model_name=..", "--nomlflow"], "plain name"),
        "fid_missing_data": (["beam_jobs.fid", f"--data_dir={missing}",
                              f"--extractor_path={extractor}"], "does not exist"),
        "fid_missing_folder": (["beam_jobs.fid", f"--image_folder={missing}",
                                f"--extractor_path={extractor}"], "does not exist"),
        "preprocess_missing_input": (["beam_jobs.preprocess", "--source=image_folder",
                                      f"--input={missing}", f"--output_dir={missing}_out",
                                      "--image_size=8"], "does not exist"),
        "client_missing_export": (["serving.client", "--target=local", f"--address={missing}",
                                   "sample", "--n=2", f"--out={missing}.png"],
                                  "not an export version directory"),
        "client_bad_target": (["serving.client", "--target=ftp", "score", "x.png"],
                              "invalid choice"),
    }


# Each case is a ~10 s subprocess: one per CLI runs by default, the rest with the slow tests.
FAST = {"train_mismatched_settings", "train_missing_data", "evaluate_missing_model",
        "export_bad_name", "fid_missing_data", "preprocess_missing_input", "client_missing_export"}
CASES = [c if c in FAST else pytest.param(c, marks=pytest.mark.slow)
         for c in sorted(_cases("d", "m", "x"))]


@pytest.mark.parametrize("case", CASES)
def test_user_errors_are_one_line_without_traceback(case, digits16, tiny_model, extractor,
                                                     tmp_path):
    command, expected = _cases(digits16, tiny_model, str(tmp_path / "missing"), extractor)[case]
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("AD_TRACEBACK", None)
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [ln for ln in result.stderr.splitlines()
              if re.search(r"(^|: )error: |Flags parsing error", ln)]
    assert errors and expected in errors[0], result.stderr[-3000:]
    assert len([ln for ln in errors if expected in ln]) == 1, result.stderr[-3000:]
