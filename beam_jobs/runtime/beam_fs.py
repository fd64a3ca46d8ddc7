"""Small helpers over ``apache_beam.io.filesystems.FileSystems``, so the Beam jobs read and
write every file (inputs, plans, fragments, shards, statistics) on any Beam filesystem:
local or mounted paths, ``gs://``, ``s3://``, ``hdfs://`` or any registered scheme.

Object stores have no directories and no atomic renames: nothing here relies on either.
Files are written whole under their final names (an object appears when its upload
completes) and the driver checks names and sizes before it commits a result.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

RAW = CompressionTypes.UNCOMPRESSED  # never guess a compression from a file name


def is_local(path: str) -> bool:
    """Whether ``path`` is a plain local (or mounted) path, not ``scheme://...``."""
    return FileSystems.get_scheme(path) in (None, "file")


def absolute(path: str | os.PathLike) -> str:
    """``os.path.abspath`` of a local path (``~`` expanded); other URLs unchanged."""
    path = os.fspath(path)
    return os.path.abspath(os.path.expanduser(path)) if is_local(path) else path


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def split(path: str) -> tuple[str, str]:
    """(parent, base name) of a file or directory path, on any filesystem."""
    return FileSystems.split(path.rstrip("/") if not is_local(path) else path)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=RAW) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` as the whole file ``path`` (parents created where they exist)."""
    with FileSystems.create(path, compression_type=RAW) as f:
        f.write(data)


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path).decode("utf-8"))


def write_json(obj: Any, path: str) -> None:
    write_bytes(path, json.dumps(obj).encode("utf-8"))


def list_files(directory: str) -> dict[str, int]:
    """{path relative to ``directory`` ('/'-separated): size in bytes} of every file under
    it, recursively; {} if there is none (or no such directory)."""
    if is_local(directory) and not os.path.isdir(directory):
        return {}
    prefix = join(directory, "")
    try:
        results = FileSystems.match([join(directory, "**")])
    except BeamIOError:
        return {}
    out = {}
    for m in results[0].metadata_list:
        rel = m.path[len(prefix):] if m.path.startswith(prefix) else split(m.path)[1]
        out[rel.replace(os.sep, "/")] = int(m.size_in_bytes)
    return out


def sizes(paths: list[str]) -> dict[str, int]:
    """{path: size in bytes} of the files that exist among ``paths``."""
    if not paths:
        return {}
    out = {}
    for r in FileSystems.match(paths):
        for m in r.metadata_list:
            out[m.path] = int(m.size_in_bytes)
    return out


def delete_tree(directory: str) -> None:
    """Deletes every file under ``directory`` (and, on a local filesystem, the directory
    itself); a missing directory is fine."""
    files = [join(directory, rel) for rel in list_files(directory)]
    if files:
        FileSystems.delete(files)
    if is_local(directory):
        shutil.rmtree(directory, ignore_errors=True)


def move(sources: list[str], destinations: list[str]) -> None:
    """Moves files: ``FileSystems.rename`` (atomic on local filesystems; copy + delete on
    object stores), falling back to copy + delete where rename fails (another device)."""
    if not sources:
        return
    try:
        FileSystems.rename(sources, destinations)
    except BeamIOError:
        FileSystems.copy(sources, destinations)
        FileSystems.delete(sources)


def make_dirs(directory: str) -> None:
    """Creates a local directory (and parents); a no-op where directories do not exist."""
    if is_local(directory):
        os.makedirs(directory, exist_ok=True)
