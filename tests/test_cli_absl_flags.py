"""The command lines that were argparse (``python -m serving.client``, ``pipeline.quickstart``,
``pipeline.quickstart_check``, ``pipeline.train_mnist_classifier``) are absl flags on a
private FlagValues per parse (artifacts.cli): the same flags, defaults and command lines,
``--flagfile`` works (the quickstart's ``--flagfile`` stays its training config), and a
usage error is one line ``<prog>: error: ...`` on stderr, exit code 2, no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline import quickstart, train_mnist_classifier
from serving import client_cli

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flagfile(path, *lines: str) -> str:
    path.write_text("# a comment\n" + "\n".join(lines) + "\n")
    return f"--flagfile={path}"


def _usage_error(capsys, call, *argv: str) -> str:
    """The one stderr line of a usage error of ``call(argv)`` (SystemExit(2))."""
    with pytest.raises(SystemExit) as exc:
        call(list(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return err[0]


def _run(module: str, *argv: str, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("AD_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300, stdin=subprocess.DEVNULL)


# ---- serving.client ---------------------------------------------------------------------

def test_client_defaults_are_argparse_ones():
    args = client_cli.parse_args(["sample", "--out=g.png"])
    assert (args.command, args.images, args.target, args.address, args.model_name,
            args.version, args.format, args.timeout, args.max_batch, args.n, args.out,
            args.seed, args.temperature) == (
        "sample", [], "rest", "localhost:8501", None, None, "row", 60.0, 1024, 16, "g.png",
        0, 1.0)
    args = client_cli.parse_args(["score", "a.png"])
    assert (args.channels, args.max_pixels) == (None, 4096 * 4096)


def test_client_command_lines_parse_as_before():
    """README/serving README command lines: server flags first, then the command with its
    flags (``--n 16`` as two words too), the images after ``score``."""
    args = client_cli.parse_args([
        "--target=grpc", "--address=h:8500", "--model_name=cqf", "--format=columnar",
        "--version=3", "--timeout=5", "--max_batch=7", "-v", "0", "sample", "--n", "4",
        "--out", "g.png", "--seed", "2", "--temperature", "0.5"])
    assert (args.command, args.target, args.address, args.model_name, args.format,
            args.version, args.timeout, args.max_batch, args.n, args.out, args.seed,
            args.temperature) == ("sample", "grpc", "h:8500", "cqf", "columnar", 3, 5.0, 7, 4,
                                  "g.png", 2, 0.5)
    args = client_cli.parse_args(["--target=local", "--address=exports/cqf/1", "score",
                                  "a.png", "b.png", "--channels", "3", "--", "-c.png"])
    assert (args.command, args.images, args.channels) == ("score", ["a.png", "b.png", "-c.png"], 3)


@pytest.mark.parametrize("argv,expected", [
    (["--target=ftp", "score", "x.png"], "flag --target=ftp: invalid choice (choose from rest, "
                                         "grpc, mlflow, local)"),
    ([], "the following arguments are required: command (sample or score)"),
    (["--target=rest"], "the following arguments are required: command (sample or score)"),
    (["draw"], "invalid command 'draw' (choose from sample, score)"),
    (["sample", "--n=2"], "sample: the following flags are required: --out"),
    (["sample", "--out=g.png", "x.png"], "unrecognized arguments: x.png"),
    (["score"], "score: the following arguments are required: images"),
    (["score", "a.png", "--n=3"], "--n: not a flag of score"),
    (["sample", "--out=g.png", "--channels=1"], "--channels: not a flag of sample"),
    (["score", "a.png", "--channels=2"], "flag --channels=2: invalid choice (choose from 1, 3)"),
    (["score", "a.png", "--no_such_flag=1"], "unrecognized arguments: --no_such_flag=1"),
    (["--max_batch=many", "score", "a.png"], "flag --max_batch=many: invalid literal for int()"),
])
def test_client_usage_errors_are_one_line_exit_2(capsys, argv, expected):
    line = _usage_error(capsys, client_cli.main, *argv)
    assert line.startswith(f"python -m serving.client: error: {expected}"), line


def test_client_flagfile_reaches_the_client(tmp_path, capsys):
    """The server flags and score's --max_pixels from a flagfile: the 8x8 image is refused
    by the file's --max_pixels=10 (exit 1, the client's one error line), before any
    connection to the file's unreachable server."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    flagfile = _flagfile(tmp_path / "client.flags", "--target=rest", "--address=127.0.0.1:9",
                         "--model_name=m", "--max_pixels=10", "--format=columnar")
    args = client_cli.parse_args([flagfile, "score", str(image)])
    assert (args.target, args.address, args.model_name, args.max_pixels, args.format) == (
        "rest", "127.0.0.1:9", "m", 10, "columnar")
    assert client_cli.main([flagfile, "score", str(image)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {image}: 8x8 = 64 pixels, over the limit of 10 (--max_pixels); "
                   "the model scores images of its own size"]


def test_python_m_serving_client_runs_the_cli_without_tensorflow(tmp_path):
    """``python -m serving.client`` with a flagfile: the command line runs (exit 1, the
    image error), and neither module imports TensorFlow (a thin client)."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    flagfile = _flagfile(tmp_path / "client.flags", "--address=127.0.0.1:9", "--model_name=m",
                         "--max_pixels=10")
    done = _run("serving.client", flagfile, "score", str(image), cwd=str(tmp_path))
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"error: {image}: 8x8 = 64 pixels, over the limit of 10 (--max_pixels); the model "
        "scores images of its own size"], done.stderr
    code = "import sys, serving.client, serving.client_cli; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


# ---- pipeline.train_mnist_classifier ----------------------------------------------------

def test_train_mnist_classifier_flagfile(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_train(mnist_dir, output, **kwargs):
        calls.append((mnist_dir, output, kwargs))
        return {"accuracy": 0.99, "output": output}

    monkeypatch.setattr(train_mnist_classifier, "train_classifier", fake_train)
    flagfile = _flagfile(tmp_path / "clf.flags", "--mnist_dir=idx", "--output=out",
                         "--epochs=2", "--batch_size=16", "--seed=3", "--min_accuracy=0.5")
    assert train_mnist_classifier.main([flagfile, "--seed=4"]) == 0
    assert calls == [("idx", "out", {"epochs": 2, "batch_size": 16, "seed": 4,
                                     "min_accuracy": 0.5})]
    assert json.loads(capsys.readouterr().out) == {"accuracy": 0.99, "output": "out"}
    calls.clear()
    assert train_mnist_classifier.main(["--mnist_dir=i", "--output=o"]) == 0
    assert calls == [("i", "o", {"epochs": 4, "batch_size": 32, "seed": 0,
                                 "min_accuracy": 0.97})]


@pytest.mark.parametrize("argv,expected", [
    (["--output=x"], "the following flags are required: --mnist_dir"),
    ([], "the following flags are required: --mnist_dir, --output"),
    (["--mnist_dir=i", "--output=o", "--epochs=1.5"], "flag --epochs=1.5: invalid literal"),
    (["--mnist_dir=i", "--output=o", "--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["--mnist_dir=i", "--output=o", "extra"], "unrecognized arguments: extra"),
])
def test_train_mnist_classifier_usage_errors(capsys, argv, expected):
    line = _usage_error(capsys, train_mnist_classifier.main, *argv)
    assert line.startswith(f"python -m pipeline.train_mnist_classifier: error: {expected}"), line


# ---- pipeline.quickstart -----------------------------------------------------------------

def test_quickstart_flagfile_is_the_training_config(tmp_path):
    """``--flagfile=F`` (as MODEL_CARD, README and experiments/ write it) is the training
    config, not absl's flagfile: experiments/quickstart_cosine.cfg holds pipeline.train's
    flags, which are no quickstart flags."""
    mnist = str(tmp_path)
    cosine = "experiments/quickstart_cosine.cfg"
    for argv in ([f"--flagfile={cosine}"], ["--flagfile", cosine], ["-flagfile", cosine],
                 [f"--train_flagfile={cosine}"],
                 ["--flagfile=configs/cifar10_cpu.cfg", f"--flagfile={cosine}"]):
        args = quickstart.parse_args([*argv, f"--mnist_dir={mnist}", "--work_dir=w"])
        assert args.train_flagfile == cosine and args.work_dir == "w", argv
    args = quickstart.parse_args([f"--mnist_dir={mnist}"])
    assert args.train_flagfile == os.path.join(PROJECT_ROOT, "configs", "quickstart.cfg")
    assert (args.work_dir, args.variant, args.fid_samples, args.train_steps,
            args.prior_components) == (os.path.join(PROJECT_ROOT, "work", "quickstart"), "cqf",
                                       2000, None, 50)


def test_quickstart_passes_its_flagfile_to_pipeline_train(tmp_path, monkeypatch):
    """The training stage's command holds ``--flagfile=<the quickstart's --flagfile>`` and
    ``--train_steps`` (the stages are faked; the run stops at the training stage)."""
    class Stop(Exception):
        pass

    commands = []

    def fake_stage(index, total, title, argv, capture=False):
        commands.append(argv)
        if title.startswith("training"):
            raise Stop
        return '{"fid": 1.0, "precision": 0.5}'

    monkeypatch.setattr(quickstart, "run_stage", fake_stage)
    monkeypatch.setattr(quickstart, "preprocess_mnist", lambda *a: False)
    with pytest.raises(Stop):
        quickstart.main(["--flagfile=experiments/quickstart_cosine.cfg", "--train_steps=7",
                         f"--mnist_dir={tmp_path}", f"--work_dir={tmp_path / 'w'}",
                         "--variant=vae"])
    train = commands[-1]
    assert train[1:3] == ["-m", "pipeline.train"]
    assert "--flagfile=experiments/quickstart_cosine.cfg" in train
    assert "--train_steps=7" in train and "--variant=vae" in train


@pytest.mark.parametrize("argv,expected", [
    (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["--train_steps=abc"], "flag --train_steps=abc: invalid literal for int()"),
    (["--mnist_dir=/no/such/dir"], "--mnist_dir='/no/such/dir' does not exist"),
    (["--flagfile=no_such.cfg"], "--flagfile='no_such.cfg': no such training config"),
    (["--flagfile"], "--flagfile: expected --flagfile=TRAINING_CONFIG"),
])
def test_quickstart_usage_errors(capsys, tmp_path, argv, expected):
    extra = [] if any(a.startswith("--mnist_dir") for a in argv) else [f"--mnist_dir={tmp_path}"]
    line = _usage_error(capsys, quickstart.main, *extra, *argv)
    assert line.startswith(f"python -m pipeline.quickstart: error: {expected}"), line


# ---- pipeline.quickstart_check and every CLI in a subprocess ------------------------------

def test_quickstart_check_usage_errors(capsys):
    from pipeline import quickstart_check

    line = _usage_error(capsys, quickstart_check.main, "--saved_model=x")
    assert line == ("python -m pipeline.quickstart_check: error: the following flags are "
                    "required: --data_dir, --grid")
    line = _usage_error(capsys, quickstart_check.main, "--saved_model=x", "--data_dir=d",
                        "--grid=g", "--num_samples=", "--bogus")
    assert line.startswith("python -m pipeline.quickstart_check: error: flag --num_samples=: "), line


@pytest.mark.parametrize("module,argv,expected", [
    ("serving.client", ["--target=ftp", "score", "x.png"], "invalid choice"),
    ("pipeline.quickstart", ["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    ("pipeline.quickstart_check", ["--saved_model=x"], "required: --data_dir, --grid"),
    ("pipeline.train_mnist_classifier", ["--output=x", "--epochs=x"], "flag --epochs=x"),
])
def test_usage_error_in_a_subprocess(tmp_path, module, argv, expected):
    done = _run(module, *argv, cwd=str(tmp_path))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m {module}: error: "), lines
    assert expected in lines[0], lines
