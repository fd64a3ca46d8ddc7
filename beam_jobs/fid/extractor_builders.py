"""Builders of extractor SavedModels (the contract: :mod:`beam_jobs.fid.extractor_contract`):
the project's own classifiers, and what every extractor export shares.

* ``classifier``: any Keras model on float [B, H, W, C] images in [0, 1] that returns
  (pool, logits), trained on a labelled data set by ``python -m beam_jobs.fid.train_classifier``
  and exported by :func:`export_classifier` (uint8 images are converted to the model's
  channels, resized to its H x W when they differ, and scaled to [0, 1]).
* ``mnist_classifier``: the same export of the small convnet (:func:`build_small_convnet`,
  :func:`build_mnist_classifier`) trained on the MNIST IDX files by
  ``python -m pipeline.train_mnist_classifier`` (:func:`export_mnist_classifier`).
* ``inception_v3``: built from a user-supplied file by
  :mod:`beam_jobs.fid.inception_builders` with the helpers here.

Each build writes ``extractor.json`` with its resize protocol (the ``*_PROTOCOL`` texts).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Optional

import tensorflow as tf

if TYPE_CHECKING:  # keras is imported where a model is built (slow import)
    import keras

from beam_jobs.fid import identity
from beam_jobs.fid.extractor_contract import EXTRACTOR_JSON, FEATURES_SIGNATURE

log = logging.getLogger(__name__)

MNIST_SIZE = 28
MNIST_PROTOCOL = (
    "mnist_classifier: uint8 [0,255] -> grey (mean of 1 channel, or ITU-R 601 luma "
    "0.299/0.587/0.114 of RGB) -> if not 28x28, tf.image.resize bilinear (half-pixel "
    "centers, no antialias) to 28x28 -> /255 to [0,1]; pool = 128-d penultimate ReLU "
    "layer, logits over 10 digits")
IMAGES_SPEC = tf.TensorSpec([None, None, None, None], tf.uint8, name="images")


# --------------------------------------------------------------------------------------
# Shared preprocessing pieces (inside tf.function, dynamic shapes).
# --------------------------------------------------------------------------------------
def _check_channels(images: tf.Tensor) -> tf.Tensor:
    """The channel count of uint8 [B, H, W, C]; raises unless C is 1 or 3. The count is
    returned through a control dependency on the check, so nothing that uses it (the
    channel ``tf.cond``, the later ``ensure_shape``) can run, and fail with a less
    helpful message, before the check does."""
    channels = tf.shape(images)[-1]
    check = tf.debugging.assert_equal(
        tf.logical_or(tf.equal(channels, 1), tf.equal(channels, 3)), True,
        message="extractor 'images' must be uint8 [B, H, W, C] with C = 1 or 3")
    with tf.control_dependencies([check]):
        return tf.identity(channels)


def to_rgb(images: tf.Tensor) -> tf.Tensor:
    """uint8 [B, H, W, 1 or 3] -> float32 [B, H, W, 3] in [0, 255]."""
    channels = _check_channels(images)
    x = tf.cast(images, tf.float32)
    x = tf.cond(tf.equal(channels, 1), lambda: tf.tile(x[..., :1], [1, 1, 1, 3]),
                lambda: x[..., :3])
    return tf.ensure_shape(x, [None, None, None, 3])


def _to_grey(images: tf.Tensor) -> tf.Tensor:
    """uint8 [B, H, W, 1 or 3] -> float32 [B, H, W, 1] in [0, 255]."""
    channels = _check_channels(images)
    x = tf.cast(images, tf.float32)
    luma = tf.constant([0.299, 0.587, 0.114], tf.float32)
    x = tf.cond(tf.equal(channels, 3),
                lambda: tf.reduce_sum(x[..., :3] * luma, axis=-1, keepdims=True),
                lambda: x[..., :1])
    return tf.ensure_shape(x, [None, None, None, 1])


def _resize_if_needed(x: tf.Tensor, size: int, width: Optional[int] = None) -> tf.Tensor:
    """float [B, H, W, C] -> [B, size, width, C] (``width`` defaults to ``size``); bilinear
    resize only if the image is not that size already."""
    width = size if width is None else width
    hw = tf.shape(x)[1:3]
    same = tf.reduce_all(tf.equal(hw, [size, width]))
    x = tf.cond(same, lambda: x, lambda: tf.image.resize(x, [size, width], method="bilinear"))
    return tf.ensure_shape(x, [None, size, width, x.shape[-1]])


# --------------------------------------------------------------------------------------
# The project's classifiers (beam_jobs.fid.train_classifier, pipeline.train_mnist_classifier).
# --------------------------------------------------------------------------------------
def build_small_convnet(input_shape: tuple[int, int, int] = (MNIST_SIZE, MNIST_SIZE, 1),
                        num_classes: int = 10, feature_dim: int = 128, seed: int = 0,
                        name: str = "small_convnet") -> tuple["keras.Model", "keras.Model"]:
    """Returns (classifier, features_model) Keras models on float [B, H, W, C] in [0, 1]:
    two 3x3 conv + 2x2 max-pool stages (32, 64 filters), a ``feature_dim`` ReLU layer
    ("pool") and a linear layer to ``num_classes`` logits (dropout 0.2 between them).

    ``classifier`` maps to logits [B, num_classes]; ``features_model`` shares its layers
    and maps to (pool [B, feature_dim], logits [B, num_classes]).
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(tuple(int(v) for v in input_shape), name="image")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    pool = layers.Dense(feature_dim, activation="relu", name="pool")(x)
    logits = layers.Dense(num_classes, name="logits")(layers.Dropout(0.2)(pool))
    classifier = keras.Model(inputs, logits, name=name)
    features_model = keras.Model(inputs, [pool, logits], name=f"{name}_features")
    return classifier, features_model


def build_mnist_classifier(feature_dim: int = 128, seed: int = 0
                           ) -> tuple["keras.Model", "keras.Model"]:
    """:func:`build_small_convnet` on 28x28 grey images with 10 classes (the digits)."""
    classifier, features_model = build_small_convnet((MNIST_SIZE, MNIST_SIZE, 1), 10,
                                                     feature_dim, seed, "mnist_classifier")
    return classifier, features_model


def classifier_protocol(name: str, input_shape: tuple[int, int, int], feature_dim: int,
                        num_classes: int, features: str = "penultimate layer") -> str:
    """The resize protocol text of an :func:`export_classifier` extractor."""
    h, w, c = (int(v) for v in input_shape)
    colour = ("grey (mean of 1 channel, or ITU-R 601 luma 0.299/0.587/0.114 of RGB)"
              if c == 1 else "RGB (grey tiled to 3 channels)")
    return (f"{name}: uint8 [0,255] -> {colour} -> if not {h}x{w}, tf.image.resize bilinear "
            f"(half-pixel centers, no antialias) to {h}x{w} -> /255 to [0,1]; pool = "
            f"{feature_dim}-d {features}, logits over {num_classes} classes")


class _ClassifierFeatures(tf.Module):
    """The ``features`` signature of a (pool, logits) Keras model on [0, 1] images."""

    def __init__(self, features_model):
        super().__init__()
        self.model = features_model
        h, w, c = (int(v) for v in features_model.inputs[0].shape[1:])
        if c not in (1, 3):
            raise ValueError(f"classifier input has {c} channels; expected 1 or 3")
        self._height, self._width, self._channels = h, w, c

    @tf.function(input_signature=[IMAGES_SPEC])
    def features(self, images):
        x = _to_grey(images) if self._channels == 1 else to_rgb(images)
        x = _resize_if_needed(x, self._height, self._width) / 255.0
        pool, logits = self.model(x, training=False)
        return {"pool": tf.cast(pool, tf.float32), "logits": tf.cast(logits, tf.float32)}


def _write_info(directory: str, name: str, protocol: str, feature_dim: int,
                num_classes: int, **extra) -> None:
    with open(os.path.join(directory, EXTRACTOR_JSON), "w") as f:
        json.dump({"name": name, "resize_protocol": protocol, "feature_dim": feature_dim,
                   "num_classes": num_classes, **extra}, f, indent=2)


def save_atomically(module: tf.Module, output_dir: str, name: str, protocol: str,
                     feature_dim: int, num_classes: int, **extra) -> None:
    """Saves ``module`` with its ``features`` signature to a temp dir, then renames."""
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-extractor-", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures={
            FEATURES_SIGNATURE: module.features.get_concrete_function()})
        # What was saved, so a later reuse can check the files are still these.
        extra["saved_model_fingerprint"] = identity.saved_model_fingerprint(tmp)
        _write_info(tmp, name, protocol, feature_dim, num_classes, **extra)
        if os.path.isdir(output_dir):
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def export_classifier(features_model: "keras.Model", output_dir: str, name: str = "classifier",
                      protocol: Optional[str] = None, **extra) -> str:
    """Exports a (pool, logits) Keras model on float [B, H, W, C] images in [0, 1] (C = 1
    or 3, float32 weights) as an extractor SavedModel named ``name``; ``protocol``
    defaults to :func:`classifier_protocol`. ``extra`` goes into ``extractor.json``
    (with ``saved_model_fingerprint``, the content fingerprint of what was saved)."""
    module = _ClassifierFeatures(features_model)
    feature_dim = int(features_model.outputs[0].shape[-1])
    num_classes = int(features_model.outputs[1].shape[-1])
    if protocol is None:
        protocol = classifier_protocol(name, features_model.inputs[0].shape[1:], feature_dim,
                                       num_classes)
    save_atomically(module, output_dir, name, protocol, feature_dim, num_classes, **extra)
    return output_dir


def export_mnist_classifier(features_model: "keras.Model", output_dir: str, **extra) -> str:
    """Exports a :func:`build_mnist_classifier` features model as an extractor SavedModel."""
    return export_classifier(features_model, output_dir, "mnist_classifier", MNIST_PROTOCOL,
                             **extra)
