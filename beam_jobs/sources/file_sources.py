"""Raw sources of encoded image files: a folder (``image_folder``) or a zip
(``image_zip``), optionally with one subfolder per class.

Both read through Beam's FileSystems, so the folder or zip may be local, mounted or on any
Beam filesystem (``gs://...``). Which names are images is
:func:`artifacts.dataset_format.is_image_file`; a record's key
is its path relative to the root ('/'-separated) and its label the index of its parent
folder's name among the sorted names (when there are two or more; -1 otherwise).

Both take several inputs in one job (``--input=train.zip,test.zip``): the label names are
then the sorted union of the parent folder names over all inputs (two or more), so a class
folder has the same label in every input, also when another input lacks that class.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from typing import Iterator, Sequence

from apache_beam.io.filesystems import FileSystems

from artifacts.dataset_format import IMAGE_EXTENSIONS, is_image_file
from beam_jobs.runtime import beam_fs
from beam_jobs.sources.image_transform import BadImage
from beam_jobs.sources.raw_source import (
    DEFAULT_MAX_MEMBER_BYTES,
    RawSource,
    Record,
    SourcePlan,
    labels_from_parents,
    no_images,
    read_capped,
    require_exists,
    too_large,
)


class _FileSource(RawSource):
    """What both kinds share: labels from parent folder names, over several inputs too."""

    MULTI_INPUT = True

    @classmethod
    def merged_labels(cls, plans: Sequence[SourcePlan]
                      ) -> tuple[list[int], list[str] | None]:
        return labels_from_parents([key for p in plans for key in p.keys])


class ImageFolder(_FileSource):
    """``image_folder``: image files under a folder; hidden subfolders are skipped."""

    kind = "image_folder"
    what = (f"a folder of image files ({', '.join(IMAGE_EXTENSIONS)}), optionally in class "
            "subfolders")

    @classmethod
    def plan(cls, path: str) -> SourcePlan:
        root = require_exists(path, cls.what)
        if beam_fs.is_local(root) and not os.path.isdir(root):
            raise NotADirectoryError(f"input {path!r} is not a folder; expected {cls.what}")
        rel: list[str] = []
        sizes: dict[str, int] = {}
        skipped = 0
        for r, size in beam_fs.list_files(root).items():
            if any(part.startswith(".") for part in r.split("/")[:-1]):
                continue  # hidden subfolders are not read
            if is_image_file(r):
                rel.append(r)
                sizes[r] = size
            else:
                skipped += 1
        rel.sort()
        if not rel:
            raise no_images(path, cls.what)
        labels, names = labels_from_parents(rel)
        return SourcePlan(cls.kind, root, rel, [(r, lab, sizes[r]) for r, lab in zip(rel, labels)],
                          names, {"skipped_non_image_files": skipped})

    def read(self, locators: Sequence) -> Iterator[Record]:
        cap = self.max_member_bytes
        for rel, label, size in locators:
            try:
                if size > cap:  # the listed size: refused without reading
                    data = too_large(size, cap, "file")
                else:  # the real stream, bounded in case the file grew
                    with FileSystems.open(beam_fs.join(self.input_path, rel),
                                          compression_type=beam_fs.RAW) as f:
                        data = read_capped(f, cap, "file")
            except (OSError, ValueError) as e:  # BeamIOError is an OSError
                data = BadImage(f"unreadable file ({type(e).__name__}: {e})")
            yield rel, label, data


class ImageZip(_FileSource):
    """``image_zip``: image members of a .zip archive, read without extracting it."""

    kind = "image_zip"
    what = (f"a .zip of image files ({', '.join(IMAGE_EXTENSIONS)}), optionally in class "
            "folders")

    def __init__(self, input_path: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        super().__init__(input_path, max_member_bytes)
        self._zip: zipfile.ZipFile | None = None

    @classmethod
    def plan(cls, path: str) -> SourcePlan:
        full = require_exists(path, cls.what)
        if beam_fs.is_local(full) and os.path.isdir(full):
            raise ValueError(f"input {path!r} is not a zip archive; expected {cls.what}")
        with FileSystems.open(full, compression_type=beam_fs.RAW) as f:
            if not zipfile.is_zipfile(f):
                raise ValueError(f"input {path!r} is not a zip archive; expected {cls.what}")
            with zipfile.ZipFile(f) as zf:
                infos = zf.infolist()
        names = sorted(i.filename for i in infos if not i.is_dir() and is_image_file(i.filename))
        if not names:
            raise no_images(path, cls.what)
        labels, label_names = labels_from_parents(names)
        return SourcePlan(cls.kind, full, names, list(zip(names, labels)), label_names,
                          {"skipped_non_image_files": sum(not i.is_dir() for i in infos)
                           - len(names)})

    def read(self, locators: Sequence) -> Iterator[Record]:
        if self._zip is None:  # a seekable stream of any Beam filesystem
            self._file = FileSystems.open(self.input_path, compression_type=beam_fs.RAW)
            self._zip = zipfile.ZipFile(self._file)
        cap = self.max_member_bytes
        for name, label in locators:
            try:
                info = self._zip.getinfo(name)
                if info.file_size > cap:  # the declared size: refused without inflating
                    data = too_large(info.file_size, cap, "zip member")
                else:  # the real stream, bounded in case the declared size lies
                    with self._zip.open(info) as f:
                        data = read_capped(f, cap, "zip member")
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError,
                    zlib.error, KeyError) as e:
                data = BadImage(f"unreadable zip member ({type(e).__name__}: {e})")
            yield name, label, data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._file.close()
            self._zip = None
