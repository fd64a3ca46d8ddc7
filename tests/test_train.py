"""pipeline.train: every variant trains, resumes exactly, survives kills, tracks to MLflow,
agrees across 1 and 2 replicas, and rejects bad input before training."""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from artifacts import model_io
from pipeline import trainer
from tfp_models.hybrid import VARIANTS, HybridConfig

from conftest import TINY, TINY_SHAPE, tiny_train_config

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def _cfgs(data_dir, model_dir, uri, variant="cqf", **train_kw):
    return (HybridConfig(variant=variant, image_shape=TINY_SHAPE, **TINY),
            tiny_train_config(data_dir, model_dir, uri, **train_kw))


def _weights(model_dir):
    model, step = model_io.load_trained_model(str(model_dir))
    return step, [v.numpy() for v in model.variables]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_and_logs(variant, digits16, tmp_path, tracking_uri):
    model_cfg, cfg = _cfgs(digits16, tmp_path / variant, tracking_uri, variant, train_steps=3)
    summary = trainer.train(model_cfg, cfg)
    assert summary["step"] == 3 and summary["checkpoint"].endswith("ckpt-3")
    assert all(np.isfinite(v) for v in summary["metrics"].values())
    assert ("bpd" in summary["metrics"]) == VARIANTS[variant].has_likelihood
    assert ("d_loss" in summary["metrics"]) == bool(VARIANTS[variant].adversarial)
    assert os.path.isfile(summary["grid"])
    run = MlflowClient().get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["variant"] == variant and run.data.params["batch_size"] == "8"
    assert "train/loss" in run.data.metrics
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert {"samples", "checkpoint", "model_config.json"} <= artifacts


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(digits16, tmp_path, tracking_uri):
    straight = tmp_path / "straight"
    trainer.train(*_cfgs(digits16, straight, tracking_uri, train_steps=6))
    split = tmp_path / "split"
    first = trainer.train(*_cfgs(digits16, split, tracking_uri, train_steps=4))
    second = trainer.train(*_cfgs(digits16, split, tracking_uri, train_steps=6))
    assert first["step"] == 4 and second["start_step"] == 4 and second["step"] == 6
    assert first["mlflow_run_id"] == second["mlflow_run_id"]  # the same MLflow run continues
    step_a, w_a = _weights(straight)
    step_b, w_b = _weights(split)
    assert step_a == step_b == 6
    for a, b in zip(w_a, w_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # two trainings (~35 s); the fast suite keeps near 10 min
def test_two_replicas_match_one_replica(digits16, tmp_path, tracking_uri):
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest sets 2 logical CPUs"
    one = tmp_path / "one"
    two = tmp_path / "two"
    trainer.train(*_cfgs(digits16, one, tracking_uri, train_steps=3, strategy="default"))
    trainer.train(*_cfgs(digits16, two, tracking_uri, train_steps=3, strategy="mirrored",
                         devices=("/cpu:0", "/cpu:1")))
    _, w1 = _weights(one)
    _, w2 = _weights(two)
    moved = 0
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
        moved += 1
    assert moved > 10


def test_divergence_stops_with_a_clear_error_and_keeps_the_checkpoint(digits16, tmp_path,
                                                                      tracking_uri):
    model_cfg, cfg = _cfgs(digits16, tmp_path / "nan", tracking_uri, variant="vae",
                           train_steps=50, checkpoint_every=1, learning_rate=1e12)
    with pytest.raises(trainer.TrainingDiverged, match=r"at step \d+.*last good checkpoint") as err:
        trainer.train(model_cfg, cfg)
    good = tf.train.latest_checkpoint(cfg.model_dir)
    if good is not None:  # every kept checkpoint holds finite weights
        _, weights = _weights(cfg.model_dir)
        assert all(np.all(np.isfinite(w)) for w in weights)
    run_id = open(os.path.join(cfg.model_dir, "mlflow_run_id")).read()
    assert MlflowClient().get_run(run_id).info.status == "FAILED", str(err.value)


def _train_cmd(data_dir, model_dir, uri, steps, extra=()):
    return [sys.executable, "-m", "pipeline.train", f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", f"--mlflow_tracking_uri={uri}", "--variant=vae_f",
            f"--train_steps={steps}", "--batch_size=8", "--checkpoint_every=5", "--log_every=5",
            "--latent_dim=4", "--enc_dec_channels=4", "--flow_hidden=4", "--flow_scales=1",
            "--num_grid_samples=4", "--data_init_batch=32", "--noshow_progress", *extra]


def _start_training(data_dir, model_dir, uri, env, tmp_path, extra=()):
    """Starts a long CLI run in the background; its stderr goes to a file (an undrained pipe
    fills with per-checkpoint log lines and blocks the child). Returns (process, that file)."""
    stderr = tmp_path / f"{model_dir.name}.stderr"
    with open(stderr, "w") as sink:
        proc = subprocess.Popen(_train_cmd(data_dir, model_dir, uri, 100000, extra), env=env,
                                stdout=subprocess.DEVNULL, stderr=sink, cwd=tmp_path)
    return proc, stderr


def _latest_step(model_dir) -> int:
    """The highest step among the checkpoint files now in `model_dir` (-1 if none)."""
    steps = [int(m.group(1)) for p in model_dir.glob("ckpt-*.index")
             if (m := re.fullmatch(r"ckpt-(\d+)\.index", p.name))]
    return max(steps, default=-1)


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(digits16, tmp_path, tracking_uri):
    model_dir = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc, stderr = _start_training(digits16, model_dir, tracking_uri, env, tmp_path)
    try:
        # Checkpoints rotate (a few are kept), so wait for any step >= 10, not for ckpt-10.
        deadline = time.time() + 240
        while time.time() < deadline and _latest_step(model_dir) < 10:
            assert proc.poll() is None, stderr.read_text()[-3000:]
            time.sleep(0.2)
        assert _latest_step(model_dir) >= 10, "no checkpoint at step >= 10 within 240 s"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])
    assert saved >= 10
    result = subprocess.run(_train_cmd(digits16, model_dir, tracking_uri, saved + 5), env=env,
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'"start_step": {saved}' in result.stdout
    assert f'"step": {saved + 5}' in result.stdout
    run = MlflowClient().get_run(open(model_dir / "mlflow_run_id").read())
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_sigterm_marks_the_run_killed_and_checkpoints(digits16, tmp_path, tracking_uri):
    model_dir = tmp_path / "terminated"
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc, stderr = _start_training(digits16, model_dir, tracking_uri, env, tmp_path,
                                   ["--checkpoint_every=1000"])
    deadline = time.time() + 300
    run_file = model_dir / "mlflow_run_id"
    # Wait until steps are done (metrics logged at --log_every=5; the first step compiles).
    while time.time() < deadline:
        assert proc.poll() is None, stderr.read_text()[-3000:]
        if run_file.exists() and "train/loss" in MlflowClient().get_run(
                run_file.read_text()).data.metrics:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the run logged no training metrics within 300 s")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert tf.train.latest_checkpoint(str(model_dir)) is not None
    run = MlflowClient().get_run(run_file.read_text())
    assert run.info.status == "KILLED"


def test_bad_inputs_fail_before_training(digits16, tmp_path, tracking_uri):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trainer.train(*_cfgs(str(tmp_path / "nope"), tmp_path / "m", tracking_uri))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        trainer.train(*_cfgs(str(empty), tmp_path / "m", tracking_uri))
    with pytest.raises(ValueError, match="unknown variant"):
        HybridConfig(variant="vq_vae")
    # A model directory trained at 16x16 refuses a data set cropped to 12x12.
    model_dir = tmp_path / "m16"
    trainer.train(*_cfgs(digits16, model_dir, tracking_uri, train_steps=1))
    with pytest.raises(ValueError, match=r"\(12, 12, 1\).*\(16, 16, 1\)"):
        trainer.train(*_cfgs(digits16, model_dir, tracking_uri, train_steps=2,
                             resize_with_crop_or_pad=12))
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-1")  # untouched
    # 16 px cannot be squeezed by a 6-scale flow.
    model_cfg, cfg = _cfgs(digits16, tmp_path / "m6", tracking_uri)
    with pytest.raises(ValueError, match="divisible by 32"):
        trainer.train(dataclasses.replace(model_cfg, flow_scales=6), cfg)
    with pytest.raises(ValueError, match="divisible by 32"):  # the data's shape is checked too
        trainer.train(dataclasses.replace(model_cfg, image_shape=(32, 32, 1), flow_scales=6), cfg)
    assert not os.path.exists(tmp_path / "m6" / "mlflow_run_id")


def test_cli_rejects_unknown_variant(digits16, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.train", f"--data_dir={digits16}",
         f"--model_dir={tmp_path / 'm'}", "--variant=wgan_vae"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert result.returncode != 0
    assert "variant" in result.stderr and "cqf" in result.stderr


@pytest.mark.slow  # two trainings (~40 s)
def test_flow_warmup_keeps_the_flow_fixed_then_trains_it(digits16, tmp_path, tracking_uri):
    """--flow_warmup_steps=2: after 2 steps the coupling nets equal their (data-initialized)
    start, the decoder has moved; after 4 steps the flow has moved too."""
    def flow_and_decoder(model_dir):
        model, _ = model_io.load_trained_model(str(model_dir))
        return ([v.numpy() for v in model.flow.trainable_variables],
                [v.numpy() for v in model.decoder.trainable_variables])

    runs = {}
    for steps in (2, 4):
        trainer.train(*_cfgs(digits16, tmp_path / "run", tracking_uri, "vae_f",
                             train_steps=steps, flow_warmup_steps=2))
        runs[steps] = flow_and_decoder(tmp_path / "run")
    # The coupling nets' output convs are zero-initialised: still zero after 2 warm-up steps
    # means no update reached the flow (any step would have moved them).
    flow2, dec2 = runs[2]
    flow4, dec4 = runs[4]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(flow2, flow4))
    zero_out = [w for w in flow2 if w.ndim == 4 and not np.any(w)]
    assert zero_out, "the coupling nets' zero-initialised output convs should still be zero"
    assert any(np.abs(d2 - d4).max() > 0 for d2, d4 in zip(dec2, dec4))


@pytest.mark.slow  # three trainings (~60 s)
def test_flow_learning_rate_gives_the_flow_its_own_optimizer(digits16, tmp_path, tracking_uri):
    """--flow_learning_rate: the flow's nets are updated by their own Adam (a tiny rate keeps
    them near their start while the decoder moves at --learning_rate); the optimizer is
    checkpointed, so a resumed run equals an uninterrupted one."""
    def weights(model_dir):
        model, _ = model_io.load_trained_model(str(model_dir))
        return ([v.numpy() for v in model.flow.trainable_variables],
                [v.numpy() for v in model.decoder.trainable_variables])

    kw = dict(flow_learning_rate=1e-9)
    trainer.train(*_cfgs(digits16, tmp_path / "a", tracking_uri, "vae_f", train_steps=1, **kw))
    flow1, dec1 = weights(tmp_path / "a")
    trainer.train(*_cfgs(digits16, tmp_path / "a", tracking_uri, "vae_f", train_steps=3, **kw))
    flow3, dec3 = weights(tmp_path / "a")
    assert max(np.abs(a - b).max() for a, b in zip(flow1, flow3)) < 1e-7
    assert max(np.abs(a - b).max() for a, b in zip(dec1, dec3)) > 1e-4
    trainer.train(*_cfgs(digits16, tmp_path / "b", tracking_uri, "vae_f", train_steps=3, **kw))
    flow_b, dec_b = weights(tmp_path / "b")
    for a, b in zip(flow3 + dec3, flow_b + dec_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="flow_learning_rate"):
        _cfgs(digits16, tmp_path / "c", tracking_uri, "vae_f", flow_learning_rate=-1.0)


def test_cosine_schedule_follows_the_formula(digits16, tmp_path, tracking_uri):
    """--lr_schedule=cosine: lr(k) = base * (1 + cos(pi k / T)) / 2 on the optimizer's own
    iterations; bad values are refused."""
    _, cfg = _cfgs(digits16, tmp_path / "x", tracking_uri, "vae_f", train_steps=10,
                   lr_schedule="cosine", learning_rate=2e-3)
    rate = trainer.generator_learning_rate(cfg, cfg.learning_rate)
    for k in (0, 3, 5, 10):
        assert float(rate(k)) == pytest.approx(2e-3 * (1 + np.cos(np.pi * k / 10)) / 2, rel=1e-5)
    _, constant = _cfgs(digits16, tmp_path / "x", tracking_uri, "vae_f")
    assert trainer.generator_learning_rate(constant, 1e-3) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfgs(digits16, tmp_path / "x", tracking_uri, "vae_f", lr_schedule="linear")
    with pytest.raises(ValueError, match="lr_decay_steps"):
        _cfgs(digits16, tmp_path / "x", tracking_uri, "vae_f", lr_decay_steps=-1)


@pytest.mark.slow
def test_cosine_schedule_resumes_exactly(digits16, tmp_path, tracking_uri):
    """A cosine run split in two (same --lr_decay_steps) equals an uninterrupted one: the
    schedule follows the checkpointed optimizer iterations."""
    kw = dict(lr_schedule="cosine", learning_rate=2e-3, lr_decay_steps=4)
    trainer.train(*_cfgs(digits16, tmp_path / "straight", tracking_uri, "vae_f", train_steps=4, **kw))
    trainer.train(*_cfgs(digits16, tmp_path / "split", tracking_uri, "vae_f", train_steps=2, **kw))
    trainer.train(*_cfgs(digits16, tmp_path / "split", tracking_uri, "vae_f", train_steps=4, **kw))
    _, w_a = _weights(tmp_path / "straight")
    _, w_b = _weights(tmp_path / "split")
    for a, b in zip(w_a, w_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
