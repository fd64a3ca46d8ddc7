"""The preprocessing job's sharding plan (driver side): which split and shard every
record goes to, and the work units that write each shard.

Both assignments are pure functions of the record's key, so shards are byte-identical for
the same input on any runner. The split rule (``--split_by``, :data:`SPLIT_RULES`):
``hash`` (sha256 of the key against ``--validation_fraction``: train or validation) or
``top_folder`` (the key's first '/'-separated component: ``train/...`` -> train,
``test/...`` -> test; one of :data:`artifacts.dataset_format.SPLIT_NAMES`). The shard
is always a hash of the key.
"""
from __future__ import annotations

import hashlib
import math
import pickle
from typing import Sequence

from artifacts.dataset_format import SPLIT_NAMES
from beam_jobs.runtime import beam_fs
from beam_jobs.sources.raw_source import SourcePlan

TARGET_SHARD_PIXEL_BYTES = 64 * 2 ** 20  # default shard size: ~64 MiB of raw uint8 pixels
MAX_DEFAULT_SHARDS = 4096
RECORDS_PER_PART = 256  # records per work unit: many more units than workers

WorkUnit = tuple  # (split, shard, start, stop, part, num_parts)


def split_of(key: str, validation_fraction: float) -> str:
    """'validation' iff the first 8 bytes of sha256(key) / 2**64 < validation_fraction."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    return "validation" if u < validation_fraction else "train"


SPLIT_RULES = ("hash", "top_folder")
SPLIT_RULE_TEXT = {
    "hash": "validation iff int(sha256(key)[0:8], big-endian) / 2**64 < "
            "validation_fraction",
    "top_folder": "the key's first '/'-separated component (train, validation or test)",
}


def split_of_top_folder(key: str) -> str | None:
    """The key's first '/'-separated component if it is a split name, else None."""
    top, sep, _ = key.partition("/")
    return top if sep and top in SPLIT_NAMES else None


def assign_splits(keys: Sequence[str], split_by: str = "hash",
                  validation_fraction: float = 0.0) -> list[str]:
    """The split of every key by the rule ``split_by`` (:data:`SPLIT_RULES`).

    ``top_folder``: ValueError (one line) naming an example key when some key's top folder
    is not a split name.
    """
    if split_by == "hash":
        return [split_of(key, validation_fraction) for key in keys]
    if split_by != "top_folder":
        raise ValueError(f"split_by={split_by!r}: expected one of {', '.join(SPLIT_RULES)}")
    splits = [split_of_top_folder(key) for key in keys]
    strays = [key for key, split in zip(keys, splits) if split is None]
    if strays:
        top, sep, _ = strays[0].partition("/")
        where = f"top folder {top!r}" if sep else "no folder"
        raise ValueError(
            f"--split_by=top_folder: {len(strays)} of {len(keys)} keys are not under a folder "
            f"named {', '.join(SPLIT_NAMES)}, e.g. {strays[0]!r} ({where})")
    return splits


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

    ``splits[i]`` is the split of record i (:func:`assign_splits` of its key).

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
