"""Raw image sources of the preprocessing job, by ``--source`` name.

One class per kind (a :class:`~beam_jobs.sources.raw_source.RawSource`: driver-side planning and
worker-side reading, see :mod:`beam_jobs.sources.raw_source`):

* ``lsun_lmdb``: :class:`~beam_jobs.sources.lmdb_source.LsunLmdb`;
* ``imagenet64_npz``, ``mnist_idx``: :class:`~beam_jobs.sources.array_sources.Imagenet64Npz`,
  :class:`~beam_jobs.sources.array_sources.MnistIdx`;
* ``image_folder``, ``image_zip``: :class:`~beam_jobs.sources.file_sources.ImageFolder`,
  :class:`~beam_jobs.sources.file_sources.ImageZip`;
* ``tfds``: :class:`~beam_jobs.sources.tfds_source.TfdsSource` (a prepared local TFDS data set;
  planned with the options of ``TfdsSource.OPTIONS``).

``image_folder`` and ``image_zip`` also read several inputs as one (:func:`plan_source`
with a list of paths).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from beam_jobs.sources.array_sources import Imagenet64Npz, MnistIdx
from beam_jobs.sources.file_sources import ImageFolder, ImageZip
from beam_jobs.sources.lmdb_source import LsunLmdb
from beam_jobs.sources.raw_source import (
    DEFAULT_MAX_MEMBER_BYTES,
    MultiInputReader,
    RawSource,
    SourcePlan,
    merge_plans,
)
from beam_jobs.sources.tfds_source import TfdsSource

SOURCES: dict[str, type[RawSource]] = {
    cls.kind: cls for cls in (LsunLmdb, Imagenet64Npz, ImageFolder, ImageZip, MnistIdx,
                              TfdsSource)}
SOURCE_KINDS = tuple(SOURCES)  # lsun_lmdb, imagenet64_npz, image_folder, image_zip, mnist_idx, tfds


def source_class(kind: str) -> type[RawSource]:
    """The class of a ``--source`` kind; ValueError naming the kinds for an unknown one."""
    if kind not in SOURCES:
        raise ValueError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    return SOURCES[kind]


def multi_input_kinds() -> tuple[str, ...]:
    """The kinds that read several inputs in one job (``--input=a,b``)."""
    return tuple(k for k, cls in SOURCES.items() if cls.MULTI_INPUT)


def plan_source(kind: str, path: str | Sequence[str] | None,
                options: Mapping[str, Any] | None = None) -> SourcePlan:
    """Validates ``path`` as a ``kind`` input and lists its keys and locators (driver side).

    ``path``: one input, or a sequence of inputs of the same kind read as one data set
    (kinds in :func:`multi_input_kinds`; :func:`beam_jobs.sources.raw_source.merge_plans`: keys
    unique across inputs, labels on the union of the inputs' label names).
    ``options``: keyword options of the kind's planner (its ``OPTIONS``; e.g. tfds
    ``name``, ``data_dir``, ``split``); None values are left at the planner's defaults.
    """
    cls = source_class(kind)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        raise ValueError(f"source {kind!r} takes no option(s) {', '.join(unknown)}"
                         + (f"; it takes {', '.join(cls.OPTIONS)}" if cls.OPTIONS else ""))
    if path is None or isinstance(path, str):
        return cls.plan(path, **options) if options else cls.plan(path)
    paths = list(path)
    if not paths:
        raise ValueError(f"--source={kind}: no input given")
    if len(paths) == 1:
        return plan_source(kind, paths[0], options)
    if not cls.MULTI_INPUT:
        raise ValueError(f"--source={kind} reads one input, got {len(paths)} "
                         f"({', '.join(map(repr, paths))}); several comma-separated inputs "
                         f"work with --source={' or --source='.join(multi_input_kinds())}")
    plans = [plan_source(kind, p, options) for p in paths]
    labels, label_names = cls.merged_labels(plans)
    return merge_plans(plans, labels, label_names)


def open_reader(kind: str, input_path: str | Sequence[str],
                max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
                ) -> RawSource | MultiInputReader:
    """A random-access reader of one input, or of the inputs of a plan of several
    (``SourcePlan.reader_input``; worker side; ``close()`` it at teardown)."""
    cls = source_class(kind)
    if isinstance(input_path, str):
        return cls(input_path, max_member_bytes)
    return MultiInputReader([cls(p, max_member_bytes) for p in input_path])


__all__ = ["DEFAULT_MAX_MEMBER_BYTES", "SOURCE_KINDS", "SOURCES", "SourcePlan", "RawSource",
           "multi_input_kinds", "open_reader", "plan_source", "source_class"]
