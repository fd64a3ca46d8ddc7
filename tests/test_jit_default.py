"""The training step's default compile choice (pipeline.train_step): by device type, and on
CPUs by the vector ISA and the run's length, as benchmarks/bench_step_speed.py measured."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from artifacts import machine_info
from pipeline import train_step
from pipeline.quickstart import PROJECT_ROOT
from pipeline.train_step import JIT_MIN_TRAIN_STEPS, cpu_default_jit_compile


def test_cpu_rule_by_isa_and_run_length():
    avx2, avx512 = ["avx", "avx2", "fma"], ["avx", "avx2", "fma", "avx512f"]
    assert cpu_default_jit_compile(JIT_MIN_TRAIN_STEPS, avx2) is True
    assert cpu_default_jit_compile(None, avx2) is True  # unknown length: a long run
    assert cpu_default_jit_compile(JIT_MIN_TRAIN_STEPS - 1, avx2) is False  # compile not repaid
    assert cpu_default_jit_compile(100_000, avx512) is False  # oneDNN faster with AVX-512
    assert cpu_default_jit_compile(4, []) is False


def test_the_strategy_default_uses_this_cpu(monkeypatch):
    strategy = tf.distribute.get_strategy()
    if tf.config.list_logical_devices("GPU"):
        assert train_step.default_jit_compile(strategy, 10) is True
        return
    here = machine_info.cpu_isa()
    assert train_step.default_jit_compile(strategy, 10) is False
    assert train_step.default_jit_compile(strategy, 5000) is ("avx512f" not in here)
    monkeypatch.setattr(machine_info, "cpu_isa", lambda: ["avx2", "avx512f"])
    assert train_step.default_jit_compile(strategy, 5000) is False
    monkeypatch.setattr(machine_info, "cpu_isa", lambda: ["avx2"])
    assert train_step.default_jit_compile(strategy, 5000) is True


def test_cpu_isa_reads_the_flags_of_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU\nflags\t\t: fpu sse avx avx2 fma avx512f\n")
    real = machine_info._cpuinfo
    monkeypatch.setattr(machine_info, "_cpuinfo", lambda path=str(info): real(path))
    assert machine_info.cpu_isa() == ["avx", "avx2", "fma", "avx512f"]


def test_the_run_records_the_choice_it_made(digits16, tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    from artifacts import tracking

    from conftest import train_tiny

    model_dir = train_tiny(digits16, tmp_path / "run", tracking_uri, "vae")  # 4 steps: short
    params = MlflowClient(tracking_uri).get_run(tracking.run_id_of(model_dir)).data.params
    assert params["jit_compile_used"] == "False"
    assert params["jit_compile"] == "None"  # not given: the default chose


def test_thread_pools_one_thread_per_op_without_xla_and_tf_defaults_with_it():
    assert train_step.cpu_thread_pools(False, 2) == (1, 2)
    assert train_step.cpu_thread_pools(False, 0) == (1, 1)
    assert train_step.cpu_thread_pools(True, 2) == (0, 0)


_SET_POOLS = """
import json, sys
from pipeline import train
from pipeline.train_config import TrainConfig
import tensorflow as tf
cfg = TrainConfig(data_dir="d", model_dir="m", jit_compile=sys.argv[1] == "xla")
got = train.set_thread_pools(cfg)
pools = [tf.config.threading.get_intra_op_parallelism_threads(),
         tf.config.threading.get_inter_op_parallelism_threads()]
tf.constant(1)  # TensorFlow starts: other pools cannot be set now
other = TrainConfig(data_dir="d", model_dir="m", jit_compile=sys.argv[1] != "xla")
print(json.dumps([got, *pools, train.set_thread_pools(other)]))
"""


@pytest.mark.parametrize("jit,env,expected", [
    ("plain", {}, [[1, "cpus"], 1, "cpus", None]),  # after TF started: nothing changes
    ("xla", {}, [[0, 0], 0, 0, None]),
    ("plain", {"TF_NUM_INTRAOP_THREADS": "2"}, [None, 0, 0, None]),  # the user's choice wins
])
def test_pipeline_train_sets_the_pools_before_tensorflow_starts(jit, env, expected):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the pools are set on machines without GPUs")
    cpus = len(os.sched_getaffinity(0))
    full = dict(os.environ, PYTHONPATH=PROJECT_ROOT, **env)
    for name in train_step.THREAD_ENV_VARS:
        if name not in env:
            full.pop(name, None)
    done = subprocess.run([sys.executable, "-c", _SET_POOLS, jit], capture_output=True,
                          text=True, env=full, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    want = json.loads(json.dumps(expected).replace('"cpus"', str(cpus)))
    assert json.loads(done.stdout.strip().splitlines()[-1]) == want
