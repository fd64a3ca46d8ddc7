"""Inception-v3 extractor SavedModels from a user-supplied file: the TF 2015-12-05 frozen
graph ``classify_image_graph_def.pb`` (TTUR / original FID) or a Keras ``InceptionV3``
weights ``.h5`` (with the classification top), built once into a SavedModel cached by the
file's SHA-256 (:func:`build_inception_saved_model`) in a directory only the user can
write (:func:`default_cache_dir`); a cached entry is reused only when its files still have
the fingerprint recorded when it was built, else it is rebuilt. Nothing is ever
downloaded.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

import tensorflow as tf

from beam_jobs.fid import identity
from beam_jobs.fid.extractor_builders import IMAGES_SPEC, save_atomically, to_rgb
from beam_jobs.fid.extractor_contract import EXTRACTOR_JSON

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299
INCEPTION_PB_PROTOCOL = (
    "inception_v3 frozen graph classify_image_graph_def.pb (TTUR/original FID): uint8 -> "
    "float32 [0,255] (grey tiled to 3 channels) fed to 'ExpandDims:0'; the graph's own "
    "ResizeBilinear to 299x299 (TF1, align_corners=False) and (x-128)/128; pool = "
    "'pool_3:0' 2048-d; logits = pool_3 @ softmax/weights + softmax/biases over 1008 classes")
INCEPTION_KERAS_PROTOCOL = (
    "inception_v3 Keras weights .h5: uint8 -> float32 [0,255] (grey tiled to 3 channels) "
    "-> tf.image.resize bilinear (half-pixel centers, no antialias) to 299x299 -> "
    "x/127.5-1 to [-1,1]; pool = 'avg_pool' 2048-d; logits = 'predictions' pre-softmax "
    "over 1000 classes")


class _KerasInception(tf.Module):
    def __init__(self, weights_path: str):
        super().__init__()
        import keras

        base = keras.applications.InceptionV3(weights=None, include_top=True,
                                              classifier_activation=None)
        try:
            base.load_weights(weights_path)
        except Exception as e:  # noqa: BLE001 - Keras raises ValueError/KeyError/OSError
            raise ValueError(
                f"could not load {weights_path!r} into keras.applications.InceptionV3"
                f"(include_top=True): {e}. Expected the full ImageNet weights .h5 with the "
                "classification top (e.g. inception_v3_weights_tf_dim_ordering_tf_kernels.h5)"
            ) from e
        self.model = keras.Model(base.inputs, [base.get_layer("avg_pool").output, base.output])

    @tf.function(input_signature=[IMAGES_SPEC])
    def features(self, images):
        x = tf.image.resize(to_rgb(images), [INCEPTION_SIZE, INCEPTION_SIZE], method="bilinear")
        pool, logits = self.model(x / 127.5 - 1.0, training=False)
        return {"pool": tf.cast(pool, tf.float32), "logits": tf.cast(logits, tf.float32)}


class _FrozenGraphInception(tf.Module):
    """The 2015-12-05 Inception graph, batched by mapping its 'ExpandDims:0' input."""

    def __init__(self, pb_path: str):
        super().__init__()
        graph_def = tf.compat.v1.GraphDef()
        with open(pb_path, "rb") as f:
            try:
                graph_def.ParseFromString(f.read())
            except Exception as e:  # noqa: BLE001 - protobuf DecodeError
                raise ValueError(f"{pb_path!r} is not a serialized GraphDef: {e}") from e
        names = {n.name for n in graph_def.node}
        missing = {"ExpandDims", "pool_3", "softmax/logits"} - names
        if missing:
            raise ValueError(
                f"{pb_path!r} lacks node(s) {sorted(missing)}; expected the Inception-v3 "
                "frozen graph classify_image_graph_def.pb (2015-12-05)")
        self._graph_def = graph_def

    @tf.function(input_signature=[IMAGES_SPEC])
    def features(self, images):
        x = to_rgb(images)
        pool3, logits_op = tf.compat.v1.import_graph_def(
            self._graph_def, input_map={"ExpandDims:0": x},
            return_elements=["pool_3:0", "softmax/logits"], name="inception")
        pool = tf.reshape(pool3, [-1, pool3.shape[-1]])
        if logits_op.type == "MatMul":
            weights, bias = logits_op.inputs[1], None
        else:  # BiasAdd / Add of (MatMul, biases)
            weights, bias = logits_op.inputs[0].op.inputs[1], logits_op.inputs[1]
        logits = tf.matmul(pool, weights)
        if bias is not None:
            logits = logits + bias
        return {"pool": tf.cast(pool, tf.float32), "logits": tf.cast(logits, tf.float32)}


def default_cache_dir() -> str:
    """``$ADE_EXTRACTOR_CACHE``, else ``$XDG_CACHE_HOME/adaptive_density/extractors``, else
    ``~/.cache/adaptive_density/extractors``: a directory of the user's own, never a
    shared temporary one (a SavedModel planted there would be loaded and run)."""
    if os.environ.get("ADE_EXTRACTOR_CACHE"):
        return os.environ["ADE_EXTRACTOR_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "adaptive_density", "extractors")


def check_private_dir(directory: str) -> str:
    """Creates ``directory`` (mode 0700) if needed; raises PermissionError unless it is
    owned by the current user and writable by nobody else. Returns its absolute path."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise PermissionError(f"extractor cache {directory!r} is owned by uid {st.st_uid}, not "
                              f"by you (uid {os.getuid()}); use a directory of your own "
                              "(--extractor_cache or ADE_EXTRACTOR_CACHE)")
    if st.st_mode & 0o022:
        raise PermissionError(f"extractor cache {directory!r} is writable by other users (mode "
                              f"{st.st_mode & 0o777:o}); expected one only you can write "
                              f"(chmod go-w {directory!r}, or another --extractor_cache)")
    return directory


def _cached_entry_is_intact(directory: str, source_sha256: str) -> bool:
    """True when ``directory`` holds an extractor built from the file with this SHA-256 and
    its SavedModel files are still those recorded when it was built (fingerprint)."""
    info_path = os.path.join(directory, EXTRACTOR_JSON)
    if not os.path.isfile(info_path):
        return False
    try:
        with open(info_path) as f:
            info = json.load(f)
        return (info.get("sha256") == source_sha256 and info.get("saved_model_fingerprint")
                == identity.saved_model_fingerprint(directory))
    except (OSError, ValueError):
        return False


def build_inception_saved_model(path: str, cache_dir: Optional[str] = None) -> str:
    """Builds (or reuses) the extractor SavedModel of an Inception-v3 ``.pb`` or ``.h5``.

    Returns the SavedModel directory ``<cache_dir>/inception_v3-<kind>-<sha256[:16]>``.
    """
    return inception_saved_model(path, cache_dir)[0]


def inception_saved_model(path: str, cache_dir: Optional[str]) -> tuple[str, str]:
    """(SavedModel directory, hex SHA-256 of the source file) of an Inception-v3 file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Inception-v3 file {path!r} does not exist. Supply a local copy of the TF "
            "frozen graph classify_image_graph_def.pb or Keras InceptionV3 weights .h5; "
            "nothing is downloaded")
    kind = identity.source_kind(path)
    protocol, classes = ((INCEPTION_PB_PROTOCOL, 1008) if kind == "pb"
                         else (INCEPTION_KERAS_PROTOCOL, 1000))
    digest = identity.file_sha256(path)
    cache = check_private_dir(cache_dir or default_cache_dir())
    out = os.path.join(cache, f"inception_v3-{kind}-{digest[:16]}")
    if _cached_entry_is_intact(out, digest):
        log.info("using cached Inception-v3 extractor %s (fingerprint verified)", out)
        return out, digest
    if os.path.exists(out):
        log.warning("cached extractor %s does not match its record (changed or incomplete); "
                    "rebuilding it", out)
    log.info("building the Inception-v3 extractor SavedModel from %s into %s", path, out)
    module = _KerasInception(path) if kind == "keras_h5" else _FrozenGraphInception(path)
    # Trace once on a tiny batch: checks the graph end to end and fixes the dimensions.
    probe = module.features(tf.zeros([1, 8, 8, 3], tf.uint8))
    dim, classes = int(probe["pool"].shape[-1]), int(probe["logits"].shape[-1])
    save_atomically(module, out, "inception_v3", protocol, dim, classes,
                     source=os.path.abspath(path), sha256=digest)
    return out, digest

