"""Fault injection (issue 26): what a damaged disk, a deleted or truncated checkpoint, a
lock race, an unwritable output or a store created by two processes at once must not cost.

Every test uses the real components (checkpoints written by the trainer, real processes,
a real MLflow SQLite store, the real Beam job) and fails on the code before the fix."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from artifacts import model_io
from pipeline import trainer
from tfp_models.hybrid import HybridConfig

from conftest import TINY, TINY_SHAPE, tiny_train_config

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# --------------------------------------------------------------------------------------
# The model-directory lock: processes racing to take over a stale lock; exactly one wins.
# --------------------------------------------------------------------------------------
_RACER = """
import os, sys
from pipeline.model_lock import ModelDirLock, ModelDirInUse
print(os.getpid(), flush=True)
while True:
    line = sys.stdin.readline().split()
    if not line or line[0] == "quit":
        break
    lock = ModelDirLock(line[1])
    try:
        lock.acquire()
        print("held", flush=True)
        held = True
    except ModelDirInUse as err:
        print("refused " + str(err).replace(chr(10), " "), flush=True)
        held = False
    sys.stdin.readline()  # release
    if held:
        lock.release()
    print("released", flush=True)
"""
STALE_PID = 999999


def _stale_lock(model_dir) -> None:
    model_dir.mkdir()
    (model_dir / "trainer.lock").write_text(json.dumps(
        {"pid": STALE_PID, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}))


@pytest.mark.parametrize("racers,trials", [(6, 200)])
def test_racing_takeovers_of_a_stale_lock_give_one_holder(tmp_path, racers, trials):
    """``racers`` processes take over the same stale lock (its pid is dead) at once,
    ``trials`` times: every time exactly one holds it and the others are refused with the
    one-line message naming the holder's pid. (Before flock: two holders in 2 of 30.)"""
    from pipeline.model_lock import _pid_running

    assert not _pid_running(STALE_PID)
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", _RACER], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1)
             for _ in range(racers)]
    started = time.time()
    try:
        pids = [int(p.stdout.readline()) for p in procs]
        doubles = []
        for trial in range(trials):
            model_dir = tmp_path / f"m{trial}"
            _stale_lock(model_dir)
            for p in procs:  # as close to "at once" as separate processes get
                p.stdin.write(f"go {model_dir}\n")
                p.stdin.flush()
            answers = [p.stdout.readline().strip() for p in procs]
            holders = [pid for pid, a in zip(pids, answers) if a == "held"]
            refused = [a for a in answers if a.startswith("refused ")]
            assert len(holders) + len(refused) == racers, answers
            if len(holders) != 1:
                doubles.append((trial, holders))
            else:
                for answer in refused:
                    assert (f"in use by another trainer: pid {holders[0]} on host "
                            f"'{socket.gethostname()}'" in answer and "which is running" in answer
                            ), answer
                held = json.loads((model_dir / "trainer.lock").read_text())
                assert held["pid"] == holders[0], held
            for p in procs:
                p.stdin.write("release\n")
                p.stdin.flush()
            assert [p.stdout.readline().strip() for p in procs] == ["released"] * racers
            assert not (model_dir / "trainer.lock").exists()
        assert not doubles, f"{len(doubles)} of {trials} trials had no or two holders: {doubles[:5]}"
    finally:
        for p in procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"{trials} races of {racers} processes in {time.time() - started:.1f} s")


# --------------------------------------------------------------------------------------
# beam_jobs.fid outputs: written whole or not at all; the results are never lost.
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fid_inputs(tmp_path_factory, mnist_dir) -> tuple[str, str]:
    """(an untrained MNIST-architecture extractor, a folder of 40 real MNIST digits)."""
    from PIL import Image

    from beam_jobs.fid import extractors
    from beam_jobs.sources.mnist_idx import load_mnist

    root = tmp_path_factory.mktemp("fid")
    _, features_model = extractors.build_mnist_classifier(feature_dim=32, seed=1)
    extractor = extractors.export_mnist_classifier(features_model, str(root / "extractor"))
    images, _ = load_mnist(str(mnist_dir))
    folder = root / "digits"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(images[i]).save(folder / f"{i:02d}.png")
    return extractor, str(folder)


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
def small_disk(tmp_path):
    """A 64 KiB tmpfs (a disk that fills up), unmounted afterwards; skipped where this
    process may not mount file systems."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot mount a small tmpfs to fill up: {err}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def _fill(disk) -> None:
    """Fills ``disk`` up with the file 'filler'."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)


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


# --------------------------------------------------------------------------------------
# MLflow: trainers started at the same moment against a new SQLite store.
# --------------------------------------------------------------------------------------
_STARTER = """
import os, sys, time
from artifacts import tracking
import mlflow
uri, model_dir, go = sys.argv[1:4]
open(model_dir + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
tracking.configure(uri, model_dir)
with tracking.tracked_run(model_dir, "faults-race") as run_id:
    mlflow.log_metric("train/loss", 1.0, step=1)
print(run_id)
"""


@pytest.mark.slow
def test_trainers_starting_together_on_a_new_sqlite_store_both_track(tmp_path):
    """Two pairs of processes, each pair released at the same instant onto its own new
    sqlite file (what two `pipeline.train` runs do at start: configure, then tracked_run).
    Before: one of a pair crashed with `table experiments already exists` or an alembic
    migration error (3 of 3 pairs), and a new file could be left half migrated."""
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    env.pop("MLFLOW_TRACKING_URI", None)
    go = tmp_path / "go"
    pairs = []
    for p in range(2):
        uri = f"sqlite:///{tmp_path / f'store{p}' / 'mlflow.db'}"
        (tmp_path / f"store{p}").mkdir()
        procs = [subprocess.Popen(
            [sys.executable, "-c", _STARTER, uri, str(tmp_path / f"m{p}{i}"), str(go)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        pairs.append((uri, procs))
    deadline = time.time() + 240
    while len(list(tmp_path.glob("*.ready"))) < 4:
        assert time.time() < deadline, "the processes did not start within 240 s"
        assert all(p.poll() is None for _, procs in pairs for p in procs)
        time.sleep(0.05)
    go.touch()  # all four at once
    from mlflow.tracking import MlflowClient

    for uri, procs in pairs:
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err[-3000:]
        run_ids = [out.strip().splitlines()[-1] for out, _ in outs]
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("faults-race")
        runs = client.search_runs([experiment.experiment_id])
        assert sorted(r.info.run_id for r in runs) == sorted(run_ids) and len(set(run_ids)) == 2
        assert all(r.info.status == "FINISHED" and r.data.metrics["train/loss"] == 1.0
                   for r in runs)
