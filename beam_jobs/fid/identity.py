"""Content fingerprints of feature extractors (no TensorFlow import: cheap to call).

FID statistics are only comparable when they come from the same extractor weights, the
same preprocessing ("resize protocol") and images of the same shape. A name such as
``inception_v3`` does not say which weights: the TTUR frozen graph and the Keras ``.h5``
give different features. The fingerprint is a SHA-256 of the extractor's content:

* ``inception_v3``: ``"<kind>-sha256:<hex>"`` of the user's source file, kind ``pb``
  (TTUR / original FID frozen graph) or ``keras_h5`` (Keras weights): the cached
  SavedModel built from it is derived data, so rebuilding the cache keeps the identity;
* a SavedModel directory (``mnist_classifier``, ``classifier``, ``saved_model``):
  ``"savedmodel-sha256:<hex>"`` over ``saved_model.pb``, ``variables/*`` and
  ``assets/*`` (relative path and bytes of each file, in sorted order). ``extractor.json``
  (metadata) and ``fingerprint.pb`` (TF's own, may hold a random UUID) are not hashed.
"""
from __future__ import annotations

import functools
import hashlib
import os

SAVED_MODEL_PREFIX = "savedmodel-sha256:"
#: Extractor source-file kinds by file extension.
SOURCE_KINDS = {".pb": "pb", ".h5": "keras_h5"}
_HASHED_SUBDIRS = ("variables", "assets")


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_kind(path: str) -> str:
    """``pb`` or ``keras_h5`` from an Inception-v3 file's extension; ValueError otherwise."""
    kind = SOURCE_KINDS.get(os.path.splitext(path.lower())[1])
    if kind is None:
        raise ValueError(f"Inception-v3 file {path!r}: expected a frozen graph '.pb' or "
                         "Keras weights '.h5'")
    return kind


def source_file_fingerprint(path: str, digest: str | None = None) -> str:
    """``"<kind>-sha256:<hex>"`` of an extractor source file (``digest``: its known hex)."""
    return f"{source_kind(path)}-sha256:{digest or file_sha256(path)}"


def saved_model_fingerprint(directory: str) -> str:
    """``"savedmodel-sha256:<hex>"`` over a SavedModel's graph, variables and assets."""
    pb = os.path.join(directory, "saved_model.pb")
    if not os.path.isfile(pb):
        raise FileNotFoundError(f"{directory!r} is not a SavedModel directory (no saved_model.pb)")
    files = ["saved_model.pb"]
    for sub in _HASHED_SUBDIRS:
        for root, _, names in os.walk(os.path.join(directory, sub)):
            files += [os.path.relpath(os.path.join(root, n), directory) for n in names]
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.replace(os.sep, "/").encode("utf-8") + b"\0")
        h.update(bytes.fromhex(file_sha256(os.path.join(directory, rel))))
    return SAVED_MODEL_PREFIX + h.hexdigest()


def extractor_fingerprint(name: str, path: str) -> str:
    """The fingerprint ``beam_jobs.fid.extractors.resolve_extractor`` records for
    ``--extractor=name --extractor_path=path`` (see the module docstring)."""
    if name == "inception_v3":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Inception-v3 file {path!r} does not exist")
        return source_file_fingerprint(path)
    return saved_model_fingerprint(path)


def image_shape_label(shapes: "set[tuple[int, ...]] | list[tuple[int, ...]]",
                      limit: int = 8) -> str:
    """``"HxWxC"`` when every image has one shape; ``"mixed:<shape>,<shape>..."`` (sorted,
    at most ``limit`` listed, then ``",..."``) otherwise; ``""`` for no images."""
    distinct = sorted({tuple(int(v) for v in s) for s in shapes})
    labels = ["x".join(str(v) for v in s) for s in distinct]
    if len(labels) <= 1:
        return labels[0] if labels else ""
    more = ",..." if len(labels) > limit else ""
    return "mixed:" + ",".join(labels[:limit]) + more


def stale_statistics_reason(stats_path: str, extractor_name: str,
                            extractor_path: str) -> str | None:
    """Why the statistics file at ``stats_path`` does not belong to the extractor
    (``--extractor``/``--extractor_path``) as it is now, or None if it does.

    Reasons: the file is missing or unreadable, records no fingerprint, or records another
    fingerprint or resize protocol (the protocol is compared when the extractor directory
    has an ``extractor.json``). Reads only the ``.npz`` metadata (numpy, no TensorFlow).
    """
    import json

    import numpy as np

    if not os.path.isfile(stats_path):
        return f"{stats_path} does not exist"
    try:
        with np.load(stats_path, allow_pickle=False) as data:
            meta = {k: str(data[k]) for k in ("extractor_fingerprint", "resize_protocol")
                    if k in data.files}
    except Exception as e:  # noqa: BLE001 - numpy raises several types for a bad file
        return f"{stats_path} is not a readable .npz ({e})"
    recorded = meta.get("extractor_fingerprint", "")
    if not recorded:
        return f"{stats_path} records no extractor fingerprint (an older file)"
    current = extractor_fingerprint(extractor_name, extractor_path)
    if recorded != current:
        return (f"the extractor changed: {stats_path} was computed with {recorded[:28]}..., "
                f"{extractor_path} is now {current[:28]}...")
    info_path = os.path.join(extractor_path, "extractor.json")
    if os.path.isfile(info_path):
        with open(info_path) as f:
            protocol = json.load(f).get("resize_protocol", "")
        if protocol and meta.get("resize_protocol", "") != protocol:
            return f"the resize protocol changed since {stats_path} was computed"
    return None
