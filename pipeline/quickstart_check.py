"""Uses an exported SavedModel as a deployment would: scores held-out images with the
``score`` signature and writes grids of ``sample`` signature outputs at each temperature
(last quickstart stage). Prints JSON {"bits_per_dim": [...], "log_likelihood_nats": [...],
"grids": {temperature: path}}. Flags are absl's (``--flagfile`` works); a usage error is one
line ``python -m pipeline.quickstart_check: error: ...``, exit code 2."""
from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import tensorflow as tf
from absl import flags

from artifacts import images as images_lib
from artifacts.cli import UsageError, flag_values, parse_flags, require, user_errors
from artifacts.tfrecord_dataset import make_image_dataset

PROG = "python -m pipeline.quickstart_check"


def define_flags() -> flags.FlagValues:
    """The command's flags on a new private FlagValues."""
    fv = flag_values()
    flags.DEFINE_string("saved_model", None, "export version directory (required)",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None, "data set directory (required)", flag_values=fv)
    flags.DEFINE_string("split", "validation", "split of the images to score", flag_values=fv)
    flags.DEFINE_integer("num_score", 8, "images to score", flag_values=fv)
    flags.DEFINE_integer("num_samples", 64, "samples per grid", flag_values=fv)
    flags.DEFINE_string("grid", None, "PNG path of the sample grids (required); _t<T> is "
                        "added before .png", flag_values=fv)
    flags.DEFINE_string("temperatures", "0,1", "comma-separated temperatures", flag_values=fv)
    return fv


@user_errors(PROG)
def parse_args(argv: Sequence[str]) -> SimpleNamespace:
    """The command line -> the flags' values by name; a usage error is one line and
    SystemExit(2)."""
    args, rest = parse_flags(define_flags(), argv, PROG, __doc__)
    if rest:
        raise UsageError(f"unrecognized arguments: {' '.join(rest)}")
    require(args, "saved_model", "data_dir", "grid")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    loaded = tf.saved_model.load(args.saved_model)
    out: dict = {}
    if "score" in loaded.signatures:
        images = next(iter(make_image_dataset(
            args.data_dir, args.split, args.num_score, shuffle=False, repeat=False)))
        scores = loaded.signatures["score"](images=images)
        out["bits_per_dim"] = [float(v) for v in scores["bits_per_dim"].numpy()]
        out["log_likelihood_nats"] = [float(v) for v in scores["log_likelihood_nats"].numpy()]
    seeds = tf.range(args.num_samples, dtype=tf.int64)
    stem, ext = os.path.splitext(args.grid)
    out["grids"] = {}
    for t in (float(v) for v in args.temperatures.split(",")):
        temps = tf.fill([args.num_samples], t)
        samples = loaded.signatures["sample"](seed=seeds, temperature=temps)["images"].numpy()
        out["grids"][f"{t:g}"] = images_lib.save_grid(np.asarray(samples),
                                                      f"{stem}_t{t:g}{ext or '.png'}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
