"""Feature extractors for FID/KID/IS and the Beam RunInference handlers that run them.

This module resolves ``--extractor`` / ``--extractor_path`` (:func:`resolve_extractor`)
and re-exports the names of the contract (:mod:`beam_jobs.fid.extractor_contract`), the
builders (:mod:`beam_jobs.fid.extractor_builders`) and the RunInference handlers
(:mod:`beam_jobs.fid.inference_handlers`).

The extractor contract: a SavedModel directory whose signature ``features`` takes
``images`` (uint8 [B, H, W, C], C in {1, 3}, values in [0, 255]) and returns
``{"pool": float32 [B, d], "logits": float32 [B, K]}``: ``pool`` feeds FID/KID, the
softmax of ``logits`` feeds IS. Next to ``saved_model.pb`` an ``extractor.json``
records the name, feature/class dimensions and the preprocessing ("resize protocol").

Extractors (``--extractor``):

* ``mnist_classifier``: a small convnet trained on MNIST by
  ``python -m pipeline.train_mnist_classifier``; ``--extractor_path`` is its SavedModel.
* ``classifier``: a classifier trained on the training split of any labelled data set by
  ``python -m beam_jobs.fid.train_classifier`` (e.g. a fast ResNet on CIFAR-10); its features
  make FID/KID/IS comparable only between statistics of the same extractor (fingerprint),
  never with Inception-based numbers.
* ``inception_v3``: ``--extractor_path`` is a local file the user supplies, either the
  TF 2015-12-05 frozen graph ``classify_image_graph_def.pb`` (TTUR / original FID) or a
  Keras ``InceptionV3`` weights ``.h5`` (with the classification top). A SavedModel
  with the ``features`` signature is built from it once and cached by the file's SHA-256.
* ``saved_model``: any directory that already satisfies the contract.

Every resolved extractor carries a content fingerprint (:mod:`beam_jobs.fid.identity`):
statistics files record it, and statistics of different fingerprints are never compared.

Nothing is ever downloaded.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from beam_jobs.fid import identity
from beam_jobs.fid.extractor_builders import (
    MNIST_PROTOCOL,
    build_mnist_classifier,
    build_small_convnet,
    classifier_protocol,
    export_classifier,
    export_mnist_classifier,
)
from beam_jobs.fid.extractor_contract import (
    EXTRACTOR_JSON,
    EXTRACTORS,
    FEATURES_SIGNATURE,
    SAMPLE_SIGNATURE,
    ExtractorInfo,
    check_signature,
    signature_inputs,
)
from beam_jobs.fid.inception_builders import (
    INCEPTION_KERAS_PROTOCOL,
    INCEPTION_PB_PROTOCOL,
    build_inception_saved_model,
    default_cache_dir,
    inception_saved_model,
)
from beam_jobs.fid.inference_handlers import (
    ModelDirSamplerHandler,
    SavedModelSignatureHandler,
    features_inference_fn,
    features_model_handler,
    sample_inference_fn,
    sampler_model_handler,
)


def resolve_extractor(name: str, path: str, cache_dir: Optional[str] = None) -> ExtractorInfo:
    """Turns ``--extractor`` / ``--extractor_path`` into a checked extractor SavedModel."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; expected one of {EXTRACTORS}")
    if not path:
        raise ValueError(f"--extractor={name} needs --extractor_path")
    if name == "inception_v3":
        directory, digest = inception_saved_model(path, cache_dir)
        fingerprint = identity.source_file_fingerprint(path, digest)
    else:
        if not os.path.isdir(path):
            hint = {"mnist_classifier": " (train one with `python -m "
                                        "pipeline.train_mnist_classifier --mnist_dir=... "
                                        "--output=DIR`)",
                    "classifier": " (train one with `python -m beam_jobs.fid.train_classifier "
                                  "--data_dir=... --output=DIR`)"}.get(name, "")
            raise FileNotFoundError(f"extractor SavedModel directory {path!r} does not "
                                    f"exist{hint}")
        directory = path
        fingerprint = ""
    check_signature(directory, FEATURES_SIGNATURE, {"images": "uint8"})
    fingerprint = fingerprint or identity.saved_model_fingerprint(directory)
    info_path = os.path.join(directory, EXTRACTOR_JSON)
    info: dict[str, Any] = {}
    if os.path.isfile(info_path):
        with open(info_path) as f:
            info = json.load(f)
    elif name != "saved_model":
        raise ValueError(f"{directory!r} lacks {EXTRACTOR_JSON}; it was not written by "
                         f"beam_jobs.fid.extractors, so it is not a {name!r} extractor")
    return ExtractorInfo(saved_model_dir=directory, name=info.get("name", name),
                         resize_protocol=info.get("resize_protocol", "unknown (custom SavedModel)"),
                         feature_dim=int(info.get("feature_dim", -1)),
                         num_classes=int(info.get("num_classes", -1)),
                         fingerprint=fingerprint)


__all__ = [
    "EXTRACTORS", "EXTRACTOR_JSON", "FEATURES_SIGNATURE", "SAMPLE_SIGNATURE", "ExtractorInfo",
    "check_signature", "signature_inputs", "resolve_extractor",
    "MNIST_PROTOCOL", "INCEPTION_PB_PROTOCOL", "INCEPTION_KERAS_PROTOCOL",
    "build_mnist_classifier", "export_mnist_classifier", "build_small_convnet",
    "classifier_protocol", "export_classifier", "build_inception_saved_model",
    "default_cache_dir",
    "SavedModelSignatureHandler", "ModelDirSamplerHandler", "features_inference_fn",
    "sample_inference_fn", "features_model_handler", "sampler_model_handler",
]
