"""The measured side of experiments/paper_scale_flops.py: the real trainer
(``python -m pipeline.train``) run for a few steps at one batch size, its peak RSS, CPU
and wall time, seconds per step and the load average.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ELAPSED = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")


def measure_trainer(flagfile: str, data_dir: str, batch_size: int, steps: int,
                    work: str) -> dict:
    """Runs ``python -m pipeline.train`` for ``steps`` steps at ``batch_size``; returns its
    peak RSS (MB), CPU seconds, wall seconds, seconds per step after the first (progress
    bar elapsed times, 1 s resolution) and the 1-minute load averages seen."""
    model_dir = os.path.join(work, f"batch{batch_size}")
    cmd = [sys.executable, "-m", "pipeline.train", f"--flagfile={flagfile}",
           f"--data_dir={data_dir}", f"--model_dir={model_dir}", f"--train_steps={steps}",
           f"--checkpoint_every={steps}", "--validation_every=0", "--sample_every=1000",
           f"--mlflow_tracking_uri=sqlite:///{os.path.join(work, 'mlflow.db')}",
           f"--batch_size={batch_size}", f"--data_init_batch={batch_size}",
           "--num_grid_samples=16"]
    log_path = os.path.join(work, f"batch{batch_size}.log")
    loads, start = [os.getloadavg()[0]], time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(5)
            loads.append(os.getloadavg()[0])
    wall = time.time() - start
    with open(log_path) as f:
        text = f.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log_path}:\n{text[-3000:]}")
    elapsed = {}
    for m in _ELAPSED.finditer(text):
        elapsed[int(m.group(1))] = (int(m.group(3) or 0) * 3600 + int(m.group(4)) * 60
                                    + int(m.group(5)))
    per_step = ((elapsed[steps] - elapsed[1]) / (steps - 1)
                if steps > 1 and 1 in elapsed and steps in elapsed else float("nan"))
    return {"batch": batch_size, "rss_mb": usage.ru_maxrss / 1024.0,
            "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "first_step_s": elapsed.get(1, float("nan")), "s_per_step": per_step,
            "load_min": min(loads), "load_max": max(loads), "cmd": " ".join(cmd)}
