"""Checks a data set's files against its dataset.json (:mod:`artifacts.dataset_format`):
record counts from TFRecord frame headers, CRCs, SHA-256 per shard, the first image's
shape. Every failure is a :class:`~artifacts.dataset_format.DataSetDamaged` naming the
shard and what was expected.
"""
from __future__ import annotations

import os

from artifacts.dataset_format import DataSetDamaged, DatasetInfo, iter_tfrecord, masked_crc32c

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels decoded


def _rebuild_hint(info: DatasetInfo) -> str:
    return f"re-run beam_jobs.preprocess for {info.data_dir!r} or restore the file"


def scan_shard(path: str, check_data: bool = False) -> int:
    """The number of records of the TFRecord file ``path``, walking its frame headers (12
    bytes each; with ``check_data`` also every record's data CRC). Raises DataSetDamaged
    naming the shard and the byte offset of a truncated or corrupt frame."""
    import mmap
    import struct

    size = os.path.getsize(path)
    if size == 0:
        return 0
    name = os.path.basename(path)
    count, offset = 0, 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        while offset < size:
            if size - offset < 16:
                raise DataSetDamaged(f"shard {name} is truncated: {size - offset} stray bytes "
                                     f"at byte {offset} after record {count}")
            (length,) = struct.unpack_from("<Q", m, offset)
            (crc,) = struct.unpack_from("<I", m, offset + 8)
            if crc != masked_crc32c(m[offset:offset + 8]):
                raise DataSetDamaged(f"shard {name} is corrupt: bad record header at byte "
                                     f"{offset} (record {count})")
            end = offset + 12 + length + 4
            if end > size:
                raise DataSetDamaged(f"shard {name} is truncated: record {count} at byte "
                                     f"{offset} needs {end - size} more bytes")
            if check_data:
                (data_crc,) = struct.unpack_from("<I", m, end - 4)
                if data_crc != masked_crc32c(m[offset + 12:end - 4]):
                    raise DataSetDamaged(f"shard {name} is corrupt: record {count} at byte "
                                         f"{offset} fails its CRC")
            count, offset = count + 1, end
    return count


def _sha256_file(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def first_image_shape(path: str) -> tuple[int, int, int] | None:
    """(H, W, C) of the first record's PNG in shard ``path`` from its IHDR header (C as
    decoded without conversion), or None for an empty shard or a record without a PNG."""
    import struct

    for record in iter_tfrecord(path):
        start = record.find(_PNG_SIGNATURE)
        ihdr = record[start + 8:start + 8 + 8 + 13] if start >= 0 else b""
        if len(ihdr) < 21 or ihdr[4:8] != b"IHDR":
            return None
        width, height = struct.unpack(">II", ihdr[8:16])
        return height, width, _PNG_CHANNELS.get(ihdr[17], 0)
    return None


def _check_shape(info: DatasetInfo, path: str) -> None:
    """DataSetDamaged if shard ``path``'s first image is not ``info.image_shape`` in height
    and width (channels are converted on decoding)."""
    shape = first_image_shape(path)
    h, w, c = info.image_shape
    if shape is not None and shape[:2] != (h, w):
        raise DataSetDamaged(
            f"dataset.json of {info.data_dir!r} says image_shape {[h, w, c]} but shard "
            f"{os.path.basename(path)} holds {shape[0]}x{shape[1]}x{shape[2]} images; "
            f"{_rebuild_hint(info)}")


def verify_data_set(info: DatasetInfo, full: bool = False,
                    splits: list[str] | None = None) -> dict[str, int]:
    """Checks the shards of ``splits`` (default all) against dataset.json: each split's
    count is the sum of its shards', each shard holds whole frames and as many records as
    listed (a walk of the 12-byte frame headers; seconds for millions of records) and its
    first image has ``image_shape``; with ``full`` also every record's CRC and each
    shard's sha256. Raises DataSetDamaged (one line naming the shard) on the first
    mismatch; returns {"shards", "records", "bytes"} checked."""
    shards_json = {s: info.raw["splits"][s].get("shards", []) for s in info.split_counts}
    done = {"shards": 0, "records": 0, "bytes": 0}
    for split in splits or sorted(info.split_counts):
        entries = shards_json.get(split, [])
        listed = sum(int(e.get("count", 0)) for e in entries)
        if listed != info.split_counts[split]:
            raise DataSetDamaged(
                f"dataset.json of {info.data_dir!r}: split {split!r} says {info.split_counts[split]} "
                f"records but its shards list {listed}; {_rebuild_hint(info)}")
        for entry, path in zip(entries, info.split_files[split]):
            found = scan_shard(path, check_data=full)
            if found != int(entry.get("count", 0)):
                raise DataSetDamaged(
                    f"shard {entry['file']} of {info.data_dir!r} holds {found} records, "
                    f"dataset.json says {entry.get('count')}; {_rebuild_hint(info)}")
            if full and entry.get("sha256") and _sha256_file(path) != entry["sha256"]:
                raise DataSetDamaged(
                    f"shard {entry['file']} of {info.data_dir!r} does not match the sha256 in "
                    f"dataset.json; {_rebuild_hint(info)}")
            if found:
                _check_shape(info, path)
            done["shards"] += 1
            done["records"] += found
            done["bytes"] += os.path.getsize(path)
    return done


def locate_damage(info: DatasetInfo, splits: list[str] | None = None) -> str | None:
    """The first problem of :func:`verify_data_set` with every record's CRC checked (not
    the sha256), as one line, or None if the shards of ``splits`` are sound."""
    try:
        verify_data_set(info, full=False, splits=splits)
        for split in splits or sorted(info.split_counts):
            for path in info.split_files[split]:
                scan_shard(path, check_data=True)
    except DataSetDamaged as err:
        return str(err)
    return None
