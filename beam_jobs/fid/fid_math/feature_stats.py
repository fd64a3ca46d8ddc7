"""A Gaussian fit of extractor features (mu [d], sigma [d, d], float64) and its ``.npz`` file."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs.fid.fid_math.comparability import StatisticsError
from beam_jobs.fid.fid_math.npz_limits import check_gaussian, load_npz
from beam_jobs.fid.fid_math.sufficient import SufficientStatistics

#: Version of the statistics ``.npz`` layout; 2 added the extractor fingerprint and the
#: image shape (files without ``format_version`` are version 1 or foreign).
STATS_FORMAT_VERSION = 2


@dataclasses.dataclass
class FeatureStatistics:
    """A Gaussian fit of extractor features: ``mu`` float64 [d], ``sigma`` float64 [d, d].

    Saved as ``.npz`` with keys ``mu`` and ``sigma`` (the TTUR / pytorch-fid format) plus
    the identity of what was measured: ``extractor`` (name), ``extractor_fingerprint``
    (content hash of the extractor, :mod:`beam_jobs.fid.identity`), ``resize_protocol``,
    ``image_shape`` (``"HxWxC"`` of the images fed to the extractor, or
    ``"mixed:..."``), ``count`` (sample count), ``format_version``; and optionally
    ``kid_features`` (a float32 [n, d] sample of the features, for KID against this set)
    and ``pr_features`` (a float32 [n, d] deterministic subset of the features, for
    precision and recall against this set).
    ``source`` is the path the statistics were loaded from (not saved).

    Comparisons (:func:`fid_from_statistics`) refuse statistics whose identities differ
    and, unless explicitly allowed, statistics without a fingerprint (files written
    before fingerprints were recorded, plain TTUR files, in-memory fits): see
    :func:`check_comparable`.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None
    extractor: str = ""
    resize_protocol: str = ""
    kid_features: np.ndarray | None = None
    extractor_fingerprint: str = ""
    image_shape: str = ""
    source: str = ""
    pr_features: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def describe(self) -> str:
        """How messages name these statistics: the file, or 'in-memory statistics'."""
        return f"statistics {self.source!r}" if self.source else "in-memory statistics"

    @classmethod
    def from_sufficient(cls, stats: SufficientStatistics, **kwargs) -> "FeatureStatistics":
        mu, sigma = stats.gaussian()
        return cls(mu=mu, sigma=sigma, count=stats.count, **kwargs)

    @classmethod
    def from_features(cls, features: np.ndarray, **kwargs) -> "FeatureStatistics":
        """Fit of a feature matrix [N, d] (in process; the reference computation)."""
        return cls.from_sufficient(SufficientStatistics().add(features), **kwargs)

    def save(self, path: str) -> None:
        """Writes the ``.npz`` (``mu``, ``sigma``, ``count`` and the identity metadata) to
        ``path``, a local path or a URL of any Beam filesystem (``gs://...``)."""
        arrays = {"mu": self.mu, "sigma": self.sigma,
                  "count": np.int64(-1 if self.count is None else self.count),
                  "extractor": np.str_(self.extractor),
                  "extractor_fingerprint": np.str_(self.extractor_fingerprint),
                  "resize_protocol": np.str_(self.resize_protocol),
                  "image_shape": np.str_(self.image_shape),
                  "format_version": np.int64(STATS_FORMAT_VERSION)}
        if self.kid_features is not None:
            arrays["kid_features"] = np.asarray(self.kid_features, np.float32)
        if self.pr_features is not None:
            arrays["pr_features"] = np.asarray(self.pr_features, np.float32)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(buf.getvalue())

    @classmethod
    def load(cls, path: str) -> "FeatureStatistics":
        """Reads a ``.npz`` with at least ``mu`` [d] and ``sigma`` [d, d] (TTUR format) from
        a local path or a URL of any Beam filesystem. Array headers are checked before
        anything is allocated and ``sigma`` must be a finite, symmetric, positive
        semi-definite covariance (:mod:`beam_jobs.fid.fid_math.npz_limits`).

        Missing metadata reads as "" (unknown); whether such statistics may be compared
        is decided by :func:`check_comparable`, not here.
        """
        if not FileSystems.exists(path):
            raise FileNotFoundError(f"statistics file {path!r} does not exist")
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            raw = f.read()
        with load_npz(raw, str(path)) as data:  # headers checked before any allocation
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise StatisticsError(f"{path!r} lacks key(s) {sorted(missing)}; expected an "
                                      f".npz with 'mu' [d] and 'sigma' [d, d], found {data.files}")

            def text(key: str) -> str:
                return str(data[key]) if key in data.files else ""

            mu = np.asarray(data["mu"], np.float64)
            sigma = np.asarray(data["sigma"], np.float64)
            count = int(data["count"]) if "count" in data.files else None
            out = cls(
                mu=mu, sigma=sigma,
                count=None if count is None or count < 0 else count,
                extractor=text("extractor"), resize_protocol=text("resize_protocol"),
                kid_features=(np.asarray(data["kid_features"])
                              if "kid_features" in data.files else None),
                extractor_fingerprint=text("extractor_fingerprint"),
                image_shape=text("image_shape"), source=str(path),
                pr_features=(np.asarray(data["pr_features"])
                             if "pr_features" in data.files else None))
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise StatisticsError(f"{path!r}: mu {mu.shape} and sigma {sigma.shape} do not fit "
                                  "(expected [d] and [d, d])")
        check_gaussian(mu, sigma, str(path))
        pr = out.pr_features
        if pr is not None and (pr.ndim != 2 or pr.shape[1] != mu.shape[0]
                               or not np.issubdtype(pr.dtype, np.floating)):
            raise StatisticsError(f"{path!r}: pr_features {pr.shape} {pr.dtype} do not fit mu "
                                  f"{mu.shape} (expected float [n, {mu.shape[0]}])")
        return out
