"""``python -m beam_jobs.preprocess``: the flags of :func:`~beam_jobs.preprocess.job.run_preprocess`,
``--verify``, and one-line user errors, disk errors and interrupts."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Sequence

from artifacts import dataset_format, dataset_verify, fs_errors
from artifacts.cli import setup_logging
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
    add_source_flags(p)
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
    add_tfds_flags(p, PREPROCESS_SPLIT_NOTE)
    args, rest = p.parse_known_args(argv)
    if args.split_by != "hash" and args.validation_fraction is not None:
        p.error(f"--validation_fraction applies only to --split_by=hash; with "
                f"--split_by={args.split_by} the key's top folder is its split")
    check_source_flags(p, args)
    return args, rest


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
        done = dataset_verify.verify_data_set(info, full=True)
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
            max_member_bytes=args.max_member_bytes, source_options=source_options(args))
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
