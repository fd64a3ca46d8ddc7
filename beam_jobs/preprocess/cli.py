"""``python -m beam_jobs.preprocess``: the flags of :func:`~beam_jobs.preprocess.job.run_preprocess`
(absl flags; ``--flagfile`` works, unknown flags are Beam's PipelineOptions), ``--verify``,
and one-line user errors, disk errors and interrupts (:mod:`artifacts.cli`,
:mod:`artifacts.fs_errors`)."""
from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Sequence

from absl import flags

from artifacts import dataset_format, dataset_verify, fs_errors
from artifacts.cli import (
    UsageError,
    define_choice,
    flag_values,
    parse_flags,
    require,
    setup_logging,
    user_errors,
)
from beam_jobs.preprocess.job import run_preprocess
from beam_jobs.preprocess.shard_plan import SPLIT_RULES
from beam_jobs.sources.cli_flags import (
    PREPROCESS_SPLIT_NOTE,
    add_source_flags,
    add_tfds_flags,
    check_source_flags,
    source_options,
)
from beam_jobs.sources.registry import DEFAULT_MAX_MEMBER_BYTES

PROG = "python -m beam_jobs.preprocess"
DOC = f"""\
Raw images -> sharded TFRecords + dataset.json + TFDS metadata (Apache Beam). Unknown flags
are Beam pipeline options (--runner, --temp_location: where the job's work directory goes,
default a hidden sibling of --output_dir; see README 'Beam jobs on Dataflow, Flink and
Spark'). A --flagfile (one --flag=value per line) may hold both.

usage: {PROG} --source=KIND --input=PATH --output_dir=DIR
           --image_size=N [flags] [Beam pipeline options]
       {PROG} --verify --output_dir=DIR"""
VERIFY_FLAGS = ("verify", "output_dir", "verbosity")


def define_flags() -> flags.FlagValues:
    """The job's flags on a new private FlagValues."""
    fv = flag_values()
    add_source_flags(fv)
    flags.DEFINE_string("output_dir", None, "data set directory (local, mounted or e.g. "
                        "gs://); replaced only with --overwrite", flag_values=fv)
    flags.DEFINE_integer("image_size", None, "output side, px", flag_values=fv)
    flags.DEFINE_integer("resize_shorter_side", None, "px of the shorter side before the "
                         "center crop (default image_size)", flag_values=fv)
    flags.DEFINE_bool("center_crop", True, "center-crop after resizing the shorter side "
                      "(default); --nocenter_crop: resize whole images to image_size^2 "
                      "instead", flag_values=fv)
    define_choice("split_by", "hash", SPLIT_RULES,
                  "split rule: hash (default; train, and validation by "
                  "--validation_fraction) or top_folder (the first folder of each record's "
                  "key: train/, validation/ or test/)", fv)
    flags.DEFINE_float("validation_fraction", None, "fraction in [0, 1) of records (by "
                       "sha256 of their key) in the validation split (--split_by=hash only; "
                       "default 0)", flag_values=fv)
    flags.DEFINE_integer("num_shards", None, "shards per split", flag_values=fv)
    flags.DEFINE_bool("grayscale", False, "keep 1 channel", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "replace an existing data set", flag_values=fv)
    flags.DEFINE_integer("max_member_bytes", DEFAULT_MAX_MEMBER_BYTES,
                         "encoded images (files, zip members, LMDB values) larger than this "
                         "many bytes are bad records (default 64 MiB)", flag_values=fv)
    flags.DEFINE_bool("verify", False, "check the data set in --output_dir against its "
                      "dataset.json (every shard's sha256 and record CRCs, counts, image "
                      "shape) instead of writing one", flag_values=fv)
    add_tfds_flags(fv, PREPROCESS_SPLIT_NOTE)
    return fv


@user_errors(PROG)
def parse_args(argv: Sequence[str]) -> tuple[SimpleNamespace, list[str]]:
    """Our flags -> namespace; everything else is returned for Beam's PipelineOptions. A
    usage error is one line on stderr and SystemExit(2)."""
    fv = define_flags()
    args, rest = parse_flags(fv, argv, PROG, DOC)
    if args.verify:
        extra = [f"--{name}" for name in fv if fv[name].name == name and fv[name].present
                 and name not in VERIFY_FLAGS] + rest
        if extra:
            raise UsageError(f"--verify checks --output_dir only; unexpected {' '.join(extra)}")
        require(args, "output_dir")
        return args, rest
    require(args, "source", "output_dir", "image_size")
    if args.split_by != "hash" and args.validation_fraction is not None:
        raise UsageError(f"--validation_fraction applies only to --split_by=hash; with "
                         f"--split_by={args.split_by} the key's top folder is its split")
    check_source_flags(args)
    return args, rest


@user_errors(PROG, extra=(OSError,))
def verify(output_dir: str) -> int:
    """``--verify --output_dir=DIR``: checks an existing data set against its dataset.json
    (every shard's sha256 and record CRCs, counts, image shape); one line either way."""
    info = dataset_format.read_dataset_info(output_dir)
    done = dataset_verify.verify_data_set(info, full=True)
    print(f"verified {output_dir}: {done['shards']} shards, {done['records']} records, "
          f"{done['bytes']} bytes match dataset.json (sha256, record CRCs, counts, image shape)")
    return 0


@fs_errors.interrupts_as_one_line(PROG)
@user_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 on success; a user error (missing input, bad flag, a full or
    read-only disk) is one line ``python -m beam_jobs.preprocess: error: ...`` on stderr
    and SystemExit(2), Ctrl-C one line ``... interrupted; nothing was committed to DIR``
    and SystemExit(130); ``AD_TRACEBACK=1`` shows the tracebacks."""
    setup_logging()
    fs_errors.drop_failure_logs()  # Beam's tracebacks of a full disk or Ctrl-C: one line
    args, beam_args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.verify:
        return verify(args.output_dir)
    out = args.output_dir
    try:
        with fs_errors.disk_errors(f"writing the data set {out}"):
            info = run_preprocess(
                args.source, args.input, out, args.image_size,
                resize_shorter_side=args.resize_shorter_side, center_crop=args.center_crop,
                validation_fraction=args.validation_fraction, split_by=args.split_by,
                num_shards=args.num_shards, grayscale=args.grayscale,
                overwrite=args.overwrite, pipeline_args=beam_args,
                max_member_bytes=args.max_member_bytes, source_options=source_options(args))
    except (KeyboardInterrupt, Exception) as err:
        if fs_errors.was_interrupted(err):  # also re-raised by Beam as another exception;
            # the work folder is gone (run_preprocess's finally)
            raise KeyboardInterrupt(f"nothing was committed to {out}") from err
        raise
    counts = ", ".join(f"{s} {v['count']}" for s, v in info["splits"].items())
    print(f"wrote {out}: {counts} images {info['image_shape']}, "
          f"{info['num_bad_records']} bad records")
    return 0
