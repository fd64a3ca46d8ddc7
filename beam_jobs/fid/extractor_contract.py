"""The extractor contract: what a feature extractor SavedModel must provide, and what
describes a resolved one (:class:`ExtractorInfo`).

A SavedModel directory whose signature ``features`` takes ``images`` (uint8
[B, H, W, C], C in {1, 3}, values in [0, 255]) and returns ``{"pool": float32 [B, d],
"logits": float32 [B, K]}``: ``pool`` feeds FID/KID, the softmax of ``logits`` feeds IS.
Next to ``saved_model.pb`` an ``extractor.json`` records the name, feature/class
dimensions and the preprocessing ("resize protocol"). A generator SavedModel offers
``sample(seed int64 [B], temperature float32 [B]) -> {"images": uint8 [B, H, W, C]}``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import tensorflow as tf

FEATURES_SIGNATURE = "features"
SAMPLE_SIGNATURE = "sample"
EXTRACTOR_JSON = "extractor.json"
EXTRACTORS = ("mnist_classifier", "classifier", "inception_v3", "saved_model")


@dataclasses.dataclass(frozen=True)
class ExtractorInfo:
    """A ready extractor SavedModel: its directory, what it computes and its identity.

    ``fingerprint`` is the content hash of :func:`beam_jobs.fid.identity.extractor_fingerprint`
    (the Inception source file, or the SavedModel's graph and variables).
    """

    saved_model_dir: str
    name: str
    resize_protocol: str
    feature_dim: int
    num_classes: int
    fingerprint: str


def signature_inputs(saved_model_dir: str) -> dict[str, dict[str, Any]]:
    """{signature: {input name: TensorSpec-like info}} read from ``saved_model.pb`` only."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(saved_model_dir, "saved_model.pb")
    if not os.path.isfile(pb):
        raise FileNotFoundError(f"{saved_model_dir!r} is not a SavedModel directory "
                                "(no saved_model.pb)")
    sm = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        sm.ParseFromString(f.read())
    out: dict[str, dict[str, Any]] = {}
    for mg in sm.meta_graphs:
        for name, sig in mg.signature_def.items():
            out[name] = {k: tf.dtypes.as_dtype(v.dtype).name for k, v in sig.inputs.items()}
    return out


def check_signature(saved_model_dir: str, signature: str, inputs: dict[str, str]) -> None:
    """Raises ValueError unless ``signature`` exists with exactly ``inputs`` {name: dtype}."""
    sigs = signature_inputs(saved_model_dir)
    if signature not in sigs:
        raise ValueError(f"SavedModel {saved_model_dir!r} has no signature {signature!r} "
                         f"(it has {sorted(sigs)}); expected {signature}({inputs})")
    if sigs[signature] != inputs:
        raise ValueError(f"SavedModel {saved_model_dir!r}: signature {signature!r} takes "
                         f"{sigs[signature]}, expected {inputs}")
