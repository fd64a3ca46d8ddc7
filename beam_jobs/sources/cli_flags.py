"""The command-line flags that choose a raw source (``--source``, ``--input``, the
``--tfds_*`` options), shared by ``python -m beam_jobs.preprocess`` and
``python -m beam_jobs.fid``.
"""
from __future__ import annotations

import argparse

from beam_jobs.sources.registry import SOURCE_KINDS

TFDS_FLAGS = ("tfds_name", "tfds_data_dir", "tfds_split", "tfds_image_key", "tfds_label_key")


def add_source_flags(p: argparse.ArgumentParser, *, required: bool = True,
                     group: argparse._ActionsContainer | None = None) -> None:
    """Adds ``--source`` (required unless ``required`` is False), ``--input`` (to
    ``group``, default ``p``) and the ``--tfds_*`` group to ``p``."""
    g = group or p
    g.add_argument("--source", required=required, choices=SOURCE_KINDS,
                   help="raw input kind (lsun_lmdb and imagenet64_npz: local or mounted paths; "
                        "the others: any Beam filesystem path)")
    g.add_argument("--input", help="raw input path (for --source=tfds: a prepared TFDS "
                   "directory holding dataset_info.json, or use --tfds_name); for "
                   "image_folder and image_zip a comma-separated list of inputs is read as "
                   "one data set (keys unique across them, labels on the union of their "
                   "class folders)")


PREPROCESS_SPLIT_NOTE = "; the output's train/validation split is --validation_fraction's"


def add_tfds_flags(p: argparse.ArgumentParser, split_note: str = "") -> None:
    """Adds the ``--tfds_*`` options of ``--source=tfds`` as their own group
    (``split_note`` ends the help of ``--tfds_split``)."""
    t = p.add_argument_group("--source=tfds (a TFDS data set already prepared locally; "
                             "nothing is downloaded)")
    t.add_argument("--tfds_name", help="TFDS name, e.g. cifar10, cifar10:3.0.2, "
                   "lsun/church_outdoor (instead of --input)")
    t.add_argument("--tfds_data_dir", help="the TFDS data_dir it was prepared in (default: "
                   "TFDS's, $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    t.add_argument("--tfds_split", default=None, help="TFDS split(s) to read, joined by '+', "
                   "e.g. train+test (default train)" + split_note)
    t.add_argument("--tfds_image_key", default=None, help="image feature (default image)")
    t.add_argument("--tfds_label_key", default=None, help="label feature (default label if "
                   "present; '' for none)")


def check_source_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Splits a comma-separated ``--input`` into a list (one input stays a str) and exits
    through ``p.error`` for a source without its input or with another kind's options."""
    tfds_flags = [n for n in TFDS_FLAGS if getattr(args, n) is not None]
    if args.input is not None:
        inputs = [part.strip() for part in args.input.split(",")]
        if len(inputs) > 1 and not all(inputs):
            p.error(f"--input={args.input!r}: an empty entry in the comma-separated list")
        args.input = inputs[0] if len(inputs) == 1 else inputs
    if args.source is None:
        given = ["input"] * (args.input is not None) + tfds_flags
        if given:
            p.error(f"--{given[0]} needs --source (one of {', '.join(SOURCE_KINDS)})")
    elif args.source == "tfds":
        if bool(args.input) == bool(args.tfds_name):
            p.error("--source=tfds needs exactly one of --input and --tfds_name")
    else:
        if not args.input:
            p.error(f"--source={args.source} needs --input")
        if tfds_flags:
            p.error(f"--{tfds_flags[0]} applies only to --source=tfds")


def source_options(args: argparse.Namespace) -> dict | None:
    """The planner options of the flags (``--source=tfds``; None for other kinds)."""
    if args.source != "tfds":
        return None
    return {"name": args.tfds_name, "data_dir": args.tfds_data_dir, "split": args.tfds_split,
            "image_key": args.tfds_image_key, "label_key": args.tfds_label_key}
