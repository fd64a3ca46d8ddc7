"""Preemption: SIGTERM / SIGINT during training stop the real CLI at a step boundary with a
checkpoint of the last completed step, the MLflow run KILLED and exit code 128 + signum;
resuming after any number of such stops gives the weights of an uninterrupted run."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from artifacts import model_io

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 60  # room for the progress bar lagging a few steps behind the signal


def _cmd(data_dir, model_dir, uri) -> list[str]:
    return [sys.executable, "-m", "pipeline.train", f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", f"--mlflow_tracking_uri={uri}", "--variant=cqf",
            f"--train_steps={TOTAL_STEPS}", "--batch_size=16", "--checkpoint_every=5",
            "--log_every=3", "--sample_every=1000", "--latent_dim=4", "--enc_dec_channels=4",
            "--flow_hidden=8", "--flow_scales=1", "--disc_channels=4", "--num_grid_samples=4",
            "--data_init_batch=32", "--seed=5", "--show_progress"]


class _Progress:
    """Follows the tqdm bar on a child's stderr: the number of completed steps and the time
    each count was first seen."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self.text = proc, {}, []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = ""
        while True:
            chunk = self.proc.stderr.read1(4096) if hasattr(self.proc.stderr, "read1") else b""
            if not chunk:
                return
            buf += chunk.decode(errors="replace")
            self.text.append(chunk.decode(errors="replace"))
            for match in re.finditer(rf"(\d+)/{TOTAL_STEPS}\b", buf):
                self.seen.setdefault(int(match.group(1)), time.time())
            buf = buf[-200:]

    @property
    def step(self) -> int:
        return max(self.seen, default=-1)

    def stderr(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.text)


def _run_until_signal(cmd, env, cwd, signum, after_steps, fraction) -> tuple[int, int, str]:
    """Starts a training run, waits until ``after_steps`` more steps have completed, then
    sleeps ``fraction`` of a measured step time (so the signal lands inside a step) and
    sends ``signum``. Returns (exit code, completed steps seen before the signal, stderr)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    progress = _Progress(proc)
    try:
        deadline = time.time() + 300
        first = None
        while time.time() < deadline:
            assert proc.poll() is None, progress.stderr()[-3000:]
            if first is None and progress.step >= 0:
                first = progress.step  # the bar's initial count: the resumed step
            if first is not None and progress.step >= first + after_steps:
                break
            time.sleep(0.01)
        else:
            pytest.fail("no training progress within 300 s")
        now = progress.step
        step_time = (progress.seen[now] - progress.seen[now - 1]) if now - 1 in progress.seen else 0.1
        time.sleep(fraction * step_time)
        seen = progress.step
        proc.send_signal(signum)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, seen, progress.stderr()


def _state(model_dir) -> tuple[int, list[np.ndarray], dict[str, int]]:
    model, step = model_io.load_trained_model(str(model_dir))
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
    iterations = {k: int(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()
                  if k.endswith("_optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")
                  or "_optimizer/_iterations" in k}
    return step, [v.numpy() for v in model.variables], iterations


@pytest.mark.slow
def test_signals_inside_steps_then_resume_equal_an_uninterrupted_run(digits16, tmp_path,
                                                                       tracking_uri):
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    straight = tmp_path / "straight"
    done = subprocess.run(_cmd(digits16, straight, tracking_uri), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    chain = tmp_path / "chain"
    # (signal, steps to let complete first, fraction of a step to wait): early in a step,
    # mid-step, late in a step; SIGINT is Ctrl-C.
    moments = [(signal.SIGTERM, 2, 0.0), (signal.SIGINT, 3, 0.5), (signal.SIGTERM, 4, 0.85)]
    last = 0
    for signum, after, fraction in moments:
        code, seen, stderr = _run_until_signal(_cmd(digits16, chain, tracking_uri), env, tmp_path,
                                               signum, after, fraction)
        assert code == 128 + signum, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        saved = int(tf.train.latest_checkpoint(str(chain)).rsplit("-", 1)[1])
        assert seen <= saved < TOTAL_STEPS, (seen, saved)  # no completed step lost
        assert saved > last
        last = saved
        run = MlflowClient().get_run((chain / "mlflow_run_id").read_text())
        assert run.info.status == "KILLED"
        step, _, iterations = _state(chain)
        assert step == saved  # the label is the step the weights hold
        assert iterations and all(n == saved for n in iterations.values()), iterations

    done = subprocess.run(_cmd(digits16, chain, tracking_uri), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert MlflowClient().get_run((chain / "mlflow_run_id").read_text()).info.status == "FINISHED"
    step_a, w_a, it_a = _state(straight)
    step_b, w_b, it_b = _state(chain)
    assert step_a == step_b == TOTAL_STEPS and it_a == it_b
    for a, b in zip(w_a, w_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
