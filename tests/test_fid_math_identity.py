"""beam_jobs.fid.fid_math: the extractor identity of statistics (compared, refused, saved) and
the .npz format."""
from __future__ import annotations

import numpy as np
import pytest
from test_fid_math import _features

from beam_jobs.fid import fid_math
from beam_jobs.fid.fid_math import FeatureStatistics


def _identified(seed: int = 0, **identity) -> FeatureStatistics:
    """Statistics of random features with a full identity (overridable per field)."""
    fields = dict(extractor="inception_v3", extractor_fingerprint="pb-sha256:" + "ab" * 32,
                  resize_protocol="protocol A", image_shape="64x64x3")
    fields.update(identity)
    return FeatureStatistics.from_features(_features(n=200, d=6, seed=seed), **fields)


def test_fid_rejects_mismatched_shapes_and_extractors():
    with pytest.raises(ValueError, match="different shapes"):
        fid_math.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    a = FeatureStatistics(np.zeros(2), np.eye(2), 5, extractor="mnist_classifier",
                          extractor_fingerprint="savedmodel-sha256:" + "0" * 64)
    b = FeatureStatistics(np.zeros(2), np.eye(2), 5, extractor="inception_v3",
                          extractor_fingerprint="pb-sha256:" + "0" * 64)
    with pytest.raises(fid_math.StatisticsMismatchError, match="different extractors"):
        fid_math.fid_from_statistics(a, b)
    with pytest.raises(fid_math.StatisticsMismatchError, match="different extractors"):
        fid_math.fid_from_statistics(a, b, allow_unverified=True)


def test_same_identity_is_compared():
    a, b = _identified(seed=1), _identified(seed=2)
    assert fid_math.fid_from_statistics(a, b) == pytest.approx(
        fid_math.frechet_distance(a.mu, a.sigma, b.mu, b.sigma), rel=1e-12)


@pytest.mark.parametrize("field,value,message", [
    # Same name, other weights: e.g. the TTUR .pb vs the Keras .h5 Inception.
    ("extractor_fingerprint", "keras_h5-sha256:" + "cd" * 32, "different inception_v3"),
    ("extractor_fingerprint", "pb-sha256:" + "ef" * 32, "different inception_v3"),
    ("resize_protocol", "protocol B", "resize protocol"),
    ("image_shape", "32x32x3", "64x64x3 images"),
    ("extractor", "mnist_classifier", "different extractors"),
])
def test_statistics_of_different_identities_are_refused(field, value, message):
    a, b = _identified(seed=1), _identified(seed=2, **{field: value})
    for x, y in ((a, b), (b, a)):
        with pytest.raises(fid_math.StatisticsMismatchError, match=message) as err:
            fid_math.fid_from_statistics(x, y)
        assert "\n" not in str(err.value)  # one line, printable by a CLI
        with pytest.raises(fid_math.StatisticsMismatchError):  # not an "unverified" issue
            fid_math.fid_from_statistics(x, y, allow_unverified=True)


def test_identity_survives_save_and_load(tmp_path):
    a = _identified(seed=3)
    path = str(tmp_path / "a.npz")
    a.save(path)
    back = FeatureStatistics.load(path)
    assert (back.extractor, back.extractor_fingerprint, back.resize_protocol,
            back.image_shape, back.count) == (a.extractor, a.extractor_fingerprint,
                                              a.resize_protocol, a.image_shape, 200)
    assert back.source == path
    with np.load(path) as data:
        assert int(data["format_version"]) == fid_math.STATS_FORMAT_VERSION
    other = str(tmp_path / "b.npz")
    _identified(seed=4, extractor_fingerprint="keras_h5-sha256:" + "12" * 32).save(other)
    with pytest.raises(fid_math.StatisticsMismatchError, match=r"statistics '.*a\.npz'"):
        fid_math.fid_from_statistics(FeatureStatistics.load(path), FeatureStatistics.load(other))


def test_statistics_without_fingerprint_must_be_regenerated(tmp_path):
    """Old project files (name and protocol, no fingerprint) and plain TTUR files are
    refused with a message saying to regenerate; explicitly allowed, they are compared,
    but what both sides record is still checked."""
    good = _identified(seed=5)
    x = _features(n=200, d=6, seed=6)
    old = str(tmp_path / "old.npz")
    np.savez(old, mu=x.mean(0), sigma=np.cov(x.astype(np.float64), rowvar=False),
             count=np.int64(200), extractor=np.str_("inception_v3"),
             resize_protocol=np.str_("protocol A"))
    ttur = str(tmp_path / "ttur.npz")
    np.savez(ttur, mu=x.mean(0), sigma=np.cov(x.astype(np.float64), rowvar=False))
    for path in (old, ttur):
        loaded = FeatureStatistics.load(path)
        for pair in ((good, loaded), (loaded, good)):
            with pytest.raises(fid_math.UnverifiedStatisticsError,
                               match=rf"{path}.*no extractor fingerprint.*regenerate") as err:
                fid_math.fid_from_statistics(*pair)
            assert "\n" not in str(err.value)
        assert np.isfinite(fid_math.fid_from_statistics(good, loaded, allow_unverified=True))
    stale = FeatureStatistics.load(old)
    stale.resize_protocol = "protocol B"
    with pytest.raises(fid_math.StatisticsMismatchError, match="resize protocol"):
        fid_math.fid_from_statistics(good, stale, allow_unverified=True)
    fresh = FeatureStatistics.from_features(x)  # in memory, no identity at all
    with pytest.raises(fid_math.UnverifiedStatisticsError, match="in-memory statistics"):
        fid_math.fid_from_statistics(fresh, fresh)


def test_npz_roundtrip_and_ttur_format(tmp_path):
    x = _features(n=50, d=4, seed=9)
    s = FeatureStatistics.from_features(x, extractor="mnist_classifier", resize_protocol="p")
    s.kid_features = x[:10]
    s.save(str(tmp_path / "a.npz"))
    loaded = FeatureStatistics.load(str(tmp_path / "a.npz"))
    np.testing.assert_array_equal(loaded.mu, s.mu)
    assert loaded.count == 50 and loaded.extractor == "mnist_classifier"
    assert loaded.kid_features.shape == (10, 4)
    np.savez(tmp_path / "ttur.npz", mu=s.mu, sigma=s.sigma)  # only the TTUR keys
    assert FeatureStatistics.load(str(tmp_path / "ttur.npz")).count is None
    np.savez(tmp_path / "bad.npz", mean=s.mu)
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['mu', 'sigma'\]"):
        FeatureStatistics.load(str(tmp_path / "bad.npz"))
