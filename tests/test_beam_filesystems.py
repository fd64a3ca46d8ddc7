"""The Beam jobs on a filesystem that is not the local one: ``testfs://`` below is a Beam
``FileSystem`` over a separate directory tree with object-store semantics (no
directories, objects appear only when their writer closes, rename = copy + delete), so
any code path that falls back to ``os.path``/``open`` on a job path fails or writes into
the working directory (checked empty). The jobs on it: test_beam_filesystems_preprocess.py
(with the byte-identical golden output of the preprocessing job) and
test_beam_filesystems_fid.py.

FnApiRunner runs its workers in this process in the ``in_memory`` and
``multi_threading`` modes the tests use, so they see the scheme registered here.
"""
from __future__ import annotations

import io
import os

import pytest
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems

from beam_jobs.runtime import beam_fs

ROOT_ENV = "ADE_TESTFS_ROOT"


class _Object(io.BytesIO):
    """A write channel: the object appears under its name only when closed."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def close(self):
        if not self.closed:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            tmp = f"{self._path}.upload-{id(self)}"
            with open(tmp, "wb") as f:
                f.write(self.getvalue())
            os.replace(tmp, self._path)
        super().close()


class TestFileSystem(FileSystem):
    """``testfs://a/b`` is ``$ADE_TESTFS_ROOT/a/b``; an object store's semantics."""

    __test__ = False  # not a pytest class

    @classmethod
    def scheme(cls):
        return "testfs"

    @staticmethod
    def _local(path: str) -> str:
        assert path.startswith("testfs://"), path
        return os.path.join(os.environ[ROOT_ENV], path[len("testfs://"):])

    def join(self, basepath, *paths):
        out = basepath
        for p in paths:
            out = out.rstrip("/") + "/" + p.lstrip("/")
        return out

    def split(self, path):
        path = path.rstrip("/")
        head, _, tail = path.rpartition("/")
        return (head if "://" in head else path[:len("testfs://")]), tail

    def mkdirs(self, path):
        pass  # no directories

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        root = os.environ[ROOT_ENV]
        for dirpath, _, files in os.walk(root):
            for name in files:
                if ".upload-" in name:
                    continue
                local = os.path.join(dirpath, name)
                url = "testfs://" + os.path.relpath(local, root).replace(os.sep, "/")
                if url.startswith(dir_or_prefix):
                    yield FileMetadata(url, os.path.getsize(local), os.path.getmtime(local))

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        assert compression_type in (CompressionTypes.AUTO, CompressionTypes.UNCOMPRESSED)
        return _Object(self._local(path))

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        try:
            return open(self._local(path), "rb")
        except OSError as e:
            raise BeamIOError("open failed", {path: e}) from e

    def copy(self, source_file_names, destination_file_names):
        for s, d in zip(source_file_names, destination_file_names):
            with self.open(s) as src, self.create(d) as dst:
                dst.write(src.read())

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)  # not atomic, as on GCS
        self.delete(source_file_names)

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        errors = {}
        for p in paths:
            local = self._local(p)
            if os.path.isfile(local):
                os.remove(local)
            else:  # a "directory": every object under the prefix
                objects = [m.path for m in self._list(p.rstrip("/") + "/")]
                if not objects:
                    errors[p] = FileNotFoundError(p)
                for o in objects:
                    os.remove(self._local(o))
        if errors:
            raise BeamIOError("delete failed", errors)


@pytest.fixture()
def testfs(tmp_path, monkeypatch):
    """(root of the testfs tree, an empty working directory that must stay empty)."""
    root = tmp_path / "testfs_root"
    root.mkdir()
    monkeypatch.setenv(ROOT_ENV, str(root))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield root
    assert os.listdir(cwd) == []  # nothing fell back to a local relative path


def objects(root, prefix: str = "") -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel.startswith(prefix):
                with open(os.path.join(dirpath, name), "rb") as f:
                    out[rel[len(prefix):]] = f.read()
    return out


# -- the scheme itself behaves as intended --------------------------------------------------

def test_testfs_is_a_separate_tree_without_dirs(testfs):
    assert FileSystems.get_scheme("testfs://a/b") == "testfs"
    beam_fs.write_bytes("testfs://a/b/c.bin", b"xyz")
    assert (testfs / "a" / "b" / "c.bin").read_bytes() == b"xyz"
    assert beam_fs.list_files("testfs://a") == {"b/c.bin": 3}
    assert beam_fs.read_bytes("testfs://a/b/c.bin") == b"xyz"
    assert not os.path.exists("testfs://a/b/c.bin")  # os.path cannot see it
    beam_fs.move(["testfs://a/b/c.bin"], ["testfs://d/e.bin"])
    assert beam_fs.list_files("testfs://a") == {} and beam_fs.exists("testfs://d/e.bin")
    beam_fs.delete_tree("testfs://d")
    assert objects(testfs) == {}
