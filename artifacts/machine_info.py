"""What machine and software produced a number: CPU, threads, library versions, oneDNN.

Results that differ between machines (the same code and seed giving IW 1.690 here and
1.707 there) are usually explained by what :func:`machine_info` records: the CPU model and
its vector ISA (oneDNN picks other kernels, with other rounding, on AVX-512 than on AVX2),
the number of CPUs TensorFlow's thread pools split work over (the order of float sums in
a reduction depends on it), the TF/TFP/Keras versions, ``TF_ENABLE_ONEDNN_OPTS`` and
whether op determinism is on (``--deterministic``).

``pipeline.train`` logs it to MLflow as ``machine.<key>`` params of every run
(:func:`as_params`; a run resumed on another machine keeps the first machine's values and
gets ``param_override.machine.<key>`` tags with the new ones); the quickstart and the
ablation scripts write it into their results files (:func:`describe` for the one-line
Markdown form). :func:`from_params` reads it back from a run's params.
"""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any, Mapping

PREFIX = "machine."
# Vector extensions that change which oneDNN/Eigen kernels run (and so the rounding).
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "neon", "asimd", "sve")
# Environment variables that change TensorFlow's kernels or thread pools.
# ONEDNN_MAX_CPU_ISA caps oneDNN's vector ISA: SSE41 on an AVX2 machine moved the quickstart's
# FID by 1.7 (experiments/results/kernel_spread.md).
ENV_VARS = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS",
            "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_DETERMINISTIC_OPS",
            "CUDA_VISIBLE_DEVICES")


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(model name, ISA flags of :data:`ISA_FLAGS` present) of the first CPU in
    ``path``; ('', []) where the file is missing (not Linux)."""
    model, flags = "", set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, [f for f in ISA_FLAGS if f in flags]


def cpu_isa() -> list[str]:
    """The vector extensions of :data:`ISA_FLAGS` the first CPU has ([] where unknown)."""
    return _cpuinfo()[1]


def _version(module: str, distributions: tuple[str, ...]) -> str:
    """The version of ``module``: its ``__version__`` if it is imported already, else the
    first installed distribution of ``distributions`` ('' if none), so this never imports
    TensorFlow Probability or Keras just to name them."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _threads() -> tuple[int | None, int | None, bool | None]:
    """(intra-op threads, inter-op threads, op determinism) as TensorFlow is configured in
    this process (0 threads = TF's default: one per schedulable CPU); Nones if TensorFlow
    is not imported (it is not imported here for this)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "config"):
        return None, None, None
    from tensorflow.python.framework import config as tf_config

    return (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
            bool(tf_config.is_op_determinism_enabled()))


def machine_info() -> dict[str, Any]:
    """This machine and process, as flat JSON-able values:

    ``cpu_model`` (``/proc/cpuinfo``'s model name, else ``platform.processor()``),
    ``cpu_isa`` (the vector extensions of :data:`ISA_FLAGS` it has, comma-separated),
    ``logical_cpus`` (``os.cpu_count()``), ``schedulable_cpus`` (this process's CPU
    affinity: what TF's default thread pools use), ``intra_op_threads`` and
    ``inter_op_threads`` (TensorFlow's settings, 0 = its default; None before TF is
    imported), ``op_determinism`` (None before TF is imported), ``tensorflow``,
    ``tensorflow_probability``, ``keras``, ``python`` (versions), ``platform`` (OS and
    architecture; no host name: results files are committed), and ``env.<NAME>`` for each of :data:`ENV_VARS` (value, or
    'unset'; ``env.TF_ENABLE_ONEDNN_OPTS`` unset means oneDNN on, TF's x86 default)."""
    model, isa = _cpuinfo()
    intra, inter, determinism = _threads()
    try:
        schedulable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        schedulable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_isa": ",".join(isa),
        "logical_cpus": os.cpu_count(),
        "schedulable_cpus": schedulable,
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "op_determinism": determinism,
        "tensorflow": _version("tensorflow", ("tensorflow", "tensorflow-cpu", "tf-nightly")),
        "tensorflow_probability": _version("tensorflow_probability",
                                           ("tensorflow-probability", "tfp-nightly")),
        "keras": _version("keras", ("keras", "keras-nightly")),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in ENV_VARS:
        info[f"env.{name}"] = os.environ.get(name, "unset")
    return info


# What identifies the machine and software, not one process's settings.
MACHINE_KEYS = ("cpu_model", "cpu_isa", "logical_cpus", "schedulable_cpus", "tensorflow",
                "tensorflow_probability", "keras", "python", "platform",
                *(f"env.{name}" for name in ENV_VARS))


def same_machine(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two records (:func:`machine_info` or :func:`from_params`) name the same
    machine and software (:data:`MACHINE_KEYS`; thread settings and op determinism are a
    process's, not compared)."""
    return all(str(a.get(k)) == str(b.get(k)) for k in MACHINE_KEYS)


def as_params(info: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``info`` (default: :func:`machine_info`) as MLflow params ``machine.<key>``: str."""
    info = machine_info() if info is None else info
    return {f"{PREFIX}{k}": str(v) for k, v in info.items()}


def from_params(params: Mapping[str, str]) -> dict[str, str]:
    """The ``machine.<key>`` entries of a run's params (or tags) as {key: value}, {} if it
    logged none (runs from before machine info was logged)."""
    return {k[len(PREFIX):]: v for k, v in params.items() if k.startswith(PREFIX)}


def describe(info: Mapping[str, Any]) -> str:
    """One line for a results file: CPU (ISA), CPUs, threads, versions, oneDNN, determinism.
    Works on :func:`machine_info` and on :func:`from_params` (all strings)."""
    def get(key: str) -> str:
        value = info.get(key)
        return "?" if value in (None, "", "None") else str(value)

    def threads(key: str) -> str:  # 0: TF's default; None: TF not loaded, nothing set
        value = get(key)
        return "default" if value in ("0", "?") else value

    onednn = get("env.TF_ENABLE_ONEDNN_OPTS")
    onednn = "default (on)" if onednn == "unset" else onednn
    determinism = get("op_determinism")
    return (f"{get('cpu_model')} ({get('cpu_isa')}), {get('logical_cpus')} logical "
            f"CPUs ({get('schedulable_cpus')} schedulable), TF threads intra "
            f"{threads('intra_op_threads')} / inter {threads('inter_op_threads')}, "
            f"TF {get('tensorflow')}, TFP {get('tensorflow_probability')}, "
            f"Keras {get('keras')}, Python {get('python')}, TF_ENABLE_ONEDNN_OPTS {onednn}"
            + ("" if determinism == "?" else f", op determinism {determinism}"))


def describe_trained(trained: Mapping[str, Any], here: Mapping[str, Any]) -> str:
    """How a results file written on ``here`` names the machine a run ``trained`` on (its
    :func:`from_params`): 'this machine (op determinism X)', the other machine's
    :func:`describe` line, or 'not recorded' for a run that logged none."""
    if not trained:
        return "not recorded (the run logged no machine.* params)"
    if same_machine(trained, here):
        return f"this machine (op determinism {trained.get('op_determinism', '?')})"
    return describe(trained)


def of_mlflow_run(run_id: str | None, tracking_uri: str | None = None) -> dict[str, str]:
    """The machine a run's training logged (:func:`from_params` of its params), {} for no
    run, a run without them or a store that cannot be read (never raises)."""
    if not run_id:
        return {}
    try:
        from mlflow.tracking import MlflowClient

        return from_params(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.params)
    except Exception:  # noqa: BLE001 -- a results file is written without it
        return {}
