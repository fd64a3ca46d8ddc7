"""The preprocessing job's DoFns: encode a work unit into a fragment file, concatenate a
shard's fragments into the shard.

Encoded images never travel through the runner: fragments are files in the job's work
directory (any Beam filesystem: local, mounted, ``gs://``, ...) and only their names,
counts, sizes and digests are shuffled. Nothing is renamed: every attempt at a work unit
writes its fragment under a fresh unique name and only the names the runner committed
are used; a shard is written whole under its final name in the work directory (its bytes
are a function of the input, so a retried attempt writes the same file) and the driver
checks every shard's size before it commits the data set.
"""
from __future__ import annotations

import hashlib
import pickle
import uuid
from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from artifacts import dataset_format
from beam_jobs.preprocess.shard_plan import WorkUnit, locators_file
from beam_jobs.runtime import beam_fs
from beam_jobs.sources.image_transform import BadImage, ImageTransform
from beam_jobs.sources.registry import DEFAULT_MAX_MEMBER_BYTES, open_reader

_COPY_CHUNK = 8 * 2 ** 20


class EncodePartFn(beam.DoFn):
    """Work unit -> one fragment file of framed Examples (in key order) in ``parts_dir``.

    Yields ``((split, shard), (part, num_parts, fragment file, count))``; records that
    cannot be read or decoded go to the ``bad`` output as ``(key, reason)``. Encoded
    images never travel through the runner, only these small tuples do.

    ``input_path``: ``SourcePlan.reader_input``, the input or the list of inputs of a plan
    of several (each locator then names its input; one reader per input per worker).
    """

    BAD = "bad"

    def __init__(self, kind: str, input_path: str | Sequence[str], transform: ImageTransform,
                 plan_dir: str, parts_dir: str,
                 max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        self._kind = kind
        self._max_member_bytes = max_member_bytes
        self._input_path = input_path
        self._transform = transform
        self._plan_dir = plan_dir
        self._parts_dir = parts_dir
        self._reader = None
        self._cached: tuple[str, list] | None = None  # (shard plan file, its locators)
        self._good = beam.metrics.Metrics.counter("preprocess", "images_written")
        self._bad = beam.metrics.Metrics.counter("preprocess", "bad_records")

    def setup(self) -> None:
        self._reader = open_reader(self._kind, self._input_path, self._max_member_bytes)

    def teardown(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _shard_locators(self, split: str, index: int) -> list:
        path = locators_file(self._plan_dir, split, index)
        if self._cached is None or self._cached[0] != path:
            self._cached = (path, pickle.loads(beam_fs.read_bytes(path)))
        return self._cached[1]

    def process(self, unit: WorkUnit) -> Iterable:
        split, index, start, stop, part, num_parts = unit
        locators = self._shard_locators(split, index)[start:stop]
        # A unique name per attempt: a retried or speculative attempt never touches the file
        # of another one, and only the name the runner commits downstream is read.
        name = f"{split}-{index:05d}-part-{part:05d}-{uuid.uuid4().hex}"
        count = 0
        with FileSystems.create(beam_fs.join(self._parts_dir, name),
                                compression_type=beam_fs.RAW) as f:
            for key, label, payload in self._reader.read(locators):
                try:
                    if isinstance(payload, BadImage):
                        raise payload
                    if isinstance(payload, (bytes, bytearray, memoryview)):
                        png = self._transform.from_bytes(bytes(payload))
                    else:
                        png = self._transform.from_array(payload)
                except BadImage as e:
                    self._bad.inc()
                    yield beam.pvalue.TaggedOutput(self.BAD, (key, str(e)))
                    continue
                f.write(dataset_format.frame_tfrecord(
                    dataset_format.encode_example_fast(png, label, key)))
                count += 1
        self._good.inc(count)
        yield (split, index), (part, num_parts, name, count)


class ConcatShardFn(beam.DoFn):
    """((split, shard), fragments) -> the shard file ``out_dir/<shard name>`` (fragments in
    part order); yields its metadata (file, count, sha256, num_bytes)."""

    def __init__(self, out_dir: str, parts_dir: str, num_shards: dict[str, int]):
        self._out_dir = out_dir
        self._parts_dir = parts_dir
        self._num_shards = dict(num_shards)

    def process(self, element) -> Iterable[dict]:
        (split, index), fragments = element
        fragments = sorted(fragments)
        name = dataset_format.shard_name(split, index, self._num_shards[split])
        expected = fragments[0][1]
        if [p for p, *_ in fragments] != list(range(expected)):
            raise RuntimeError(f"shard {name}: got parts {[p for p, *_ in fragments]} of "
                               f"{expected}; refusing to write an incomplete shard")
        sha = hashlib.sha256()
        size = 0
        with FileSystems.create(beam_fs.join(self._out_dir, name),
                                compression_type=beam_fs.RAW) as out:
            for _, _, fragment, _ in fragments:
                with FileSystems.open(beam_fs.join(self._parts_dir, fragment),
                                      compression_type=beam_fs.RAW) as f:
                    while chunk := f.read(_COPY_CHUNK):
                        sha.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
        yield {"split": split, "index": index, "file": name, "num_bytes": size,
               "count": sum(c for *_, c in fragments), "sha256": sha.hexdigest()}
