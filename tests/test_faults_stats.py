"""Fault injection (issue 26 item 9): hostile or broken ``.npz`` statistics are one line,
never a traceback, an allocation of the size a header claims, or a meaningless FID."""
from __future__ import annotations

import io
import resource
import zipfile

import numpy as np
import pytest

from beam_jobs.fid import results as fid_results
from beam_jobs.fid.fid_math import StatisticsError
from beam_jobs.fid.fid_math.feature_stats import FeatureStatistics


def _stats(d: int = 8, seed: int = 0) -> FeatureStatistics:
    features = np.random.default_rng(seed).normal(size=(64, d))
    return FeatureStatistics.from_features(features, extractor="mnist_classifier",
                                           extractor_fingerprint="fp:0", resize_protocol="p",
                                           image_shape="16x16x1")


def _npz_declaring(path, shape: tuple[int, ...], dtype=np.float64) -> None:
    """An .npz of ``mu`` and a ``sigma`` member whose .npy header declares ``shape`` but
    which holds only a few bytes of data (what a hostile or damaged file can say)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(dtype)), "fortran_order": False, "shape": shape})
    mu = io.BytesIO()
    np.save(mu, np.zeros(shape[0]))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mu.npy", mu.getvalue())
        z.writestr("sigma.npy", b"\x93NUMPY" + bytes([1, 0]) + header.getvalue()[8:] + b"\0" * 64)


def test_a_npy_renamed_npz_is_one_error(tmp_path):
    """Before: TypeError ('ndarray' object does not support the context manager protocol)."""
    path = tmp_path / "stats.npz"
    with open(path, "wb") as f:
        np.save(f, np.eye(3))
    with pytest.raises(StatisticsError, match="single .npy array, not an .npz"):
        FeatureStatistics.load(str(path))


def test_a_huge_declared_array_is_refused_before_allocation(tmp_path):
    """A 60000 x 60000 float64 sigma declared in a 1 KB file: refused from its header with
    no allocation (the address space is capped at +2 GiB for the call, so numpy's attempt
    at 26.8 GiB would fail with MemoryError). Before: numpy tried to allocate it."""
    path = tmp_path / "bomb.npz"
    _npz_declaring(path, (60000, 60000))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), hard))
    try:
        with pytest.raises(StatisticsError, match=r"declares 27465\.8 MiB.*refusing"):
            FeatureStatistics.load(str(path))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_declared_size_larger_than_the_stored_data_is_refused(tmp_path):
    """A header may claim more than the member holds even below the size limit (an
    allocation that fits but is not backed by data): refused too."""
    path = tmp_path / "short.npz"
    _npz_declaring(path, (1000, 1000))
    with pytest.raises(StatisticsError, match="declares 7.6 MiB of data .stored: 0.0 MiB"):
        FeatureStatistics.load(str(path))


def test_internal_result_files_are_checked_the_same_way(tmp_path):
    path = tmp_path / "suff.npz"
    _npz_declaring(path, (60000, 60000))
    with pytest.raises(StatisticsError, match="refusing to allocate"):
        fid_results.read_sufficient(str(path))


@pytest.mark.parametrize("damage,message", [
    (lambda s: s.sigma.__setitem__((0, 1), s.sigma[0, 1] + 1.0), "not symmetric"),
    (lambda s: s.sigma.__setitem__((2, 2), np.nan), "NaN or Inf"),
    (lambda s: s.mu.__setitem__(0, np.inf), "NaN or Inf"),
    (lambda s: s.sigma.__isub__(np.eye(8) * 10 * np.abs(s.sigma).max()), "negative eigenvalue"),
], ids=["asymmetric", "nan_sigma", "inf_mu", "not_psd"])
def test_a_sigma_that_is_no_covariance_is_refused(tmp_path, damage, message):
    """Before: accepted, and an asymmetric sigma gave FID -2.46e-06."""
    stats = _stats()
    damage(stats)
    path = tmp_path / "bad.npz"
    stats.save(str(path))
    with pytest.raises(StatisticsError, match=message):
        FeatureStatistics.load(str(path))


@pytest.mark.filterwarnings("ignore:only 16 feature vectors")
def test_good_statistics_still_load(tmp_path):
    """A fit of fewer samples than dimensions (singular sigma, eigenvalues ~ -1e-15) is a
    covariance within tolerance."""
    stats = _stats(d=32)  # 64 samples in 32 dims: fine; and 16 samples in 32 dims below
    few = FeatureStatistics.from_features(np.random.default_rng(1).normal(size=(16, 32)))
    for i, s in enumerate((stats, few)):
        s.save(str(tmp_path / f"{i}.npz"))
        loaded = FeatureStatistics.load(str(tmp_path / f"{i}.npz"))
        np.testing.assert_array_equal(loaded.sigma, s.sigma)
