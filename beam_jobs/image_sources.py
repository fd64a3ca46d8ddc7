"""Raw image sources of the preprocessing job, by ``--source`` name.

One class per kind (a :class:`~beam_jobs.raw_source.RawSource`: driver-side planning and
worker-side reading, see :mod:`beam_jobs.raw_source`):

* ``lsun_lmdb``: :class:`~beam_jobs.lmdb_source.LsunLmdb`;
* ``imagenet64_npz``, ``mnist_idx``: :class:`~beam_jobs.array_sources.Imagenet64Npz`,
  :class:`~beam_jobs.array_sources.MnistIdx`;
* ``image_folder``, ``image_zip``: :class:`~beam_jobs.file_sources.ImageFolder`,
  :class:`~beam_jobs.file_sources.ImageZip`;
* ``tfds``: :class:`~beam_jobs.tfds_source.TfdsSource` (a prepared local TFDS data set;
  planned with the options of ``TfdsSource.OPTIONS``).
"""
from __future__ import annotations

from typing import Any, Mapping

from beam_jobs.array_sources import Imagenet64Npz, MnistIdx
from beam_jobs.file_sources import ImageFolder, ImageZip
from beam_jobs.lmdb_source import LsunLmdb
from beam_jobs.raw_source import DEFAULT_MAX_MEMBER_BYTES, RawSource, SourcePlan
from beam_jobs.tfds_source import TfdsSource

SOURCES: dict[str, type[RawSource]] = {
    cls.kind: cls for cls in (LsunLmdb, Imagenet64Npz, ImageFolder, ImageZip, MnistIdx,
                              TfdsSource)}
SOURCE_KINDS = tuple(SOURCES)  # lsun_lmdb, imagenet64_npz, image_folder, image_zip, mnist_idx, tfds


def source_class(kind: str) -> type[RawSource]:
    """The class of a ``--source`` kind; ValueError naming the kinds for an unknown one."""
    if kind not in SOURCES:
        raise ValueError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    return SOURCES[kind]


def plan_source(kind: str, path: str | None, options: Mapping[str, Any] | None = None
                ) -> SourcePlan:
    """Validates ``path`` as a ``kind`` input and lists its keys and locators (driver side).

    ``options``: keyword options of the kind's planner (its ``OPTIONS``; e.g. tfds
    ``name``, ``data_dir``, ``split``); None values are left at the planner's defaults.
    """
    cls = source_class(kind)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        raise ValueError(f"source {kind!r} takes no option(s) {', '.join(unknown)}"
                         + (f"; it takes {', '.join(cls.OPTIONS)}" if cls.OPTIONS else ""))
    return cls.plan(path, **options) if options else cls.plan(path)


def open_reader(kind: str, input_path: str,
                max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> RawSource:
    """A random-access reader of one input (worker side; ``close()`` it at teardown)."""
    return source_class(kind)(input_path, max_member_bytes)


__all__ = ["DEFAULT_MAX_MEMBER_BYTES", "SOURCE_KINDS", "SOURCES", "SourcePlan", "RawSource",
           "open_reader", "plan_source", "source_class"]
