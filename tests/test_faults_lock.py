"""Fault injection (issue 26 item 2): the model-directory lock. Processes racing to take
over a stale lock (its pid is dead): exactly one holds it, every time."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
