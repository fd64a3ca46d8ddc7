"""The entropic-GAN surrogate likelihood's data-set demo (Balaji et al., 2019): a generator
trained on MNIST digit "1" only should score held-out "1"s higher than other digits and
than grey CIFAR-10 images.

    python experiments/surrogate_mnist_ones.py [--work_dir work/surrogate_ones] \
        [--train_steps 800] [--entropic_lambda 0.05] [--out experiments/results/surrogate_mnist_ones.md]

Steps, each a project command: the shared MNIST test digits split into a folder of "1"s
and a folder of the other digits, the shared CIFAR-10 JPEGs, each through
``beam_jobs.preprocess`` (28x28 grey); ``pipeline.train`` of the quickstart's `cqf`
(``configs/quickstart.cfg`` but ``--train_steps``) on the "1"s' training split; then
``pipeline.surrogate_likelihood`` on the held-out "1"s, the other digits and the grey
CIFAR images with the same generator draws (same seed, M, lambda). Finished steps are
kept when the script is run again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), "shared", "data")


def run(*args: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    print("$ python -m " + " ".join(args), flush=True)
    out = subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, env=env, text=True,
                         stdout=subprocess.PIPE)
    if out.returncode:
        raise SystemExit(f"{args[0]} failed with exit code {out.returncode}")
    return out.stdout


def digit_folders(mnist_dir: str, work: str) -> tuple[str, str]:
    """PNG folders (class subfolders) of every "1" and of the first 1,000 other digits."""
    from PIL import Image

    from beam_jobs.sources.mnist_idx import load_mnist

    ones, others = os.path.join(work, "png_ones"), os.path.join(work, "png_others")
    if not os.path.isdir(ones):
        images, labels = load_mnist(mnist_dir)
        taken = 0
        for i, (image, label) in enumerate(zip(images, labels)):
            if label != 1 and taken >= 1000:
                continue
            root = ones if label == 1 else others
            taken += label != 1
            os.makedirs(os.path.join(root, str(label)), exist_ok=True)
            Image.fromarray(image).save(os.path.join(root, str(label), f"{i:05d}.png"))
    return ones, others


def preprocess(source: str, path: str, out: str, validation_fraction: float) -> str:
    if not os.path.isfile(os.path.join(out, "dataset.json")):
        run("beam_jobs.preprocess", f"--source={source}", f"--input={path}",
            f"--output_dir={out}", "--image_size=28", "--grayscale",
            f"--validation_fraction={validation_fraction}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work_dir", default=os.path.join(PROJECT_ROOT, "work", "surrogate_ones"))
    p.add_argument("--mnist_dir", default=os.path.join(SHARED, "mnist_test"))
    p.add_argument("--cifar_zip", default=os.path.join(SHARED, "cifar10_test_jpg",
                                                       "cifar10_test_jpg.zip"))
    p.add_argument("--train_steps", type=int, default=800)
    p.add_argument("--num_generated", type=int, default=2000)
    p.add_argument("--entropic_lambda", type=float, default=0.05,
                   help="0.05: per-pixel noise variance 0.025 on [0, 1] pixels; with 5 the "
                        "same ordering holds but every row is near 10 bits/dim")
    p.add_argument("--max_examples", type=int, default=500)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    ones_png, others_png = digit_folders(args.mnist_dir, work)
    ones = preprocess("image_folder", ones_png, os.path.join(work, "ones"), 0.3)
    others = preprocess("image_folder", others_png, os.path.join(work, "others"), 0.5)
    cifar = preprocess("image_zip", args.cifar_zip, os.path.join(work, "cifar_grey"), 0.1)
    model_dir = os.path.join(work, "cqf_ones")
    run("pipeline.train", f"--flagfile={os.path.join(PROJECT_ROOT, 'configs', 'quickstart.cfg')}",
        f"--data_dir={ones}", f"--model_dir={model_dir}", f"--train_steps={args.train_steps}",
        "--noshow_progress", f"--mlflow_tracking_uri=sqlite:///{work}/mlflow.db")
    rows = []
    for name, data in (("held-out 1s", ones), ("other digits", others),
                       ("grey CIFAR-10", cifar)):
        out = run("pipeline.surrogate_likelihood", f"--model_dir={model_dir}",
                  f"--data_dir={data}", "--split=validation",
                  f"--num_generated={args.num_generated}",
                  f"--entropic_lambda={args.entropic_lambda}",
                  f"--max_examples={args.max_examples}", "--noshow_progress")
        summary = json.loads(out[out.rfind("\n{") + 1:])
        rows.append((name, summary))
        print(f"{name}: {summary['log_likelihood_nats']:.1f} nats", flush=True)
    lines = [
        "# Surrogate log-likelihood of a generator trained on MNIST \"1\"s only",
        "",
        f"`python experiments/surrogate_mnist_ones.py --train_steps {args.train_steps} "
        f"--entropic_lambda {args.entropic_lambda:g}`: `cqf` "
        f"with configs/quickstart.cfg for {args.train_steps} steps on the \"1\"s of the shared "
        f"MNIST test set (70 % of them); entropic lambda {args.entropic_lambda:g}, M = "
        f"{args.num_generated} generator draws at temperature 0, batches of 500 real images, "
        f"at most {args.max_examples} images per row. Nats on [0, 1)^784 (higher = more "
        "likely); bits/dim of the 8-bit image (lower = more likely).",
        "",
        "| images | N | surrogate log-likelihood (nats) | bits/dim |",
        "|---|---|---|---|",
    ]
    for name, s in rows:
        lines.append(f"| {name} | {s['num_examples']} | {s['log_likelihood_nats']:.1f} ± "
                     f"{s['log_likelihood_stderr']:.1f} | {s['bpd']:.3f} ± {s['bpd_stderr']:.3f} |")
    ordered = rows[0][1]["log_likelihood_nats"] > max(s["log_likelihood_nats"] for _, s in rows[1:])
    lines += ["", "Held-out \"1\"s score highest: " + ("**yes**" if ordered else "**no**") + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
