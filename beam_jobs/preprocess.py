"""Beam job: raw image sources -> deterministic sharded TFRecords + dataset.json.

    python -m beam_jobs.preprocess --source=image_zip --input=cifar.zip \\
        --output_dir=data/cifar64 --image_size=64 [--resize_shorter_side=96] \\
        [--center_crop | --nocenter_crop] [--validation_fraction=0.05] [--num_shards=N] \\
        [--grayscale] [--overwrite] [Beam pipeline options, e.g. --runner=DataflowRunner ...]

    python -m beam_jobs.preprocess --source=tfds --tfds_name=cifar10 \\
        --tfds_data_dir=~/tensorflow_datasets --tfds_split=train+test \\
        --output_dir=data/cifar32 --image_size=32 --validation_fraction=0.1

    python -m beam_jobs.preprocess --source=image_zip \\
        --input=../shared/data/cifar10_train_jpg/cifar10_train_jpg.zip,../shared/data/cifar10_test_jpg/cifar10_test_jpg.zip \\
        --split_by=top_folder --output_dir=data/cifar10 --image_size=32

Several inputs: ``--input`` takes a comma-separated list of inputs of one kind
(``image_folder``, ``image_zip``) read as one data set: record keys must be unique across
the inputs, labels are the sorted union of the inputs' class folder names, and
dataset.json's ``source`` lists every input.

Splits (``--split_by``, :mod:`beam_jobs.shard_plan`): ``hash`` (default) puts a record in
``validation`` when sha256 of its key falls below ``--validation_fraction``, else in
``train``; ``top_folder`` takes the first component of its key (``train/cat/0001.jpg`` ->
``train``; the names ``train``, ``validation``, ``test``). dataset.json's ``transform``
records the rule used.

Sources (``--source``): ``lsun_lmdb``, ``imagenet64_npz``, ``image_folder``, ``image_zip``,
``mnist_idx``, ``tfds`` (a TFDS data set already prepared locally; see
:mod:`beam_jobs.image_sources`). Transform: :mod:`beam_jobs.image_transform`.

The output also carries TFDS metadata (:mod:`beam_jobs.tfds_metadata`), so
``tfds.builder_from_directory(output_dir).as_dataset(split="train")`` (or any split it
wrote) reads the shards as they are (features ``image``, ``label``, ``key``).

Pipeline: the driver lists every record's key and locator, assigns it to a split (by the
split rule) and a shard by sha256(key), sorts each shard by key, pickles the shard's
locators into the work directory and cuts it into work units of RECORDS_PER_PART records
(:mod:`beam_jobs.shard_plan`) -> Create (reshuffled over the workers) -> one DoFn
(:mod:`beam_jobs.preprocess_fns`) reads its records by random access, decodes,
resizes/crops, encodes PNG + Example and writes a fragment file under a name unique to the
attempt (records that fail go to a ``bad`` output with the reason) -> GroupByKey of the
fragment *names* by shard -> each shard is the concatenation of its fragments in order,
written whole under its final name in the work directory. Encoded images are never
shuffled through the runner. Shards are byte-identical for the same input on any runner.

Every file goes through Beam's ``FileSystems`` (:mod:`beam_jobs.beam_fs`), so inputs
(``image_folder``, ``image_zip``, ``mnist_idx``, ``tfds``; ``lsun_lmdb`` and
``imagenet64_npz`` need local or mounted paths), the work directory and ``--output_dir``
may be local, mounted or ``gs://``/``s3://``/``hdfs://`` paths. The work directory is
``<--temp_location>/preprocess-<id>`` when ``--temp_location`` is given, else a hidden
sibling of ``--output_dir``; it is deleted at the end. Nothing relies on atomic renames:
the driver checks every shard's size in the work directory, then commits (a marker file,
the old data set's dataset.json deleted first, the shards moved in and checked again under
their final names, TFDS metadata, dataset.json last). A directory without dataset.json is
never a data set; an interrupted commit is replaced by a re-run with ``--overwrite``.

Without ``--runner`` the job runs locally on Beam's ``FnApiRunner`` (Beam 2.77's
DirectRunner first tries to download the Prism runner, which fails offline) with a running
mode chosen by input size unless ``--direct_running_mode`` is given
(:mod:`beam_jobs.beam_options`).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from artifacts import dataset_format, fs_errors
from artifacts.cli import setup_logging
from beam_jobs import beam_fs, beam_options, tfds_metadata
from beam_jobs.image_sources import DEFAULT_MAX_MEMBER_BYTES, SOURCE_KINDS, SourcePlan, plan_source
from beam_jobs.image_transform import ImageTransform
from beam_jobs.preprocess_fns import ConcatShardFn, EncodePartFn
from beam_jobs.shard_plan import (
    SPLIT_RULE_TEXT,
    SPLIT_RULES,
    WorkUnit,
    assign_splits,
    default_num_shards,
    plan_parts,
)

SPLITS = dataset_format.SPLIT_NAMES  # train, validation, test: the order in dataset.json
_PLAN_DIR = "plan"
_PARTS_DIR = "parts"
_SHARDS_DIR = "shards"
COMMIT_MARKER = "_COMMITTING.json"  # in output_dir while the driver moves a data set in

log = logging.getLogger(__name__)


# -- output directory handling ------------------------------------------------------------

def _check_output_dir(output_dir: str, overwrite: bool) -> dict[str, int]:
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


def _work_dir(output_dir: str, temp_location: str | None) -> str:
    """A fresh work directory: under ``--temp_location`` when given, else a hidden sibling
    of output_dir (same filesystem, so the final moves are cheap renames locally)."""
    tag = uuid.uuid4().hex[:12]
    if temp_location:
        return beam_fs.join(beam_fs.absolute(temp_location), f"preprocess-{tag}")
    parent, base = beam_fs.split(output_dir)
    return beam_fs.join(parent, f".{base}.work-{tag}")


OWNER_FILE = "owner.json"  # in a work directory: the host and pid of the job using it
STALE_WORK_AGE_S = 24 * 3600  # a work directory without owner file is stale after a day


def _write_owner(work: str) -> None:
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


def dangling_links(plan: SourcePlan) -> list[tuple[str, str]]:
    """(key, reason) of the image files of a local ``image_folder`` input that are symbolic
    links to missing files (the folder listing omits them; they are bad records)."""
    if plan.kind != "image_folder":
        return []
    out = []
    for root in plan.inputs or [plan.input_path]:
        if not beam_fs.is_local(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                if dataset_format.is_image_file(rel) and os.path.islink(full) \
                        and not os.path.exists(full):
                    out.append((rel, f"symbolic link to a missing file ({os.readlink(full)})"))
    return sorted(out)


def _add_bad_records(info: dict, extra: list[tuple[str, str]]) -> None:
    """Adds (key, reason) pairs found by the driver to dataset.json's bad records."""
    if not extra:
        return
    bad = info["bad_records"] + [{"key": k, "reason": r} for k, r in extra]
    info["bad_records"] = sorted(bad, key=lambda b: b["key"])
    info["num_bad_records"] = len(info["bad_records"])
    info["source"]["dangling_symlinks"] = len(extra)


def _commit(work: str, output_dir: str, existing: dict[str, int], shard_entries: list[dict],
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
    beam_fs.move([beam_fs.join(work, _SHARDS_DIR, n) for n in names],
                 [beam_fs.join(output_dir, n) for n in names])
    finals = beam_fs.sizes([beam_fs.join(output_dir, n) for n in names])
    for e in shard_entries:
        got = finals.get(beam_fs.join(output_dir, e["file"]))
        if got != e["num_bytes"]:
            raise RuntimeError(f"shard {e['file']} in {output_dir!r} holds {got} bytes after "
                               f"the commit, {e['num_bytes']} were written; the data set is "
                               "not committed (re-run with --overwrite)")
    tfds_metadata.write_tfds_metadata(output_dir, info)
    _write_dataset_json(output_dir, info)
    FileSystems.delete([marker])


def _write_dataset_json(data_dir: str, info: dict) -> None:
    """dataset_format.write_dataset_json (which checks the content), on any filesystem."""
    with tempfile.TemporaryDirectory(prefix="dataset-json-") as scratch:
        local = dataset_format.write_dataset_json(scratch, info)
        with open(local, "rb") as f:
            beam_fs.write_bytes(beam_fs.join(data_dir, dataset_format.DATASET_JSON), f.read())


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

def run_preprocess(source: str, input_path: str | Sequence[str] | None, output_dir: str,
                   image_size: int, *,
                   resize_shorter_side: int | None = None, center_crop: bool = True,
                   validation_fraction: float | None = None, split_by: str = "hash",
                   num_shards: int | None = None,
                   grayscale: bool = False, overwrite: bool = False,
                   pipeline_args: Sequence[str] | None = None,
                   max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                   source_options: Mapping[str, Any] | None = None) -> dict:
    """Runs the preprocessing job; returns the dataset.json content it wrote.

    Args:
      source: one of SOURCE_KINDS.
      input_path: the raw input (LMDB dir, npz file/folder, image folder, zip, IDX folder,
        prepared TFDS directory; None for tfds with ``source_options["name"]``), or a list
        of inputs of one kind read as one data set (image_folder, image_zip; keys unique
        across them, labels on the union of their class folder names).
      output_dir: where shards and dataset.json go (created; replaced only if overwrite).
      image_size: output images are uint8 [image_size, image_size, C], C = 1 if grayscale
        else 3.
      resize_shorter_side: px of the shorter side before the center crop (default
        image_size).
      center_crop: see :class:`ImageTransform`.
      validation_fraction: in [0, 1); fraction of keys (by sha256) in 'validation'
        (split_by 'hash' only; default 0).
      split_by: the split rule, 'hash' (train/validation by ``validation_fraction``) or
        'top_folder' (the key's first path component: train, validation or test).
      num_shards: shards per split (default: ~64 MiB of raw pixels per shard).
      grayscale: keep 1 channel.
      overwrite: replace an existing data set in output_dir.
      pipeline_args: Beam pipeline flags (``--runner``, ``--direct_running_mode``, ...).
      max_member_bytes: encoded entries (files, zip members, LMDB values) larger than this
        many bytes are bad records (listed in dataset.json), never read into memory.
      source_options: planner options of the source kind (tfds: ``name``, ``data_dir``,
        ``split``, ``image_key``, ``label_key``; see :mod:`beam_jobs.tfds_source`).

    Besides the shards and dataset.json the output holds TFDS metadata
    (:mod:`beam_jobs.tfds_metadata`): ``tfds.builder_from_directory(output_dir)`` reads it.
    """
    transform = ImageTransform(image_size, resize_shorter_side, center_crop, grayscale)
    if split_by not in SPLIT_RULES:
        raise ValueError(f"split_by={split_by!r}: expected one of {', '.join(SPLIT_RULES)}")
    if split_by != "hash" and validation_fraction is not None:
        raise ValueError(f"validation_fraction applies only to --split_by=hash; with "
                         f"--split_by={split_by} the key's top folder is its split")
    if split_by == "hash" and validation_fraction is None:
        validation_fraction = 0.0
    if split_by == "hash" and not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction}: expected a value in [0, 1)")
    if num_shards is not None and (not isinstance(num_shards, int) or num_shards < 1):
        raise ValueError(f"num_shards={num_shards!r}: expected a positive int")
    if isinstance(max_member_bytes, bool) or int(max_member_bytes) < 1:
        raise ValueError(f"max_member_bytes={max_member_bytes!r}: expected a positive number "
                         "of bytes")
    output_dir = beam_fs.absolute(output_dir)
    existing = _check_output_dir(output_dir, overwrite)
    remove_stale_work_dirs(output_dir)
    plan = plan_source(source, input_path, source_options)
    dangling = dangling_links(plan)
    image_shape = (image_size, image_size, transform.channels)

    splits = assign_splits(plan.keys, split_by, validation_fraction or 0.0)
    shards = {s: (num_shards or default_num_shards(splits.count(s), image_shape)) for s in SPLITS}
    n = len(plan.keys)
    options = beam_options.pipeline_options(pipeline_args, n,
                                            running_mode=beam_options.auto_running_mode(n))
    local = beam_options.is_local(options)
    mode = options.view_as(DirectOptions).direct_running_mode if local else "n/a"

    work = _work_dir(output_dir, options.view_as(GoogleCloudOptions).temp_location)
    try:
        for d in (_PLAN_DIR, _PARTS_DIR, _SHARDS_DIR):
            beam_fs.make_dirs(beam_fs.join(work, d))
        _write_owner(work)
        units = plan_parts(plan, splits, shards, beam_fs.join(work, _PLAN_DIR))
        log.info("preprocess %s %r: %d records in %d work units -> %s (%s, mode %s, work dir "
                 "%s), shards %s", source, plan.input_path, len(plan.keys), len(units),
                 output_dir, options.view_as(StandardOptions).runner, mode, work, shards)
        _run_beam(plan, transform, units, shards, work, options, int(max_member_bytes))
        plan.info["max_member_bytes"] = int(max_member_bytes)  # -> dataset.json["source"]
        info, entries = _finalize(plan, transform, split_by, validation_fraction, shards,
                                  work, image_shape)
        _add_bad_records(info, dangling)
        _commit(work, output_dir, existing, entries, info)
    finally:
        beam_fs.delete_tree(work)
    return info


def _run_beam(plan: SourcePlan, transform: ImageTransform, units: list[WorkUnit],
              shards: dict[str, int], work: str, options: PipelineOptions,
              max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> None:
    parts_dir = beam_fs.join(work, _PARTS_DIR)
    with beam.Pipeline(options=options) as p:
        outputs = (p
                   | "WorkUnits" >> beam.Create(units)  # reshuffled: spread over workers
                   | "DecodeResizeEncode" >> beam.ParDo(EncodePartFn(
                       plan.kind, plan.reader_input, transform, beam_fs.join(work, _PLAN_DIR),
                       parts_dir, max_member_bytes))
                   .with_outputs(EncodePartFn.BAD, main="good"))
        _ = (outputs.good
             | "GroupPartsByShard" >> beam.GroupByKey()
             | "ConcatShards" >> beam.ParDo(ConcatShardFn(beam_fs.join(work, _SHARDS_DIR), parts_dir, shards))
             | "ListShards" >> beam.combiners.ToList()
             | "SaveShardList" >> beam.Map(beam_fs.write_json, beam_fs.join(work, "shards.json")))
        _ = (outputs[EncodePartFn.BAD]
             | "ListBad" >> beam.combiners.ToList()
             | "SaveBadList" >> beam.Map(beam_fs.write_json, beam_fs.join(work, "bad.json")))


def _finalize(plan: SourcePlan, transform: ImageTransform, split_by: str,
              validation_fraction: float | None, shards: dict[str, int], work: str,
              image_shape: tuple) -> tuple[dict, list[dict]]:
    """(dataset.json content, shard entries with num_bytes) after checking what the
    pipeline reported against the plan and the shard files in the work directory."""
    written = beam_fs.read_json(beam_fs.join(work, "shards.json"))
    bad = sorted((str(k), str(r)) for k, r in beam_fs.read_json(beam_fs.join(work, "bad.json")))
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
    all_entries = []
    empty_sha = hashlib.sha256(b"").hexdigest()
    shard_dir = beam_fs.join(work, _SHARDS_DIR)
    for split in SPLITS:
        if split not in by_split:
            continue
        entries = []
        for index in range(shards[split]):
            m = by_split[split].get(index)
            if m is None:  # no record hashed to this shard: keep the -of-N naming complete
                name = dataset_format.shard_name(split, index, shards[split])
                beam_fs.write_bytes(beam_fs.join(shard_dir, name), b"")
                m = {"file": name, "count": 0, "sha256": empty_sha, "num_bytes": 0}
            entries.append({"file": m["file"], "count": m["count"], "sha256": m["sha256"]})
            all_entries.append({"file": m["file"], "num_bytes": m["num_bytes"]})
        splits[split] = {"count": sum(e["count"] for e in entries), "shards": entries}
    found = beam_fs.sizes([beam_fs.join(shard_dir, e["file"]) for e in all_entries])
    for e in all_entries:  # the driver's check before the commit
        got = found.get(beam_fs.join(shard_dir, e["file"]))
        if got != e["num_bytes"]:
            raise RuntimeError(f"shard {e['file']} in the work directory {work!r} holds {got} "
                               f"bytes, its writer reported {e['num_bytes']}; refusing to "
                               "commit an incomplete data set")
    tdesc = transform.describe()
    tdesc["split_by"] = split_by
    if split_by == "hash":
        tdesc["validation_fraction"] = validation_fraction
    tdesc.update({
        "split_rule": SPLIT_RULE_TEXT[split_by],
        "shard_rule": "int(sha256(key)[8:16], big-endian) % num_shards; records sorted by key",
        "num_shards": {s: shards[s] for s in splits},
    })
    info = {
        "format_version": dataset_format.FORMAT_VERSION,
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
    return info, all_entries


# -- command line -------------------------------------------------------------------------

def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our flags -> Namespace; everything else is returned for Beam's PipelineOptions."""
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.preprocess",
        description="Raw images -> sharded TFRecords + dataset.json + TFDS metadata (Apache "
                    "Beam). Unknown flags are Beam pipeline options (--runner, "
                    "--temp_location: where the job's work directory goes, default a hidden "
                    "sibling of --output_dir; see README 'Beam jobs on Dataflow, Flink and "
                    "Spark').")
    p.add_argument("-v", "--verbosity", type=int, default=0, help="1: TF/Beam start-up noise")
    p.add_argument("--source", required=True, choices=SOURCE_KINDS,
                   help="raw input kind (lsun_lmdb and imagenet64_npz: local or mounted paths; "
                        "the others: any Beam filesystem path)")
    p.add_argument("--input", help="raw input path (for --source=tfds: a prepared TFDS "
                   "directory holding dataset_info.json, or use --tfds_name); for "
                   "image_folder and image_zip a comma-separated list of inputs is read as "
                   "one data set (keys unique across them, labels on the union of their "
                   "class folders)")
    p.add_argument("--output_dir", required=True,
                   help="data set directory (local, mounted or e.g. gs://); replaced only with "
                        "--overwrite")
    p.add_argument("--image_size", required=True, type=int, help="output side, px")
    p.add_argument("--resize_shorter_side", type=int, default=None,
                   help="px of the shorter side before the center crop (default image_size)")
    p.add_argument("--center_crop", dest="center_crop", action="store_true", default=True,
                   help="center-crop after resizing the shorter side (default)")
    p.add_argument("--nocenter_crop", "--no-center_crop", dest="center_crop",
                   action="store_false", help="resize whole images to image_size^2 instead")
    p.add_argument("--split_by", choices=SPLIT_RULES, default="hash",
                   help="split rule: hash (default; train, and validation by "
                        "--validation_fraction) or top_folder (the first folder of each "
                        "record's key: train/, validation/ or test/)")
    p.add_argument("--validation_fraction", type=float, default=None,
                   help="fraction in [0, 1) of records (by sha256 of their key) in the "
                        "validation split (--split_by=hash only; default 0)")
    p.add_argument("--num_shards", type=int, default=None, help="shards per split")
    p.add_argument("--grayscale", action="store_true", help="keep 1 channel")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    p.add_argument("--max_member_bytes", type=int, default=DEFAULT_MAX_MEMBER_BYTES,
                   help="encoded images (files, zip members, LMDB values) larger than this "
                        "many bytes are bad records (default 64 MiB)")
    t = p.add_argument_group("--source=tfds (a TFDS data set already prepared locally; "
                             "nothing is downloaded)")
    t.add_argument("--tfds_name", help="TFDS name, e.g. cifar10, cifar10:3.0.2, "
                   "lsun/church_outdoor (instead of --input)")
    t.add_argument("--tfds_data_dir", help="the TFDS data_dir it was prepared in (default: "
                   "TFDS's, $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    t.add_argument("--tfds_split", default=None, help="TFDS split(s) to read, joined by '+', "
                   "e.g. train+test (default train); the output's train/validation split is "
                   "--validation_fraction's")
    t.add_argument("--tfds_image_key", default=None, help="image feature (default image)")
    t.add_argument("--tfds_label_key", default=None, help="label feature (default label if "
                   "present; '' for none)")
    args, rest = p.parse_known_args(argv)
    tfds_flags = [n for n in ("tfds_name", "tfds_data_dir", "tfds_split", "tfds_image_key",
                              "tfds_label_key") if getattr(args, n) is not None]
    if args.split_by != "hash" and args.validation_fraction is not None:
        p.error(f"--validation_fraction applies only to --split_by=hash; with "
                f"--split_by={args.split_by} the key's top folder is its split")
    if args.input is not None:
        inputs = [part.strip() for part in args.input.split(",")]
        if len(inputs) > 1 and not all(inputs):
            p.error(f"--input={args.input!r}: an empty entry in the comma-separated list")
        args.input = inputs[0] if len(inputs) == 1 else inputs
    if args.source == "tfds":
        if bool(args.input) == bool(args.tfds_name):
            p.error("--source=tfds needs exactly one of --input and --tfds_name")
    else:
        if not args.input:
            p.error(f"--source={args.source} needs --input")
        if tfds_flags:
            p.error(f"--{tfds_flags[0]} applies only to --source=tfds")
    return args, rest


def _source_options(args: argparse.Namespace) -> dict | None:
    if args.source != "tfds":
        return None
    return {"name": args.tfds_name, "data_dir": args.tfds_data_dir, "split": args.tfds_split,
            "image_key": args.tfds_image_key, "label_key": args.tfds_label_key}


PROG = "python -m beam_jobs.preprocess"
# A full, read-only or failing disk (artifacts.fs_errors), also when Beam re-raised it.
filesystem_error = fs_errors.disk_error_reason
_DISK_TEXTS = fs_errors.DISK_TEXTS


def verify_main(argv: Sequence[str]) -> int:
    """``--verify --output_dir=DIR``: checks an existing data set against its dataset.json
    (every shard's sha256 and record CRCs, counts, image shape); one line either way."""
    p = argparse.ArgumentParser(prog=f"{PROG} --verify",
                                description="Check a data set against its dataset.json.")
    p.add_argument("--verify", action="store_true", required=True)
    p.add_argument("--output_dir", required=True, help="the data set directory to check")
    args = p.parse_args(argv)
    try:
        info = dataset_format.read_dataset_info(args.output_dir)
        done = dataset_format.verify_data_set(info, full=True)
    except (OSError, ValueError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    print(f"verified {args.output_dir}: {done['shards']} shards, {done['records']} records, "
          f"{done['bytes']} bytes match dataset.json (sha256, record CRCs, counts, image shape)")
    return 0


def _one_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


class _Interrupt:
    """SIGINT as a flag that survives Beam re-raising the KeyboardInterrupt as another
    exception (``RuntimeError: KeyboardInterrupt [while running ...]``)."""
    received = False

    @classmethod
    def handler(cls, signum, frame) -> None:
        cls.received = True
        raise KeyboardInterrupt


class _DropDiskErrorTracebacks(logging.Filter):
    """Drops the log records (with their tracebacks) in which Beam reports a full or
    read-only disk, or anything after Ctrl-C: :func:`main` says it in one line at the end."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if _Interrupt.received and record.levelno >= logging.WARNING:
            return False
        return not ((err is not None and filesystem_error(err))
                    or any(m in record.getMessage() for m in _DISK_TEXTS))


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    if not os.environ.get("AD_TRACEBACK"):
        for handler in logging.getLogger().handlers:
            handler.addFilter(_DropDiskErrorTracebacks())
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--verify" in argv:
        return verify_main(argv)
    args, beam_args = parse_args(argv)
    signal.signal(signal.SIGINT, _Interrupt.handler)
    try:
        info = run_preprocess(
            args.source, args.input, args.output_dir, args.image_size,
            resize_shorter_side=args.resize_shorter_side, center_crop=args.center_crop,
            validation_fraction=args.validation_fraction, split_by=args.split_by,
            num_shards=args.num_shards,
            grayscale=args.grayscale, overwrite=args.overwrite, pipeline_args=beam_args,
            max_member_bytes=args.max_member_bytes, source_options=_source_options(args))
    except KeyboardInterrupt:  # the work folder is gone (run_preprocess's finally)
        print(f"{PROG}: interrupted; nothing was committed to {args.output_dir}",
              file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError, ValueError) as e:  # user errors: one line, no traceback
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a full or read-only disk is one line too; anything else a bug
        if _Interrupt.received:  # Ctrl-C, re-raised by Beam as another exception
            print(f"{PROG}: interrupted; nothing was committed to {args.output_dir}",
                  file=sys.stderr)
            return 130
        reason = filesystem_error(e)
        if reason is None or os.environ.get("AD_TRACEBACK"):
            raise
        print(f"{PROG}: error: writing the data set {args.output_dir} failed: {reason}",
              file=sys.stderr)
        return 2
    counts = ", ".join(f"{s} {v['count']}" for s, v in info["splits"].items())
    print(f"wrote {args.output_dir}: {counts} images {info['image_shape']}, "
          f"{info['num_bad_records']} bad records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
