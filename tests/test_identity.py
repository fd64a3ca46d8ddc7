"""beam_jobs.fid.identity: extractor fingerprints, and the quickstart's check that reference
statistics still belong to the classifier."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from beam_jobs.fid import extractors, identity
from beam_jobs.fid.fid_math import FeatureStatistics


@pytest.fixture(scope="module")
def two_classifiers(tmp_path_factory) -> tuple[str, str]:
    """Two exported MNIST-architecture extractors with different (untrained) weights."""
    root = tmp_path_factory.mktemp("identity")
    dirs = []
    for seed in (1, 2):
        _, model = extractors.build_mnist_classifier(feature_dim=16, seed=seed)
        dirs.append(extractors.export_mnist_classifier(model, str(root / f"clf{seed}")))
    return dirs[0], dirs[1]


def test_saved_model_fingerprint_follows_weights_not_metadata(two_classifiers, tmp_path):
    a, b = two_classifiers
    fa = identity.saved_model_fingerprint(a)
    assert fa.startswith(identity.SAVED_MODEL_PREFIX) and len(fa) == len(identity.SAVED_MODEL_PREFIX) + 64
    assert identity.saved_model_fingerprint(a) == fa  # deterministic
    assert identity.saved_model_fingerprint(b) != fa  # other weights
    copy = str(tmp_path / "copy")
    shutil.copytree(a, copy)
    assert identity.saved_model_fingerprint(copy) == fa  # content, not location
    with open(os.path.join(copy, extractors.EXTRACTOR_JSON), "a") as f:
        f.write(" ")  # metadata is not hashed
    assert identity.saved_model_fingerprint(copy) == fa
    variables = [os.path.join(copy, "variables", n) for n in os.listdir(os.path.join(copy, "variables"))]
    data = max(variables, key=os.path.getsize)
    raw = bytearray(open(data, "rb").read())
    raw[len(raw) // 2] ^= 0xFF  # one changed weight byte
    open(data, "wb").write(bytes(raw))
    assert identity.saved_model_fingerprint(copy) != fa
    info = extractors.resolve_extractor("mnist_classifier", a)
    assert info.fingerprint == fa == identity.extractor_fingerprint("mnist_classifier", a)
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        identity.saved_model_fingerprint(str(tmp_path))


def test_inception_sources_get_different_identities(tmp_path):
    """The TTUR frozen graph (.pb) and Keras weights (.h5) never share an identity, even
    for identical bytes; the fingerprint is the source file's SHA-256."""
    payload = b"the same bytes in both files"
    (tmp_path / "inception.pb").write_bytes(payload)
    (tmp_path / "inception.h5").write_bytes(payload)
    pb = identity.extractor_fingerprint("inception_v3", str(tmp_path / "inception.pb"))
    h5 = identity.extractor_fingerprint("inception_v3", str(tmp_path / "inception.h5"))
    import hashlib

    digest = hashlib.sha256(payload).hexdigest()
    assert pb == f"pb-sha256:{digest}" and h5 == f"keras_h5-sha256:{digest}"
    (tmp_path / "x.bin").write_bytes(payload)
    with pytest.raises(ValueError, match="expected a frozen graph"):
        identity.extractor_fingerprint("inception_v3", str(tmp_path / "x.bin"))


def test_image_shape_label():
    assert identity.image_shape_label([(28, 28, 1)] * 3) == "28x28x1"
    assert identity.image_shape_label([(32, 32, 3), (28, 28, 1)]) == "mixed:28x28x1,32x32x3"
    many = [(s, s, 3) for s in range(10, 20)]
    assert identity.image_shape_label(many, limit=3) == "mixed:10x10x3,11x11x3,12x12x3,..."
    assert identity.image_shape_label([]) == ""


def test_stale_statistics_reason_tracks_the_classifier(two_classifiers, tmp_path):
    """What the quickstart uses to regenerate its reference statistics."""
    a, b = two_classifiers
    info = extractors.resolve_extractor("mnist_classifier", a)
    path = str(tmp_path / "ref.npz")
    assert "does not exist" in identity.stale_statistics_reason(path, "mnist_classifier", a)
    x = np.random.default_rng(0).normal(size=(50, 4))
    FeatureStatistics.from_features(x, extractor=info.name, resize_protocol=info.resize_protocol,
                                    extractor_fingerprint=info.fingerprint,
                                    image_shape="28x28x1").save(path)
    assert identity.stale_statistics_reason(path, "mnist_classifier", a) is None
    assert "extractor changed" in identity.stale_statistics_reason(path, "mnist_classifier", b)
    FeatureStatistics.from_features(x, extractor=info.name, resize_protocol="another protocol",
                                    extractor_fingerprint=info.fingerprint).save(path)
    assert "resize protocol changed" in identity.stale_statistics_reason(
        path, "mnist_classifier", a)
    np.savez(path, mu=x.mean(0), sigma=np.cov(x, rowvar=False), extractor=np.str_(info.name))
    assert "no extractor fingerprint" in identity.stale_statistics_reason(
        path, "mnist_classifier", a)
    open(path, "wb").write(b"garbage")
    assert "not a readable" in identity.stale_statistics_reason(path, "mnist_classifier", a)
