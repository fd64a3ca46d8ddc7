"""The training step's default compile choice (pipeline.train_step): by device type, and on
CPUs by the vector ISA and the run's length, as benchmarks/bench_step_speed.py measured."""
from __future__ import annotations

import tensorflow as tf

from artifacts import machine_info
from pipeline import train_step
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
