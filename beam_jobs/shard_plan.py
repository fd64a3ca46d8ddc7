"""The preprocessing job's sharding plan (driver side): which split and shard every
record goes to, and the work units that write each shard.

Both assignments are pure functions of the record's key (sha256), so shards are
byte-identical for the same input on any runner.
"""
from __future__ import annotations

import hashlib
import math
import pickle
from typing import Sequence

from beam_jobs import beam_fs
from beam_jobs.raw_source import SourcePlan

TARGET_SHARD_PIXEL_BYTES = 64 * 2 ** 20  # default shard size: ~64 MiB of raw uint8 pixels
MAX_DEFAULT_SHARDS = 4096
RECORDS_PER_PART = 256  # records per work unit: many more units than workers

WorkUnit = tuple  # (split, shard, start, stop, part, num_parts)


def split_of(key: str, validation_fraction: float) -> str:
    """'validation' iff the first 8 bytes of sha256(key) / 2**64 < validation_fraction."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    return "validation" if u < validation_fraction else "train"


def shard_of(key: str, num_shards: int) -> int:
    """Shard index in [0, num_shards): bytes 8..16 of sha256(key), big-endian, mod N."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[8:16], "big") % num_shards


def default_num_shards(count: int, image_shape: Sequence[int]) -> int:
    """About TARGET_SHARD_PIXEL_BYTES of raw pixels per shard, at least 1."""
    per_record = int(image_shape[0]) * int(image_shape[1]) * int(image_shape[2])
    return max(1, min(MAX_DEFAULT_SHARDS, math.ceil(count * per_record / TARGET_SHARD_PIXEL_BYTES)))


def locators_file(plan_dir: str, split: str, index: int) -> str:
    """Where :func:`plan_parts` pickles the sorted locators of shard ``index`` of ``split``
    (any Beam filesystem path)."""
    return beam_fs.join(plan_dir, f"{split}-{index:05d}.pkl")


def plan_parts(plan: SourcePlan, splits: Sequence[str], shards: dict[str, int],
               plan_dir: str, records_per_part: int | None = None) -> list[WorkUnit]:
    """Driver side: puts every record in its shard and cuts shards into parts.

    ``splits[i]`` is the split of record i (``split_of`` of its key).

    Each shard's locators, sorted by record key, are pickled to
    ``plan_dir/<split>-<shard>.pkl`` through Beam's FileSystems (so the pipeline graph
    stays small on any runner and every worker can read them).
    Returns the work units ``(split, shard, start, stop, part, num_parts)``: records
    ``[start, stop)`` of that shard's sorted list.
    """
    records_per_part = records_per_part or RECORDS_PER_PART
    by_shard: dict[tuple[str, int], list] = {}
    for key, locator, split in zip(plan.keys, plan.locators, splits):
        by_shard.setdefault((split, shard_of(key, shards[split])), []).append((key, locator))
    units = []
    for (split, index), items in sorted(by_shard.items()):
        items.sort(key=lambda item: item[0])  # stable: equal keys keep the source order
        beam_fs.write_bytes(locators_file(plan_dir, split, index), pickle.dumps(
            [locator for _, locator in items], protocol=pickle.HIGHEST_PROTOCOL))
        num_parts = math.ceil(len(items) / records_per_part)
        units.extend((split, index, i * records_per_part,
                      min(len(items), (i + 1) * records_per_part), i, num_parts)
                     for i in range(num_parts))
    return units
