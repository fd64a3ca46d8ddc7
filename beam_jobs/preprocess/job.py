"""The preprocessing job as a function: :func:`run_preprocess` (see :mod:`beam_jobs.preprocess`)."""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
import subprocess
from typing import Any, Mapping, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from artifacts import dataset_format
from beam_jobs.preprocess import work_dir
from beam_jobs.preprocess.fns import ConcatShardFn, EncodePartFn
from beam_jobs.preprocess.shard_plan import (
    SPLIT_RULE_TEXT,
    SPLIT_RULES,
    WorkUnit,
    assign_splits,
    default_num_shards,
    plan_parts,
)
from beam_jobs.preprocess.work_dir import PARTS_DIR, PLAN_DIR, SHARDS_DIR
from beam_jobs.runtime import beam_fs, beam_options
from beam_jobs.sources.image_transform import ImageTransform
from beam_jobs.sources.registry import (
    DEFAULT_MAX_MEMBER_BYTES,
    SourcePlan,
    plan_source,
)

SPLITS = dataset_format.SPLIT_NAMES  # train, validation, test: the order in dataset.json

log = logging.getLogger(__name__)


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
        ``split``, ``image_key``, ``label_key``; see :mod:`beam_jobs.sources.tfds_source`).

    Besides the shards and dataset.json the output holds TFDS metadata
    (:mod:`beam_jobs.preprocess.tfds_metadata`): ``tfds.builder_from_directory(output_dir)`` reads it.
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
    existing = work_dir.check_output_dir(output_dir, overwrite)
    work_dir.remove_stale_work_dirs(output_dir)
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

    work = work_dir.new_work_dir(output_dir, options.view_as(GoogleCloudOptions).temp_location)
    try:
        for d in (PLAN_DIR, PARTS_DIR, SHARDS_DIR):
            beam_fs.make_dirs(beam_fs.join(work, d))
        work_dir.write_owner(work)
        units = plan_parts(plan, splits, shards, beam_fs.join(work, PLAN_DIR))
        log.info("preprocess %s %r: %d records in %d work units -> %s (%s, mode %s, work dir "
                 "%s), shards %s", source, plan.input_path, len(plan.keys), len(units),
                 output_dir, options.view_as(StandardOptions).runner, mode, work, shards)
        _run_beam(plan, transform, units, shards, work, options, int(max_member_bytes))
        plan.info["max_member_bytes"] = int(max_member_bytes)  # -> dataset.json["source"]
        info, entries = _finalize(plan, transform, split_by, validation_fraction, shards,
                                  work, image_shape)
        _add_bad_records(info, dangling)
        work_dir.commit(work, output_dir, existing, entries, info)
    finally:
        beam_fs.delete_tree(work)
    return info


def _run_beam(plan: SourcePlan, transform: ImageTransform, units: list[WorkUnit],
              shards: dict[str, int], work: str, options: PipelineOptions,
              max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> None:
    parts_dir = beam_fs.join(work, PARTS_DIR)
    with beam.Pipeline(options=options) as p:
        outputs = (p
                   | "WorkUnits" >> beam.Create(units)  # reshuffled: spread over workers
                   | "DecodeResizeEncode" >> beam.ParDo(EncodePartFn(
                       plan.kind, plan.reader_input, transform, beam_fs.join(work, PLAN_DIR),
                       parts_dir, max_member_bytes))
                   .with_outputs(EncodePartFn.BAD, main="good"))
        _ = (outputs.good
             | "GroupPartsByShard" >> beam.GroupByKey()
             | "ConcatShards" >> beam.ParDo(ConcatShardFn(beam_fs.join(work, SHARDS_DIR), parts_dir, shards))
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
    shard_dir = beam_fs.join(work, SHARDS_DIR)
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
