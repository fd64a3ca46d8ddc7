"""Shared pytest set-up.

* Two logical CPU devices are configured before TensorFlow initialises, so tests can
  exercise MirroredStrategy with 2 replicas on a CPU-only machine.
* ``shared_data`` points to the real image sets in ``../shared/data``.
"""
from __future__ import annotations

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")  # does not initialise the runtime
if _cpus:
    try:
        tf.config.set_logical_device_configuration(
            _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:  # TF already initialised by an earlier import; keep what it has.
        pass

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The folder of real test images (MNIST IDX files, CIFAR-10 JPEG zip)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"expected the shared real data at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow SQLite store for the session (creating its tables takes seconds)."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture(scope="session")
def mnist_dir(shared_data: pathlib.Path) -> pathlib.Path:
    return shared_data / "mnist_test"


@pytest.fixture(scope="session")
def cifar_zip(shared_data: pathlib.Path) -> pathlib.Path:
    return shared_data / "cifar10_test_jpg" / "cifar10_test_jpg.zip"
