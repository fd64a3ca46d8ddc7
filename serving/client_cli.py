"""``python -m serving.client``: the command line of :mod:`serving.client` (absl flags on a
private FlagValues per parse, :mod:`artifacts.cli`; no TensorFlow import, as the client).

    python -m serving.client --target=rest --address=localhost:8501 --model_name=cqf \\
        sample --n 16 --out grid.png [--seed 0] [--temperature 1.0]
    python -m serving.client --target=grpc --address=localhost:8500 --model_name=cqf \\
        score a.png b.png            # bits/dim per image (point estimate; IW bound if exported)
    python -m serving.client --target=mlflow --address=127.0.0.1:5001 sample --n 4 --out g.png
    python -m serving.client --target=local --address=exports/cqf/1 score a.png   # no server

The first word that is not a flag is the command (``sample`` or ``score``); the words after
``score`` are its images. Flags may stand anywhere and in a ``--flagfile`` (one
``--flag=value`` per line), e.g. the server's ``--target``, ``--address`` and
``--model_name``. A usage error (unknown flag or command, a flag of the other command, a
bad value) is one line ``python -m serving.client: error: ...``, exit code 2; an error of
the images or the server is one line ``error: ...``, exit code 1.
"""
from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Sequence

import numpy as np
from absl import flags

from artifacts.cli import UsageError, define_choice, flag_values, one_line, parse_flags, user_errors
from serving.client import DEFAULT_MAX_BATCH, ServingError, make_client

PROG = "python -m serving.client"
DOC = f"""\
Clients for an exported model served by TF Serving (REST or gRPC) or by `mlflow models
serve`, or run in this process (--target=local).

usage: {PROG} [flags] sample --out=PNG [--n=16] [--seed=0] [--temperature=1.0]
       {PROG} [flags] score IMAGE [IMAGE ...] [--channels=1|3] [--max_pixels=N]"""
MAX_IMAGE_PIXELS = 4096 * 4096  # pixels of an image to score (the models' are far smaller)
MAX_SAMPLES = 10000  # sample --n: a grid of 10,000 images; 100,000 took 1.4 GB and minutes
COMMAND_FLAGS = {"sample": ("n", "out", "seed", "temperature"),
                 "score": ("channels", "max_pixels")}


def define_flags() -> flags.FlagValues:
    """Every flag of the client (both commands') on a new private FlagValues."""
    fv = flag_values()
    define_choice("target", "rest", ("rest", "grpc", "mlflow", "local"),
                  "TF Serving REST or gRPC, `mlflow models serve`, or an export run here", fv)
    flags.DEFINE_string("address", "localhost:8501", "host:port (TF Serving REST 8501, gRPC "
                        "8500), the MLflow server URL, or (--target=local) an export's "
                        "version directory", flag_values=fv)
    flags.DEFINE_string("model_name", None, "TF Serving model name (rest/grpc)", flag_values=fv)
    flags.DEFINE_integer("version", None, "TF Serving model version", flag_values=fv)
    define_choice("format", "row", ("row", "columnar"),
                  "REST request format: row (instances) or columnar (inputs)", fv)
    flags.DEFINE_float("timeout", 60.0, "seconds per request", flag_values=fv)
    flags.DEFINE_integer("max_batch", DEFAULT_MAX_BATCH, "most rows per request (the "
                         "export's --max_batch); larger jobs are sent in chunks", flag_values=fv)
    flags.DEFINE_integer("n", 16, f"sample: samples, 1 to {MAX_SAMPLES}", flag_values=fv)
    flags.DEFINE_string("out", None, "sample (required): PNG path of the grid", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "sample: row i uses seed + i", flag_values=fv)
    flags.DEFINE_float("temperature", 1.0, "sample: prior temperature", flag_values=fv)
    define_choice("channels", None, ("1", "3"), "score: convert images to grey (1) or RGB "
                  "(3); default: as stored", fv)
    flags.DEFINE_integer("max_pixels", MAX_IMAGE_PIXELS, "score: refuse images of more "
                         "pixels (checked from the header, before decoding; default "
                         f"{MAX_IMAGE_PIXELS})", flag_values=fv)
    return fv


def _positionals(rest: Sequence[str]) -> list[str]:
    """The words of ``rest`` that are not flags (all after ``--``); UsageError naming
    the flags that are not ours."""
    words, unknown, dashdash = [], [], False
    for arg in rest:
        if dashdash or not arg.startswith("-") or arg == "-":
            words.append(arg)
        elif arg == "--":
            dashdash = True
        else:
            unknown.append(arg)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    return words


@user_errors(PROG)
def parse_args(argv: Sequence[str]) -> SimpleNamespace:
    """The command line -> namespace with ``command`` ('sample' or 'score') and ``images``
    (score's files). A usage error is one line on stderr and SystemExit(2)."""
    fv = define_flags()
    args, rest = parse_flags(fv, argv, PROG, DOC)
    words = _positionals(rest)
    if not words:
        raise UsageError("the following arguments are required: command (sample or score)")
    args.command, args.images = words[0], words[1:]
    if args.command not in COMMAND_FLAGS:
        raise UsageError(f"invalid command {args.command!r} (choose from sample, score)")
    other = [f"--{name}" for command, names in COMMAND_FLAGS.items() if command != args.command
             for name in names if fv[name].present]
    if other:
        raise UsageError(f"{' '.join(other)}: not a flag of {args.command}")
    if args.command == "sample":
        if args.images:
            raise UsageError(f"unrecognized arguments: {' '.join(args.images)}")
        if args.out is None:
            raise UsageError("sample: the following flags are required: --out")
    elif not args.images:
        raise UsageError("score: the following arguments are required: images")
    args.channels = None if args.channels is None else int(args.channels)
    return args


def load_images(paths: Sequence[str], channels: int | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS) -> list[np.ndarray]:
    """PNG/JPEG files -> uint8 [H, W, C] arrays (C from the file, or forced to 1 or 3).
    An image whose header declares more than ``max_pixels`` pixels (or that PIL calls a
    decompression bomb) is a ValueError naming it, raised before it is decoded."""
    from PIL import Image

    out = []
    for path in paths:
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as err:
            raise ValueError(f"{path}: refused, {err}") from None
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise ValueError(f"{path}: {width}x{height} = {width * height} pixels, over the "
                                 f"limit of {max_pixels} (--max_pixels); the model scores "
                                 "images of its own size")
            if channels == 1 or (channels is None and img.mode in ("L", "LA", "I", "1")):
                arr = np.asarray(img.convert("L"))[..., None]
            else:
                arr = np.asarray(img.convert("RGB"))
        out.append(arr.astype(np.uint8))
    return out


def _make_client(args: SimpleNamespace):
    """make_client of the flags; an export that does not load for --target=local (a
    truncated or damaged variables file, a folder that is no SavedModel) is a ValueError
    naming it, not TensorFlow's traceback (``AD_TRACEBACK=1`` shows it)."""
    try:
        return make_client(args.target, args.address, args.model_name, args.format,
                           args.version, args.timeout, args.max_batch)
    except (ServingError, ValueError, OSError):
        raise
    except Exception as err:
        if args.target != "local" or os.environ.get("AD_TRACEBACK"):
            raise
        raise ValueError(f"--address={args.address}: the export does not load "
                         f"({type(err).__name__}: {one_line(err)}); expected a version "
                         "directory written whole by python -m serving.export (export the "
                         "model again)") from err


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 on success; an error of the images or the server is one line
    ``error: ...`` on stderr and exit code 1; a usage error SystemExit(2) (one line)."""
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.command == "sample" and not 1 <= args.n <= MAX_SAMPLES:
            raise ValueError(f"--n={args.n}: expected 1 to {MAX_SAMPLES} samples (one grid; "
                             "draw more with several calls and --seed)")
        if args.command == "score":  # the files first: a bad one costs no connection
            images = load_images(args.images, args.channels, args.max_pixels)
        client = _make_client(args)
        if args.command == "sample":
            from artifacts.images import save_grid

            images = client.sample(np.arange(args.seed, args.seed + args.n), args.temperature)
            print(save_grid(images, args.out))
            return 0
        shapes = {im.shape for im in images}
        if len(shapes) == 1:  # one request for the batch (chunked above max_batch)
            results = client.score(np.stack(images))
            rows = [{k: v[i] for k, v in results.items()} for i in range(len(images))]
        else:
            rows = [{k: v[0] for k, v in client.score(im[None]).items()} for im in images]
        for path, r in zip(args.images, rows):
            line = (f"{path}\t{float(r['bits_per_dim']):.4f} bits/dim\t"
                    f"{float(r['log_likelihood_nats']):.2f} nats (point estimate)")
            if "iw_bits_per_dim" in r:
                line += (f"\tIW bound {float(r['iw_bits_per_dim']):.4f} +- "
                         f"{float(r['iw_bits_per_dim_stderr']):.4f} bits/dim")
            print(line)
        return 0
    except (ServingError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
