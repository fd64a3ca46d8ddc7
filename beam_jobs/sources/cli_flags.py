"""The command-line flags that choose a raw source (``--source``, ``--input``, the
``--tfds_*`` options), shared by ``python -m beam_jobs.preprocess`` and
``python -m beam_jobs.fid`` (absl flags on the CLI's private FlagValues,
:func:`artifacts.cli.flag_values`).
"""
from __future__ import annotations

from types import SimpleNamespace

from absl import flags

from artifacts.cli import UsageError, define_choice
from beam_jobs.sources.registry import SOURCE_KINDS

TFDS_FLAGS = ("tfds_name", "tfds_data_dir", "tfds_split", "tfds_image_key", "tfds_label_key")


def add_source_flags(fv: flags.FlagValues) -> None:
    """Defines ``--source`` and ``--input`` on ``fv`` (both default None; whether
    ``--source`` is required is the CLI's :func:`artifacts.cli.require`)."""
    define_choice("source", None, SOURCE_KINDS,
                  "raw input kind (lsun_lmdb and imagenet64_npz: local or mounted paths; the "
                  "others: any Beam filesystem path)", fv)
    flags.DEFINE_string(
        "input", None, "raw input path (for --source=tfds: a prepared TFDS directory holding "
        "dataset_info.json, or use --tfds_name); for image_folder and image_zip a "
        "comma-separated list of inputs is read as one data set (keys unique across them, "
        "labels on the union of their class folders)", flag_values=fv)


PREPROCESS_SPLIT_NOTE = "; the output's train/validation split is --validation_fraction's"
TFDS_NOTE = " (--source=tfds: a TFDS data set already prepared locally; nothing is downloaded)"


def add_tfds_flags(fv: flags.FlagValues, split_note: str = "") -> None:
    """Defines the ``--tfds_*`` options of ``--source=tfds`` on ``fv`` (``split_note``
    ends the help of ``--tfds_split``)."""
    flags.DEFINE_string("tfds_name", None, "TFDS name, e.g. cifar10, cifar10:3.0.2, "
                        "lsun/church_outdoor (instead of --input)" + TFDS_NOTE, flag_values=fv)
    flags.DEFINE_string("tfds_data_dir", None, "the TFDS data_dir it was prepared in "
                        "(default: TFDS's, $TFDS_DATA_DIR or ~/tensorflow_datasets)",
                        flag_values=fv)
    flags.DEFINE_string("tfds_split", None, "TFDS split(s) to read, joined by '+', e.g. "
                        "train+test (default train)" + split_note, flag_values=fv)
    flags.DEFINE_string("tfds_image_key", None, "image feature (default image)",
                        flag_values=fv)
    flags.DEFINE_string("tfds_label_key", None, "label feature (default label if present; "
                        "'' for none)", flag_values=fv)


def check_source_flags(args: SimpleNamespace) -> None:
    """Splits a comma-separated ``--input`` into a list (one input stays a str); raises
    :class:`~artifacts.cli.UsageError` for a source without its input or with another
    kind's options."""
    tfds_flags = [n for n in TFDS_FLAGS if getattr(args, n) is not None]
    if args.input is not None:
        inputs = [part.strip() for part in args.input.split(",")]
        if len(inputs) > 1 and not all(inputs):
            raise UsageError(f"--input={args.input!r}: an empty entry in the comma-separated "
                             "list")
        args.input = inputs[0] if len(inputs) == 1 else inputs
    if args.source is None:
        given = ["input"] * (args.input is not None) + tfds_flags
        if given:
            raise UsageError(f"--{given[0]} needs --source (one of {', '.join(SOURCE_KINDS)})")
    elif args.source == "tfds":
        if bool(args.input) == bool(args.tfds_name):
            raise UsageError("--source=tfds needs exactly one of --input and --tfds_name")
    else:
        if not args.input:
            raise UsageError(f"--source={args.source} needs --input")
        if tfds_flags:
            raise UsageError(f"--{tfds_flags[0]} applies only to --source=tfds")


def source_options(args: SimpleNamespace) -> dict | None:
    """The planner options of the flags (``--source=tfds``; None for other kinds)."""
    if args.source != "tfds":
        return None
    return {"name": args.tfds_name, "data_dir": args.tfds_data_dir, "split": args.tfds_split,
            "image_key": args.tfds_image_key, "label_key": args.tfds_label_key}
