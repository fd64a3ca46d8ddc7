"""Fault injection (issue 26 items 1, 4 and 8): checkpoints. A missing, truncated or
corrupt newest checkpoint falls back to the newest one that loads (train, evaluate,
export) and says which; no loadable checkpoint is one error and nothing is overwritten; a
lost state file still resumes; a checkpoint of another variant is one error line.

Every test uses checkpoints written by the real trainer and fails on the code before the
fix."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from artifacts import model_io
from pipeline import trainer
from tfp_models.hybrid import HybridConfig

from conftest import TINY, TINY_SHAPE, tiny_train_config


# --------------------------------------------------------------------------------------
# Checkpoints: a missing, truncated or corrupt newest checkpoint falls back to the newest
# one that loads; no valid checkpoint is overwritten or ignored.
# --------------------------------------------------------------------------------------
def _model_cfg() -> HybridConfig:
    return HybridConfig(variant="vae", image_shape=TINY_SHAPE, **TINY)


@pytest.fixture(scope="module")
def trained4(digits16, tmp_path_factory, tracking_uri) -> str:
    """A tiny vae trained 4 steps with a checkpoint every 2: ckpt-2 and ckpt-4."""
    model_dir = tmp_path_factory.mktemp("faults") / "trained4"
    trainer.train(_model_cfg(), tiny_train_config(digits16, model_dir, tracking_uri,
                                                  train_steps=4, checkpoint_every=2))
    assert {p for p in os.listdir(model_dir) if p.startswith("ckpt-")} >= {
        "ckpt-2.index", "ckpt-4.index"}
    return str(model_dir)


def _copy(trained: str, tmp_path) -> str:
    target = str(tmp_path / "model")
    shutil.copytree(trained, target)
    return target


def _digest(model_dir: str, name: str) -> dict[str, str]:
    """sha256 of each file of checkpoint ``name``."""
    return {f: hashlib.sha256(open(os.path.join(model_dir, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(model_dir)) if f.startswith(name + ".")}


def _truncate(model_dir: str, name: str) -> None:
    path = os.path.join(model_dir, f"{name}.data-00000-of-00001")
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(raw[:len(raw) // 2])


def _flip_bytes(model_dir: str, name: str) -> None:
    """Flips one byte in each eighth of the data file (so the model's weights are hit, not
    only optimizer slots, which evaluation and export do not read)."""
    path = os.path.join(model_dir, f"{name}.data-00000-of-00001")
    raw = bytearray(open(path, "rb").read())
    for k in range(1, 8):
        raw[k * len(raw) // 8] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(raw))


def _warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_missing_newest_checkpoint_resumes_from_the_previous_one(
        trained4, digits16, tmp_path, tracking_uri, caplog):
    """The issue's repro: ckpt-4 deleted, a run to step 6 resumes at 2 (not 0), says so in
    one line, and ckpt-2 is never rewritten."""
    model_dir = _copy(trained4, tmp_path)
    for name in os.listdir(model_dir):
        if name.startswith("ckpt-4."):
            os.remove(os.path.join(model_dir, name))
    before = _digest(model_dir, "ckpt-2")
    with caplog.at_level(logging.INFO):
        summary = trainer.train(_model_cfg(), tiny_train_config(
            digits16, model_dir, tracking_uri, train_steps=6, checkpoint_every=2))
    assert summary["start_step"] == 2 and summary["step"] == 6
    lines = _warnings(caplog, "resumed from")
    assert len(lines) == 1 and "ckpt-2 at step 2" in lines[0] and "ckpt-4" in lines[0], lines
    assert "missing" in lines[0]
    assert _digest(model_dir, "ckpt-2") == before  # the valid checkpoint is untouched
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-6")
    state = tf.train.get_checkpoint_state(model_dir)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-2", "ckpt-4", "ckpt-6"]


@pytest.mark.parametrize("damage", [_truncate, _flip_bytes], ids=["truncated", "bit_flips"])
def test_damaged_newest_checkpoint_falls_back_for_evaluate_and_export(
        damage, trained4, tmp_path, caplog):
    """A truncated or bit-flipped ckpt-4: loading for evaluation and export
    (load_trained_model, which both call) gives ckpt-2's weights with one warning."""
    model_dir = _copy(trained4, tmp_path)
    damage(model_dir, "ckpt-4")
    with caplog.at_level(logging.INFO):
        model, step = model_io.load_trained_model(model_dir)
    assert step == 2
    lines = _warnings(caplog, "do not load")
    assert len(lines) == 1 and "ckpt-2" in lines[0] and "ckpt-4" in lines[0], lines
    # the model holds exactly ckpt-2's weights, not a mix with the damaged file's
    reference, _ = model_io.load_trained_model(model_dir, os.path.join(model_dir, "ckpt-2"))
    assert len(model.variables) == len(reference.variables) > 10
    for held, want in zip(model.variables, reference.variables):
        np.testing.assert_array_equal(held.numpy(), want.numpy(), err_msg=held.path)


def test_truncated_newest_checkpoint_falls_back_in_training(
        trained4, digits16, tmp_path, tracking_uri, caplog):
    """Training over a truncated ckpt-4 resumes at ckpt-2 (one warning), keeps ckpt-2 as it
    was and writes a whole new ckpt-4."""
    model_dir = _copy(trained4, tmp_path)
    _truncate(model_dir, "ckpt-4")
    before = _digest(model_dir, "ckpt-2")
    with caplog.at_level(logging.INFO):
        summary = trainer.train(_model_cfg(), tiny_train_config(
            digits16, model_dir, tracking_uri, train_steps=6, checkpoint_every=2))
    assert summary["start_step"] == 2 and summary["step"] == 6
    lines = _warnings(caplog, "resumed from")
    assert len(lines) == 1 and "ckpt-4 (IndexError" in lines[0], lines
    assert _digest(model_dir, "ckpt-2") == before
    tf.train.load_checkpoint(os.path.join(model_dir, "ckpt-4")).get_tensor(
        "step/.ATTRIBUTES/VARIABLE_VALUE")  # readable again
    assert model_io.load_trained_model(model_dir)[1] == 6


def test_no_loadable_checkpoint_is_one_error_and_nothing_is_overwritten(
        trained4, digits16, tmp_path, tracking_uri):
    model_dir = _copy(trained4, tmp_path)
    _truncate(model_dir, "ckpt-4")
    _truncate(model_dir, "ckpt-2")
    files = {**_digest(model_dir, "ckpt-2"), **_digest(model_dir, "ckpt-4")}
    with pytest.raises(model_io.CheckpointUnreadable, match="no checkpoint in .* loads: ckpt-4"):
        model_io.load_trained_model(model_dir)
    with pytest.raises(model_io.CheckpointUnreadable, match="ckpt-4 .*ckpt-2 "):
        trainer.train(_model_cfg(), tiny_train_config(digits16, model_dir, tracking_uri,
                                                      train_steps=6, checkpoint_every=2))
    assert {**_digest(model_dir, "ckpt-2"), **_digest(model_dir, "ckpt-4")} == files


def test_lost_state_file_still_resumes_from_the_checkpoint_files(trained4, tmp_path):
    """A model directory whose `checkpoint` state file was deleted or garbled still
    resumes from its newest ckpt-<step> files (never silently from step 0)."""
    model_dir = _copy(trained4, tmp_path)
    os.remove(os.path.join(model_dir, "checkpoint"))
    assert model_io.load_trained_model(model_dir)[1] == 4
    with open(os.path.join(model_dir, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-4\n garbage {{{')
    assert model_io.load_trained_model(model_dir)[1] == 4


def _other_variant_dir(trained: str, tmp_path) -> str:
    """A model directory whose model_config.json says 'flow' but whose checkpoints are the
    tiny vae's (e.g. ckpt files copied in from another run)."""
    model_dir = _copy(trained, tmp_path)
    path = os.path.join(model_dir, model_io.CONFIG_FILE)
    payload = json.load(open(path))
    payload["model"]["variant"] = "flow"
    json.dump(payload, open(path, "w"))
    return model_dir


def test_a_checkpoint_of_another_variant_is_one_error_in_evaluate_and_export(
        trained4, tmp_path, capsys):
    """Before: an AssertionError traceback carrying 12-17 KB of variable names (load for
    evaluation, export)."""
    from artifacts import cli
    from serving import export

    model_dir = _other_variant_dir(trained4, tmp_path)
    with pytest.raises(model_io.CheckpointMismatch) as info:
        model_io.load_trained_model(model_dir)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    assert "ckpt-4" in message and "'flow' model" in message, message
    for prog, run in (
            ("python -m pipeline.evaluate", lambda: model_io.load_trained_model(model_dir)),
            ("python -m serving.export", lambda: export.export_model(
                model_dir, str(tmp_path / "export"), "m", log_to_mlflow=False))):
        with pytest.raises(SystemExit):
            cli.user_errors(prog)(run)()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"{prog}: error: checkpoint ckpt-4"), err
    assert not os.path.exists(tmp_path / "export" / "m" / "1")
