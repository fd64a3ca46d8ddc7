"""The preprocessing job's directories: the output directory's checks, the work
directory (where fragments and shards are written before the commit) with its owner file
and stale-directory clean-up, and the commit of a finished data set into the output
directory.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid

from apache_beam.io.filesystems import FileSystems

from artifacts import dataset_format
from beam_jobs.preprocess import tfds_metadata
from beam_jobs.runtime import beam_fs

PLAN_DIR, PARTS_DIR, SHARDS_DIR = "plan", "parts", "shards"  # in a work directory
COMMIT_MARKER = "_COMMITTING.json"  # in output_dir while the driver moves a data set in

log = logging.getLogger(__name__)


def check_output_dir(output_dir: str, overwrite: bool) -> dict[str, int]:
    """The files already in output_dir ({relative name: bytes}); refuses a directory that
    is not a data set (or a data set without ``overwrite``)."""
    if beam_fs.is_local(output_dir) and os.path.exists(output_dir) \
            and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"output_dir {output_dir!r} exists and is not a directory")
    existing = beam_fs.list_files(output_dir)
    if existing:
        if dataset_format.DATASET_JSON not in existing and COMMIT_MARKER not in existing:
            raise FileExistsError(
                f"output_dir {output_dir!r} is not empty and holds no "
                f"{dataset_format.DATASET_JSON}; refusing to replace a directory that is not "
                "a data set")
        if not overwrite:
            raise FileExistsError(
                f"output_dir {output_dir!r} already holds a data set"
                + (" (an interrupted commit)" if COMMIT_MARKER in existing else "")
                + "; pass --overwrite (overwrite=True) to replace it")
    return existing


def new_work_dir(output_dir: str, temp_location: str | None) -> str:
    """A fresh work directory: under ``--temp_location`` when given, else a hidden sibling
    of output_dir (same filesystem, so the final moves are cheap renames locally)."""
    tag = uuid.uuid4().hex[:12]
    if temp_location:
        return beam_fs.join(beam_fs.absolute(temp_location), f"preprocess-{tag}")
    parent, base = beam_fs.split(output_dir)
    return beam_fs.join(parent, f".{base}.work-{tag}")


OWNER_FILE = "owner.json"  # in a work directory: the host and pid of the job using it
STALE_WORK_AGE_S = 24 * 3600  # a work directory without owner file is stale after a day


def write_owner(work: str) -> None:
    beam_fs.write_json({"host": socket.gethostname(), "pid": os.getpid()},
                       beam_fs.join(work, OWNER_FILE))


def _owner_gone(work: str) -> bool:
    """Whether the local work directory ``work`` belongs to no running job: its owner
    process (on this host) is dead, or it has no owner file and is over a day old."""
    try:
        with open(os.path.join(work, OWNER_FILE)) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return time.time() - os.path.getmtime(work) > STALE_WORK_AGE_S
    if owner.get("host") != socket.gethostname():
        return False  # another machine's job: not ours to judge
    try:
        os.kill(int(owner.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def remove_stale_work_dirs(output_dir: str) -> list[str]:
    """Deletes the work directories (``.<output>.work-*`` siblings) that killed jobs left
    behind (:func:`_owner_gone`); one log line each; returns them. Local output only."""
    if not beam_fs.is_local(output_dir):
        return []
    parent, base = os.path.split(output_dir.rstrip(os.sep))
    prefix = f".{base}.work-"
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    for name in sorted(names):
        work = os.path.join(parent, name)
        if name.startswith(prefix) and os.path.isdir(work) and _owner_gone(work):
            shutil.rmtree(work, ignore_errors=True)
            log.info("removed %s, the work directory of a preprocess job that is gone", work)
            removed.append(work)
    return removed


def commit(work: str, output_dir: str, existing: dict[str, int], shard_entries: list[dict],
            info: dict) -> None:
    """Moves the checked shards of ``work`` into output_dir and writes the metadata last.

    Order: a marker (:data:`COMMIT_MARKER`) first, then the old data set's dataset.json,
    then its other files are deleted, the new shards are moved in (renames locally, copy +
    delete on object stores) and their sizes checked under the final names; TFDS metadata
    and dataset.json come last, then the marker goes. A reader never sees a dataset.json
    next to shards it does not describe; an interrupted commit leaves the marker and no
    dataset.json (a re-run with --overwrite replaces it).
    """
    beam_fs.make_dirs(output_dir)
    marker = beam_fs.join(output_dir, COMMIT_MARKER)
    beam_fs.write_json({"work_dir": work, "shards": len(shard_entries)}, marker)
    old = [beam_fs.join(output_dir, rel) for rel in sorted(existing) if rel != COMMIT_MARKER]
    old_json = beam_fs.join(output_dir, dataset_format.DATASET_JSON)
    if old_json in old:
        FileSystems.delete([old_json])
        old.remove(old_json)
    if old:
        FileSystems.delete(old)
    names = [e["file"] for e in shard_entries]
    beam_fs.move([beam_fs.join(work, SHARDS_DIR, n) for n in names],
                 [beam_fs.join(output_dir, n) for n in names])
    finals = beam_fs.sizes([beam_fs.join(output_dir, n) for n in names])
    for e in shard_entries:
        got = finals.get(beam_fs.join(output_dir, e["file"]))
        if got != e["num_bytes"]:
            raise RuntimeError(f"shard {e['file']} in {output_dir!r} holds {got} bytes after "
                               f"the commit, {e['num_bytes']} were written; the data set is "
                               "not committed (re-run with --overwrite)")
    tfds_metadata.write_tfds_metadata(output_dir, info)
    write_dataset_json(output_dir, info)
    FileSystems.delete([marker])


def write_dataset_json(data_dir: str, info: dict) -> None:
    """dataset_format.write_dataset_json (which checks the content), on any filesystem."""
    with tempfile.TemporaryDirectory(prefix="dataset-json-") as scratch:
        local = dataset_format.write_dataset_json(scratch, info)
        with open(local, "rb") as f:
            beam_fs.write_bytes(beam_fs.join(data_dir, dataset_format.DATASET_JSON), f.read())
