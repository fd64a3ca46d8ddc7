"""Shared pytest set-up.

* Two logical CPU devices are configured before TensorFlow initialises, so tests can
  exercise MirroredStrategy with 2 replicas on a CPU-only machine.
* ``shared_data`` points to the real image sets in ``../shared/data``.
* Every test starts from the same Python / NumPy / TensorFlow seeds (Keras weight inits
  included), so a test's outcome does not depend on which tests ran before it.
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


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    import keras

    keras.utils.set_random_seed(0)


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


# Tiny models for pipeline tests: real code paths, seconds per training run.
TINY_SHAPE = (16, 16, 1)
TINY = dict(latent_dim=4, enc_dec_channels=4, flow_scales=1, flow_hidden=4, flow_res_blocks=1,
            disc_channels=4, posterior_hidden=8)


def tiny_train_config(data_dir: str, model_dir: str, tracking_uri: str, **overrides):
    """A TrainConfig of a few steps of batch 8 with progress bars off."""
    from pipeline import trainer

    kw = dict(train_steps=4, batch_size=8, checkpoint_every=2, log_every=1, sample_every=100,
              num_grid_samples=4, data_init_batch=32, mlflow_tracking_uri=tracking_uri,
              show_progress=False, seed=3)
    kw.update(overrides)
    return trainer.TrainConfig(data_dir=str(data_dir), model_dir=str(model_dir), **kw)


def train_tiny(data_dir: str, model_dir: str, tracking_uri: str, variant: str, **overrides) -> str:
    """Trains a tiny model of ``variant`` with the real trainer; returns model_dir."""
    from pipeline import trainer
    from tfp_models.hybrid import HybridConfig

    trainer.train(HybridConfig(variant=variant, image_shape=TINY_SHAPE, **TINY),
                  tiny_train_config(data_dir, model_dir, tracking_uri, **overrides))
    return str(model_dir)


@pytest.fixture(scope="session")
def digits16(tmp_path_factory, mnist_dir) -> str:
    """The first 240 real MNIST test digits at 16x16 grey (labels as folder names), through
    the Beam preprocess job: 80% train, 20% validation."""
    from PIL import Image

    from beam_jobs import preprocess
    from beam_jobs.sources.mnist_idx import load_mnist

    images, labels = load_mnist(str(mnist_dir))
    folder = tmp_path_factory.mktemp("digits")
    for i in range(240):
        sub = folder / str(labels[i])
        sub.mkdir(exist_ok=True)
        Image.fromarray(images[i]).resize((16, 16), Image.LANCZOS).save(sub / f"{i:04d}.png")
    out = tmp_path_factory.mktemp("data") / "mnist16"
    preprocess.run_preprocess("image_folder", str(folder), str(out), 16, grayscale=True,
                              validation_fraction=0.2)
    return str(out)
