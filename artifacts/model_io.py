"""What a model directory holds and how to get a trained model back from it.

``<model_dir>/model_config.json`` stores the :class:`HybridConfig` (architecture, variant,
image shape) and the data set it was trained on; ``ckpt-<step>`` files hold weights,
optimizer state and the step (tf.train.CheckpointManager). Evaluation and export rebuild
the model from these two alone.
"""
from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from tfp_models.hybrid import HybridConfig, HybridModel

CONFIG_FILE = "model_config.json"


def save_model_config(model_dir: str, config: HybridConfig, extra: dict[str, Any]) -> None:
    """Writes model_config.json atomically (temp file + rename)."""
    os.makedirs(model_dir, exist_ok=True)
    payload = {"model": json.loads(config.to_json()), **extra}
    path = os.path.join(model_dir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def load_model_config(model_dir: str) -> tuple[HybridConfig, dict[str, Any]]:
    """(HybridConfig, the whole model_config.json) of a model directory."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path!r} not found: {model_dir!r} is not a model directory written by "
            "`python -m pipeline.train`")
    with open(path) as f:
        payload = json.load(f)
    return HybridConfig.from_dict(payload["model"]), payload


def make_checkpoint(model: HybridModel, step: tf.Variable, **optimizers) -> tf.train.Checkpoint:
    """The checkpoint object: model weights, step and any optimizers given by name."""
    return tf.train.Checkpoint(model=model, step=step, **optimizers)


def load_trained_model(model_dir: str, checkpoint_path: str | None = None
                       ) -> tuple[HybridModel, int]:
    """Rebuilds the model of ``model_dir`` and restores its latest (or the given)
    checkpoint; returns (model, step). Optimizer state is not loaded."""
    config, _ = load_model_config(model_dir)
    model = HybridModel(config)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    path = checkpoint_path or tf.train.latest_checkpoint(model_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {model_dir!r} (expected ckpt-<step> files)")
    make_checkpoint(model, step).read(path).expect_partial().assert_existing_objects_matched()
    return model, int(step.numpy())
