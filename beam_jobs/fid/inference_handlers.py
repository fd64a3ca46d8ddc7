"""Beam RunInference model handlers: uint8 images [H, W, C] -> extractor features
{"pool": [d], "logits": [K]}, and int64 seeds -> generator samples uint8 [H, W, C] (from a
``sample`` signature, or straight from a trained model directory). Signature names:
:mod:`beam_jobs.fid.extractor_contract`.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

from beam_jobs.fid.extractor_contract import FEATURES_SIGNATURE, SAMPLE_SIGNATURE

log = logging.getLogger(__name__)


class SavedModelSignatureHandler(TFModelHandlerNumpy):
    """TFModelHandlerNumpy that loads a plain SavedModel with ``tf.saved_model.load``.

    Beam's handler uses ``tf.keras.models.load_model``, which Keras 3 refuses for a
    SavedModel written by ``tf.saved_model.save``; the ``inference_fn`` calls a named
    signature of the loaded object.
    """

    def load_model(self) -> tf.Module:
        log.info("loading SavedModel %s", self._model_uri)
        return tf.saved_model.load(self._model_uri)


def features_inference_fn(model: tf.Module, batch: Sequence[np.ndarray],
                          inference_args: Optional[dict] = None,
                          model_id: Optional[str] = None) -> Iterable[PredictionResult]:
    """Runs ``features`` on uint8 images [H, W, C]; images of different shapes are run
    as separate sub-batches. Each result's inference is {"pool": [d], "logits": [K]}."""
    fn = model.signatures[FEATURES_SIGNATURE]
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(batch):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"extractor input must be uint8 [H, W, C], got {image.dtype} "
                             f"{image.shape}")
        groups.setdefault(image.shape, []).append(i)
    results: list[Optional[PredictionResult]] = [None] * len(batch)
    for idx in groups.values():
        out = fn(images=tf.constant(np.stack([batch[i] for i in idx])))
        pool, logits = out["pool"].numpy(), out["logits"].numpy()
        for j, i in enumerate(idx):
            results[i] = PredictionResult(batch[i], {"pool": pool[j], "logits": logits[j]},
                                          model_id)
    return results


def sample_inference_fn(model: tf.Module, batch: Sequence[Any],
                        inference_args: Optional[dict] = None, model_id: Optional[str] = None,
                        *, temperature: float = 1.0) -> Iterable[PredictionResult]:
    """Calls ``sample(seed int64 [B], temperature float32 [B])``; inference = uint8 [H, W, C]."""
    seeds = np.asarray(batch, np.int64).reshape(-1)
    out = model.signatures[SAMPLE_SIGNATURE](
        seed=tf.constant(seeds), temperature=tf.fill([len(seeds)], np.float32(temperature)))
    if "images" not in out:
        raise ValueError(f"signature 'sample' of {model_id!r} returned {sorted(out)}, "
                         "expected a key 'images'")
    images = out["images"].numpy()
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != len(seeds):
        raise ValueError(f"signature 'sample' of {model_id!r} returned images {images.dtype} "
                         f"{images.shape} for {len(seeds)} seeds; expected uint8 "
                         f"[{len(seeds)}, H, W, C]")
    return [PredictionResult(int(s), images[i], model_id) for i, s in enumerate(seeds)]


def features_model_handler(extractor_dir: str, batch_size: int = 64) -> SavedModelSignatureHandler:
    """RunInference handler: uint8 image [H, W, C] -> {"pool", "logits"}."""
    return SavedModelSignatureHandler(extractor_dir, inference_fn=features_inference_fn,
                                      min_batch_size=1, max_batch_size=batch_size)


def sampler_model_handler(saved_model_dir: str, batch_size: int = 64,
                          temperature: float = 1.0) -> SavedModelSignatureHandler:
    """RunInference handler: int64 seed -> uint8 image [H, W, C] from signature ``sample``."""
    return SavedModelSignatureHandler(
        saved_model_dir,
        inference_fn=functools.partial(sample_inference_fn, temperature=float(temperature)),
        min_batch_size=batch_size, max_batch_size=batch_size)


class ModelDirSamplerHandler(ModelHandler):
    """RunInference handler: int64 seed -> uint8 image [H, W, C] drawn straight from a
    trained model directory (``HybridModel.sample_rows``, the same rows as the exported
    ``sample`` signature), so FID of a model needs no SavedModel export."""

    def __init__(self, model_dir: str, batch_size: int = 64, temperature: float = 1.0):
        super().__init__()
        self._model_dir = model_dir
        self._batch_size = int(batch_size)
        self._temperature = float(temperature)

    def load_model(self):
        from artifacts import model_io

        log.info("loading trained model %s", self._model_dir)
        model, _ = model_io.load_trained_model(self._model_dir)
        return tf.function(model.sample_rows, input_signature=[
            tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32)])

    def run_inference(self, batch: Sequence[Any], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        seeds = np.asarray(batch, np.int64).reshape(-1)
        images = model(tf.constant(seeds), tf.fill([len(seeds)], np.float32(self._temperature)))
        images = images.numpy()
        return [PredictionResult(int(s), images[i], self._model_dir) for i, s in enumerate(seeds)]

    def batch_elements_kwargs(self) -> dict:
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}
