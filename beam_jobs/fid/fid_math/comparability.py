"""Whether two feature statistics may be compared: the errors, and the identity checks
(extractor name and fingerprint, resize protocol, image shape, feature dimension)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beam_jobs.fid.fid_math.feature_stats import FeatureStatistics


class StatisticsError(ValueError):
    """Statistics that cannot be used as asked: an unreadable file, or a pair that is not
    comparable (a user error; CLIs print its one-line message, no traceback)."""


class StatisticsMismatchError(StatisticsError):
    """Two statistics from different extractors, protocols, image shapes or dimensions."""


class UnverifiedStatisticsError(StatisticsError):
    """Statistics without an extractor fingerprint, so their origin cannot be checked."""


def _short(fingerprint: str) -> str:
    """``kind-sha256:0123456789ab...`` for messages."""
    head, _, digest = fingerprint.rpartition(":")
    return f"{head}:{digest[:12]}..." if head else fingerprint[:24]


def check_identity(stats: FeatureStatistics, *, against: str, extractor: str,
                   fingerprint: str, resize_protocol: str, image_shape: str = "",
                   dim: int | None = None, allow_unverified: bool = False) -> None:
    """Raises unless ``stats`` were measured like ``against`` (a description for the
    message): same extractor name, fingerprint and resize protocol, and, where both are
    known, the same image shape and feature dimension.

    Without a fingerprint on ``stats`` it raises :class:`UnverifiedStatisticsError`
    (regenerate the file), unless ``allow_unverified``: then only the fields both sides
    record are compared. Mismatches raise :class:`StatisticsMismatchError`. Messages are
    one line.
    """
    what = stats.describe()
    if not stats.extractor_fingerprint and not allow_unverified:
        raise UnverifiedStatisticsError(
            f"{what} record no extractor fingerprint (written before statistics carried "
            "one, or a plain mu/sigma file), so their extractor cannot be checked; "
            "regenerate them with `python -m beam_jobs.fid ... --output_stats=PATH` and the "
            "extractor you compare with (beam_jobs.fid --allow_unverified_stats uses them "
            "unchecked)")
    if stats.extractor and extractor and stats.extractor != extractor:
        raise StatisticsMismatchError(
            f"{what} come from extractor {stats.extractor!r}, {against} from {extractor!r}: "
            "statistics from different extractors cannot be compared")
    if stats.extractor_fingerprint and fingerprint and stats.extractor_fingerprint != fingerprint:
        raise StatisticsMismatchError(
            f"{what} were computed with a different {stats.extractor or 'extractor'} "
            f"(fingerprint {_short(stats.extractor_fingerprint)}) than {against} "
            f"({_short(fingerprint)}): regenerate them with the same extractor weights")
    if stats.resize_protocol and resize_protocol and stats.resize_protocol != resize_protocol:
        raise StatisticsMismatchError(
            f"{what} used resize protocol {stats.resize_protocol!r}, {against} "
            f"{resize_protocol!r}: statistics with different preprocessing cannot be compared")
    if stats.image_shape and image_shape and stats.image_shape != image_shape:
        raise StatisticsMismatchError(
            f"{what} are of {stats.image_shape} images, {against} of {image_shape} images: "
            "the extractor resizes them differently, so FID between them is biased; "
            "preprocess both to one image size")
    if dim is not None and dim > 0 and stats.dim != dim:
        raise StatisticsMismatchError(
            f"{what} have feature dimension {stats.dim}, {against} {dim}")


def check_comparable(a: FeatureStatistics, b: FeatureStatistics, *,
                     allow_unverified: bool = False) -> None:
    """Raises :class:`StatisticsError` unless ``a`` and ``b`` may be compared: both
    fingerprinted (unless ``allow_unverified``) and with equal identities (see
    :func:`check_identity`)."""
    if not b.extractor_fingerprint and not allow_unverified:
        check_identity(b, against=a.describe(), extractor="", fingerprint="",
                       resize_protocol="")  # raises UnverifiedStatisticsError
    check_identity(a, against=b.describe(), extractor=b.extractor,
                   fingerprint=b.extractor_fingerprint, resize_protocol=b.resize_protocol,
                   image_shape=b.image_shape, dim=b.dim, allow_unverified=allow_unverified)
