"""Beam job: raw image sources -> deterministic sharded TFRecords + dataset.json.

    python -m beam_jobs.preprocess --source=image_zip --input=cifar.zip \\
        --output_dir=data/cifar64 --image_size=64 [--resize_shorter_side=96] \\
        [--center_crop | --nocenter_crop] [--validation_fraction=0.05] [--num_shards=N] \\
        [--grayscale] [--overwrite] [Beam pipeline options, e.g. --runner=DataflowRunner ...]

Sources (``--source``): ``lsun_lmdb``, ``imagenet64_npz``, ``image_folder``, ``image_zip``,
``mnist_idx`` (see :mod:`beam_jobs.image_sources`). Transform: :mod:`beam_jobs.image_transform`.

Pipeline: the driver lists every record's key and locator, assigns it to a split and a
shard by sha256(key), sorts each shard by key, pickles the shard's locators next to the
output and cuts it into work units of RECORDS_PER_PART records -> Create (reshuffled over
the workers) -> one DoFn reads its records by random access, decodes, resizes/crops,
encodes PNG + Example and writes a fragment file (records that fail go to a ``bad`` output
with the reason) -> GroupByKey of the fragment *names* by shard -> each shard is the
concatenation of its fragments in order, written to a temporary file and renamed. Encoded
images are never shuffled through the runner. Shards are byte-identical for the same
input on any runner. Everything is written into a temporary sibling of ``--output_dir``
(a local or mounted path every worker can reach) that is moved into place on success.

Without ``--runner`` the job runs locally on Beam's ``FnApiRunner`` (Beam 2.77's
DirectRunner first tries to download the Prism runner, which fails offline) with a running
mode chosen by input size unless ``--direct_running_mode`` is given.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from artifacts import records
from beam_jobs.image_sources import (DEFAULT_MAX_MEMBER_BYTES, SOURCE_KINDS, SourcePlan,
                                     SourceReader, plan_source)
from beam_jobs.image_transform import BadImage, ImageTransform

FORMAT_VERSION = 1
SPLITS = ("train", "validation")
TARGET_SHARD_PIXEL_BYTES = 64 * 2 ** 20  # default shard size: ~64 MiB of raw uint8 pixels
MAX_DEFAULT_SHARDS = 4096
IN_MEMORY_MAX_RECORDS = 2_000  # below: one thread, no worker start-up at all
# below: threads; above: processes. Threads start in ~0 s (processes ~3 s) and, as PIL
# releases the GIL while decoding/resizing/encoding, process CIFAR JPEGs -> 64x64 PNG only
# ~2% slower per image (benchmarks/bench_preprocess.py): break-even near 150k images.
THREADS_MAX_RECORDS = 100_000
RECORDS_PER_PART = 256  # records per work unit: many more units than workers
_COPY_CHUNK = 8 * 2 ** 20
_META_DIR = "_meta"
_PLAN_DIR = "_plan"
_PARTS_DIR = "_parts"
_LOCAL_RUNNERS = ("fnapirunner", "fnapi")

log = logging.getLogger(__name__)


# -- deterministic split / shard assignment -----------------------------------------------

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


def plan_parts(plan: SourcePlan, splits: Sequence[str], shards: dict[str, int],
               plan_dir: str, records_per_part: int | None = None) -> list[tuple]:
    """Driver side: puts every record in its shard and cuts shards into parts.

    ``splits[i]`` is the split of record i (``split_of`` of its key).

    Each shard's locators, sorted by record key, are pickled to
    ``plan_dir/<split>-<shard>.pkl`` (so the pipeline graph stays small on any runner).
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
        with open(os.path.join(plan_dir, f"{split}-{index:05d}.pkl"), "wb") as f:
            pickle.dump([locator for _, locator in items], f, protocol=pickle.HIGHEST_PROTOCOL)
        num_parts = math.ceil(len(items) / records_per_part)
        units.extend((split, index, i * records_per_part,
                      min(len(items), (i + 1) * records_per_part), i, num_parts)
                     for i in range(num_parts))
    return units


class EncodePartFn(beam.DoFn):
    """Work unit -> one fragment file of framed Examples (in key order) on local disk.

    Yields ``((split, shard), (part, num_parts, fragment file, count))``; records that
    cannot be read or decoded go to the ``bad`` output as ``(key, reason)``. Encoded
    images never travel through the runner, only these small tuples do.
    """

    BAD = "bad"

    def __init__(self, kind: str, input_path: str, transform: ImageTransform, plan_dir: str,
                 parts_dir: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
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
        self._reader = SourceReader(self._kind, self._input_path, self._max_member_bytes)

    def teardown(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _shard_locators(self, split: str, index: int) -> list:
        path = os.path.join(self._plan_dir, f"{split}-{index:05d}.pkl")
        if self._cached is None or self._cached[0] != path:
            with open(path, "rb") as f:
                self._cached = (path, pickle.load(f))
        return self._cached[1]

    def process(self, unit: tuple) -> Iterable:
        split, index, start, stop, part, num_parts = unit
        locators = self._shard_locators(split, index)[start:stop]
        name = f"{split}-{index:05d}-part-{part:05d}"
        count = 0
        with _atomic_file(os.path.join(self._parts_dir, name)) as f:
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
                f.write(records.frame_tfrecord(records.encode_example_fast(png, label, key)))
                count += 1
        self._good.inc(count)
        yield (split, index), (part, num_parts, name, count)


class ConcatShardFn(beam.DoFn):
    """((split, shard), fragments) -> the shard file (fragments in part order); its metadata."""

    def __init__(self, out_dir: str, parts_dir: str, num_shards: dict[str, int]):
        self._out_dir = out_dir
        self._parts_dir = parts_dir
        self._num_shards = dict(num_shards)

    def process(self, element) -> Iterable[dict]:
        (split, index), fragments = element
        fragments = sorted(fragments)
        name = records.shard_name(split, index, self._num_shards[split])
        expected = fragments[0][1]
        if [p for p, *_ in fragments] != list(range(expected)):
            raise RuntimeError(f"shard {name}: got parts {[p for p, *_ in fragments]} of "
                               f"{expected}; refusing to write an incomplete shard")
        sha = hashlib.sha256()
        with _atomic_file(os.path.join(self._out_dir, name)) as out:
            for _, _, fragment, _ in fragments:
                with open(os.path.join(self._parts_dir, fragment), "rb") as f:
                    while chunk := f.read(_COPY_CHUNK):
                        sha.update(chunk)
                        out.write(chunk)
        yield {"split": split, "index": index, "file": name,
               "count": sum(c for *_, c in fragments), "sha256": sha.hexdigest()}


@contextlib.contextmanager
def _atomic_file(final: str):
    """Binary file written under a temporary name and renamed to ``final`` on success
    (retried bundles rewrite identical bytes; a failed one leaves nothing behind)."""
    directory, base = os.path.split(final)
    partial = os.path.join(directory, f".{base}.partial-{uuid.uuid4().hex}")
    try:
        with open(partial, "wb") as f:
            yield f
        os.replace(partial, final)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _write_json(obj, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)


# -- pipeline options ---------------------------------------------------------------------

def _has_flag(args: Sequence[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def auto_running_mode(num_records: int) -> str:
    """FnApiRunner mode for an input of this many records (see module constants)."""
    if num_records <= IN_MEMORY_MAX_RECORDS:
        return "in_memory"
    if num_records <= THREADS_MAX_RECORDS:
        return "multi_threading"
    return "multi_processing"


def build_pipeline(pipeline_args: Sequence[str] | None, num_records: int):
    """(runner or None, PipelineOptions): FnApiRunner locally unless --runner is given."""
    args = list(pipeline_args or [])
    options = PipelineOptions(args)
    runner_name = options.view_as(StandardOptions).runner
    if runner_name is not None and runner_name.lower() not in _LOCAL_RUNNERS:
        return None, options  # Dataflow / Flink / Spark / DirectRunner: as the user asked
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    options.view_as(StandardOptions).runner = None
    direct = options.view_as(DirectOptions)
    if not _has_flag(args, "direct_running_mode"):
        direct.direct_running_mode = auto_running_mode(num_records)
    if not _has_flag(args, "direct_num_workers"):
        direct.direct_num_workers = (1 if direct.direct_running_mode == "in_memory"
                                     else os.cpu_count() or 1)
    if direct.direct_running_mode == "multi_processing":
        _export_import_path()
    return FnApiRunner(), options


def _export_import_path() -> None:
    """Lets FnApiRunner's worker subprocesses import beam_jobs from any working dir."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p])


# -- output directory handling ------------------------------------------------------------

def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    if "://" in output_dir:
        raise ValueError(f"output_dir {output_dir!r}: only local (or mounted) paths are "
                         "supported; shards are written with atomic local renames")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"output_dir {output_dir!r} exists and is not a directory")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not os.path.isfile(os.path.join(output_dir, records.DATASET_JSON)):
            raise FileExistsError(
                f"output_dir {output_dir!r} is not empty and holds no {records.DATASET_JSON}; "
                "refusing to replace a directory that is not a data set")
        if not overwrite:
            raise FileExistsError(
                f"output_dir {output_dir!r} already holds a data set; pass --overwrite "
                "(overwrite=True) to replace it")


def _move_into_place(tmp_dir: str, output_dir: str) -> None:
    if os.path.isdir(output_dir):
        old = f"{output_dir}.old-{uuid.uuid4().hex[:8]}"
        os.rename(output_dir, old)
        try:
            os.rename(tmp_dir, output_dir)
        except BaseException:
            os.rename(old, output_dir)
            raise
        shutil.rmtree(old)
    else:
        os.rename(tmp_dir, output_dir)


def code_version() -> str:
    """'adaptive-density <version> git <commit>' (commit omitted outside a checkout)."""
    try:
        from importlib.metadata import version

        ver = version("adaptive-density")
    except Exception:  # not installed: running from a checkout
        ver = "0.1.0"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        return f"adaptive-density {ver} git {sha}"
    except (OSError, subprocess.SubprocessError):
        return f"adaptive-density {ver}"


# -- the job ------------------------------------------------------------------------------

def run_preprocess(source: str, input_path: str, output_dir: str, image_size: int, *,
                   resize_shorter_side: int | None = None, center_crop: bool = True,
                   validation_fraction: float = 0.0, num_shards: int | None = None,
                   grayscale: bool = False, overwrite: bool = False,
                   pipeline_args: Sequence[str] | None = None,
                   max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> dict:
    """Runs the preprocessing job; returns the dataset.json content it wrote.

    Args:
      source: one of SOURCE_KINDS.
      input_path: the raw input (LMDB dir, npz file/folder, image folder, zip, IDX folder).
      output_dir: where shards and dataset.json go (created; replaced only if overwrite).
      image_size: output images are uint8 [image_size, image_size, C], C = 1 if grayscale
        else 3.
      resize_shorter_side: px of the shorter side before the center crop (default
        image_size).
      center_crop: see :class:`ImageTransform`.
      validation_fraction: in [0, 1); fraction of keys (by sha256) in 'validation'.
      num_shards: shards per split (default: ~64 MiB of raw pixels per shard).
      grayscale: keep 1 channel.
      overwrite: replace an existing data set in output_dir.
      pipeline_args: Beam pipeline flags (``--runner``, ``--direct_running_mode``, ...).
      max_member_bytes: encoded entries (files, zip members, LMDB values) larger than this
        many bytes are bad records (listed in dataset.json), never read into memory.
    """
    transform = ImageTransform(image_size, resize_shorter_side, center_crop, grayscale)
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction}: expected a value in [0, 1)")
    if num_shards is not None and (not isinstance(num_shards, int) or num_shards < 1):
        raise ValueError(f"num_shards={num_shards!r}: expected a positive int")
    if isinstance(max_member_bytes, bool) or int(max_member_bytes) < 1:
        raise ValueError(f"max_member_bytes={max_member_bytes!r}: expected a positive number "
                         "of bytes")
    output_dir = os.path.abspath(output_dir)
    _check_output_dir(output_dir, overwrite)
    plan = plan_source(source, input_path)
    image_shape = (image_size, image_size, transform.channels)

    splits = [split_of(key, validation_fraction) for key in plan.keys]
    shards = {s: (num_shards or default_num_shards(splits.count(s), image_shape)) for s in SPLITS}
    runner, options = build_pipeline(pipeline_args, len(plan.keys))
    mode = options.view_as(DirectOptions).direct_running_mode if runner else "n/a"

    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f".{os.path.basename(output_dir)}.tmp-{uuid.uuid4().hex[:8]}")
    meta = os.path.join(tmp_dir, _META_DIR)
    for d in (_PLAN_DIR, _PARTS_DIR):
        os.makedirs(os.path.join(meta, d))
    try:
        units = plan_parts(plan, splits, shards, os.path.join(meta, _PLAN_DIR))
        log.info("preprocess %s %r: %d records in %d work units -> %s (%s, mode %s), shards %s",
                 source, plan.input_path, len(plan.keys), len(units), output_dir,
                 type(runner).__name__ if runner else options.view_as(StandardOptions).runner,
                 mode, shards)
        _run_beam(plan, transform, units, shards, tmp_dir, runner, options, int(max_member_bytes))
        plan.info["max_member_bytes"] = int(max_member_bytes)  # -> dataset.json["source"]
        info = _finalize(plan, transform, validation_fraction, shards, tmp_dir, image_shape)
        _move_into_place(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return info


def _run_beam(plan: SourcePlan, transform: ImageTransform, units: list[tuple],
              shards: dict[str, int], tmp_dir: str, runner, options: PipelineOptions,
              max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> None:
    meta = os.path.join(tmp_dir, _META_DIR)
    parts_dir = os.path.join(meta, _PARTS_DIR)
    with beam.Pipeline(runner=runner, options=options) as p:
        outputs = (p
                   | "WorkUnits" >> beam.Create(units)  # reshuffled: spread over workers
                   | "DecodeResizeEncode" >> beam.ParDo(EncodePartFn(
                       plan.kind, plan.input_path, transform, os.path.join(meta, _PLAN_DIR),
                       parts_dir, max_member_bytes))
                   .with_outputs(EncodePartFn.BAD, main="good"))
        _ = (outputs.good
             | "GroupPartsByShard" >> beam.GroupByKey()
             | "ConcatShards" >> beam.ParDo(ConcatShardFn(tmp_dir, parts_dir, shards))
             | "ListShards" >> beam.combiners.ToList()
             | "SaveShardList" >> beam.Map(_write_json, os.path.join(meta, "shards.json")))
        _ = (outputs[EncodePartFn.BAD]
             | "ListBad" >> beam.combiners.ToList()
             | "SaveBadList" >> beam.Map(_write_json, os.path.join(meta, "bad.json")))


def _finalize(plan: SourcePlan, transform: ImageTransform, validation_fraction: float,
              shards: dict[str, int], tmp_dir: str, image_shape: tuple) -> dict:
    meta = os.path.join(tmp_dir, _META_DIR)
    with open(os.path.join(meta, "shards.json")) as f:
        written = json.load(f)
    with open(os.path.join(meta, "bad.json")) as f:
        bad = sorted((str(k), str(r)) for k, r in json.load(f))
    shutil.rmtree(meta)
    if not any(m["count"] for m in written):
        examples = "; ".join(f"{k}: {r}" for k, r in bad[:5])
        raise ValueError(f"input {plan.input_path!r} ({plan.kind}) holds no decodable images: "
                         f"all {len(bad)} records are bad (e.g. {examples})")
    by_split: dict[str, dict[int, dict]] = {}
    for m in written:
        if m["index"] in by_split.setdefault(m["split"], {}):
            raise RuntimeError(f"the runner delivered shard {m['file']} in more than one "
                               "group; refusing to write an incomplete data set")
        by_split[m["split"]][m["index"]] = m
    total = sum(m["count"] for m in written) + len(bad)
    if total != len(plan.keys):
        raise RuntimeError(f"{plan.input_path!r}: {len(plan.keys)} records planned but "
                           f"{total} written or listed as bad; the input changed during the "
                           "job or the runner lost records")
    splits = {}
    empty_sha = hashlib.sha256(b"").hexdigest()
    for split in SPLITS:
        if split not in by_split:
            continue
        entries = []
        for index in range(shards[split]):
            m = by_split[split].get(index)
            if m is None:  # no record hashed to this shard: keep the -of-N naming complete
                name = records.shard_name(split, index, shards[split])
                open(os.path.join(tmp_dir, name), "wb").close()
                m = {"file": name, "count": 0, "sha256": empty_sha}
            entries.append({"file": m["file"], "count": m["count"], "sha256": m["sha256"]})
        splits[split] = {"count": sum(e["count"] for e in entries), "shards": entries}
    tdesc = transform.describe()
    tdesc.update({
        "validation_fraction": validation_fraction,
        "split_rule": "validation iff int(sha256(key)[0:8], big-endian) / 2**64 < "
                      "validation_fraction",
        "shard_rule": "int(sha256(key)[8:16], big-endian) % num_shards; records sorted by key",
        "num_shards": {s: shards[s] for s in splits},
    })
    info = {
        "format_version": FORMAT_VERSION,
        "image_shape": list(image_shape),
        "splits": splits,
        "label_names": plan.label_names,
        "source": {"kind": plan.kind, "input": plan.input_path,
                   "num_input_records": len(plan.keys), **plan.info},
        "transform": tdesc,
        "bad_records": [{"key": k, "reason": r} for k, r in bad],
        "num_bad_records": len(bad),
        "code_version": code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(os.path.join(tmp_dir, records.DATASET_JSON), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


# -- command line -------------------------------------------------------------------------

def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our flags -> Namespace; everything else is returned for Beam's PipelineOptions."""
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.preprocess",
        description="Raw images -> sharded TFRecords + dataset.json (Apache Beam). "
                    "Unknown flags are Beam pipeline options.")
    p.add_argument("--source", required=True, choices=SOURCE_KINDS)
    p.add_argument("--input", required=True, help="raw input path")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--image_size", required=True, type=int, help="output side, px")
    p.add_argument("--resize_shorter_side", type=int, default=None,
                   help="px of the shorter side before the center crop (default image_size)")
    p.add_argument("--center_crop", dest="center_crop", action="store_true", default=True,
                   help="center-crop after resizing the shorter side (default)")
    p.add_argument("--nocenter_crop", "--no-center_crop", dest="center_crop",
                   action="store_false", help="resize whole images to image_size^2 instead")
    p.add_argument("--validation_fraction", type=float, default=0.0)
    p.add_argument("--num_shards", type=int, default=None, help="shards per split")
    p.add_argument("--grayscale", action="store_true", help="keep 1 channel")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    p.add_argument("--max_member_bytes", type=int, default=DEFAULT_MAX_MEMBER_BYTES,
                   help="encoded images (files, zip members, LMDB values) larger than this "
                        "many bytes are bad records (default 64 MiB)")
    return p.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args, beam_args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        info = run_preprocess(
            args.source, args.input, args.output_dir, args.image_size,
            resize_shorter_side=args.resize_shorter_side, center_crop=args.center_crop,
            validation_fraction=args.validation_fraction, num_shards=args.num_shards,
            grayscale=args.grayscale, overwrite=args.overwrite, pipeline_args=beam_args,
            max_member_bytes=args.max_member_bytes)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError, ValueError) as e:  # user errors: one line, no traceback
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        print(f"python -m beam_jobs.preprocess: error: {lines[0] if lines else type(e).__name__}",
              file=sys.stderr)
        return 2
    counts = ", ".join(f"{s} {v['count']}" for s, v in info["splits"].items())
    print(f"wrote {args.output_dir}: {counts} images {info['image_shape']}, "
          f"{info['num_bad_records']} bad records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
