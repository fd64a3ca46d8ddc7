"""Machine info (artifacts.machine_info): its fields, and the machine.* params every
training run logs to MLflow."""
from __future__ import annotations

import os
import platform

import tensorflow as tf
from mlflow.tracking import MlflowClient

from artifacts import machine_info
from pipeline import trainer
from tfp_models.hybrid import HybridConfig

from conftest import TINY, TINY_SHAPE, tiny_train_config


def test_machine_info_fields_and_types(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")  # caps oneDNN's kernels: recorded
    info = machine_info.machine_info()
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert isinstance(info["cpu_isa"], str)
    assert set(filter(None, info["cpu_isa"].split(","))) <= set(machine_info.ISA_FLAGS)
    assert info["logical_cpus"] == os.cpu_count()
    assert isinstance(info["schedulable_cpus"], int) and 1 <= info["schedulable_cpus"] <= os.cpu_count()
    # TensorFlow is imported here: its thread settings (0 = its default) and determinism
    assert info["intra_op_threads"] == tf.config.threading.get_intra_op_parallelism_threads()
    assert info["inter_op_threads"] == tf.config.threading.get_inter_op_parallelism_threads()
    assert info["op_determinism"] is False
    assert info["tensorflow"] == tf.__version__
    assert info["tensorflow_probability"].count(".") >= 1 and info["keras"].count(".") >= 1
    assert info["python"] == platform.python_version()
    assert info["env.TF_ENABLE_ONEDNN_OPTS"] == "0" and info["env.OMP_NUM_THREADS"] == "unset"
    assert info["env.ONEDNN_MAX_CPU_ISA"] == "SSE41"
    for value in info.values():
        assert value is None or isinstance(value, (str, int, bool))


def test_cpuinfo_parsing(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU\n"
                       "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n\n"
                       "processor\t: 1\nmodel name\t: other\n")
    assert machine_info._cpuinfo(str(cpuinfo)) == (
        "Intel(R) Xeon(R) Platinum 8375C CPU", ["avx", "avx2", "fma", "avx512f", "avx512_vnni"])
    assert machine_info._cpuinfo(str(tmp_path / "missing")) == ("", [])


def test_params_round_trip_and_one_line():
    info = machine_info.machine_info()
    params = machine_info.as_params(info)
    assert all(k.startswith("machine.") and isinstance(v, str) for k, v in params.items())
    back = machine_info.from_params({**params, "variant": "cqf", "seed": "0"})
    assert back == {k: str(v) for k, v in info.items()}
    line = machine_info.describe(info)
    assert line == machine_info.describe(back)  # the same line from a run's params
    assert info["cpu_model"] in line and f"TF {info['tensorflow']}" in line
    assert f"{info['logical_cpus']} logical CPUs" in line
    assert machine_info.from_params({"variant": "cqf"}) == {}


def test_train_logs_the_machine_to_mlflow(digits16, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_train_config(digits16, tmp_path / "model", uri, train_steps=2)
    summary = trainer.train(HybridConfig(variant="vae", image_shape=TINY_SHAPE, **TINY), cfg)
    params = MlflowClient(tracking_uri=uri).get_run(summary["mlflow_run_id"]).data.params
    logged = machine_info.from_params(params)
    expected = machine_info.machine_info()
    assert set(logged) == set(expected)
    for key in ("cpu_model", "cpu_isa", "logical_cpus", "tensorflow", "keras",
                "tensorflow_probability", "intra_op_threads", "env.TF_ENABLE_ONEDNN_OPTS"):
        assert logged[key] == str(expected[key]), key
    assert logged["op_determinism"] == "False"
    # what the ablation scripts read back for a row's run
    assert machine_info.of_mlflow_run(summary["mlflow_run_id"], uri) == logged
    assert machine_info.of_mlflow_run(None, uri) == {}
    assert machine_info.of_mlflow_run("no-such-run", uri) == {}


def test_results_files_name_this_machine_and_the_training_machine(tmp_path, monkeypatch):
    """The quickstart's results files and the ablation scripts' machine line."""
    import json
    import sys

    from pipeline import quickstart

    here = machine_info.machine_info()
    other = {**machine_info.as_params(here), "machine.cpu_model": "Other CPU 9000"}
    other = machine_info.from_params(other)
    assert machine_info.describe_trained({}, here).startswith("not recorded")
    assert machine_info.describe_trained(machine_info.from_params(
        machine_info.as_params(here)), here) == "this machine (op determinism False)"
    assert machine_info.describe_trained(other, here).startswith("Other CPU 9000")

    json_path, md_path = quickstart.write_results(str(tmp_path / "qs"), {
        "finished": "2026-12-06 12:00:00", "command": "python -m pipeline.quickstart",
        "train_command": "python -m pipeline.train --flagfile=configs/quickstart.cfg",
        "machine": here, "train_run_machine": other, "mlflow_run_id": "abc", "step": 3000,
        "bpd": {"bpd_iw": 1.7071, "importance_samples": 8}, "samples_t0": {"fid": 4.24},
        "samples_t1": {}})
    with open(json_path) as f:
        assert json.load(f)["machine"]["cpu_model"] == here["cpu_model"]
    md = open(md_path).read()
    assert "IW-8 bound 1.707 bits/dim, FID T=0 4.24" in md
    assert f"this quickstart ran on {machine_info.describe(here)}" in md
    assert "trained on: Other CPU 9000" in md

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "experiments"))
    sys.modules.pop("ablation_report", None)
    import ablation_report

    line = ablation_report.machine_line({"vae_f": [{"seed": 0, "machine": other}, {"seed": 1}],
                                         "cqf": [{"seed": 0, "machine": machine_info.from_params(
                                             machine_info.as_params(here))}]}, here)
    assert line.startswith(f"Machine: this file was written on {machine_info.describe(here)}.")
    assert "Other CPU 9000" in line and ": vae_f s0" in line
    assert "not recorded (the run logged no machine.* params): vae_f s1" in line
    assert "this machine (op determinism False): cqf s0" in line
