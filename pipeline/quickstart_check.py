"""Uses an exported SavedModel as a deployment would: scores held-out images with the
``score`` signature and writes grids of ``sample`` signature outputs at each temperature
(last quickstart stage). Prints JSON {"bits_per_dim": [...], "log_likelihood_nats": [...],
"grids": {temperature: path}}."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf

from artifacts import images as images_lib
from pipeline import data as data_lib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saved_model", required=True, help="export version directory")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--num_score", type=int, default=8)
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--grid", required=True,
                        help="PNG path of the sample grids; _t<T> is added before .png")
    parser.add_argument("--temperatures", default="0,1", help="comma-separated temperatures")
    parser.add_argument("-v", "--verbosity", type=int, default=0, help="1: TF/Beam start-up noise")
    args = parser.parse_args(argv)
    loaded = tf.saved_model.load(args.saved_model)
    out: dict = {}
    if "score" in loaded.signatures:
        images = next(iter(data_lib.make_image_dataset(
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
