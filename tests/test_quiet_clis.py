"""No command line prints TensorFlow's C++ start-up lines, CUDA-driver notes or Beam's
"apitools not found" warning on a machine without a GPU (artifacts.quiet_start); real
warnings and errors stay, and ``AD_TRACEBACK=1`` / ``--verbosity=1`` bring everything back.

Each CLI runs ``--helpshort`` (absl) or ``--help`` (argparse) and one user error in a
subprocess, one after the other; its stderr must be exactly the expected lines. One
TensorFlow CLI runs by default, the others (~10 s each) with the slow tests.
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
import subprocess
import sys

import pytest

from artifacts import quiet_start

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGE = r"(usage: |\s{2,}\S)"  # argparse's usage block: first line and its continuations
CUDA_NOTE = "Could not find cuda drivers"


def _no_gpu() -> bool:
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def _run(args: list[str], cwd: str, **env: str) -> subprocess.CompletedProcess:
    """``python <args>`` with the environment of a user: no TF_CPP_MIN_LOG_LEVEL (conftest
    sets one), no AD_TRACEBACK, plus ``env``."""
    full = dict(os.environ, PYTHONPATH=PROJECT_ROOT, **env)
    for name in ("TF_CPP_MIN_LOG_LEVEL", "AD_TRACEBACK"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=300, stdin=subprocess.DEVNULL)


def _assert_only(stderr: str, expected: list[str]) -> None:
    """Every stderr line matches one of the ``expected`` regexes, and each of those that
    is not the usage block matches some line."""
    lines = stderr.splitlines()
    for line in lines:
        assert any(re.search(p, line) for p in expected), f"unexpected line {line!r} in\n{stderr}"
    for p in expected:
        if p != USAGE:
            assert any(re.search(p, ln) for ln in lines), f"no line matches {p!r} in\n{stderr}"


# ---- the filter itself -------------------------------------------------------------------

STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796616187.783722    3842 port.cc:153] oneDNN custom operations are on. You may \
see slightly different numerical results due to floating-point round-off errors.
I0000 00:00:1796545277.304952   20307 cudart_stub.cc:31] Could not find cuda drivers on your \
machine, GPU will not be used.
W0000 00:00:1796545277.4   20307 some_op.cc:12] a real warning
E0000 00:00:1796545294.812928   20368 cuda_platform.cc:52] failed call to cuInit: INTERNAL: \
CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
/x/y.py:3: UserWarning: a Python warning
"""


def test_noise_filter_keeps_only_real_lines():
    noise = quiet_start.StartupNoise(hide_info=True)
    assert noise.filter(STARTUP) == ("W0000 00:00:1796545277.4   20307 some_op.cc:12] a real "
                                     "warning\n/x/y.py:3: UserWarning: a Python warning\n")
    assert noise.no_driver and noise.dropped == 4


def test_cpp_info_lines_are_kept_when_the_log_level_shows_info():
    """The oneDNN note (logged on an AVX-512 BF16 CPU before TensorFlow reads
    TF_CPP_MIN_LOG_LEVEL) goes only while that level hides INFO."""
    onednn = STARTUP.splitlines(keepends=True)[1]
    assert quiet_start.StartupNoise(hide_info=False).filter(onednn) == onednn
    assert quiet_start.StartupNoise(hide_info=True).filter(onednn) == ""


def test_cuinit_failure_is_kept_when_a_driver_was_found():
    """A machine whose CUDA driver loads but fails: the cuInit error is news."""
    cuinit = STARTUP.splitlines(keepends=True)[3]
    assert quiet_start.StartupNoise().filter(cuinit) == cuinit


def test_verbosity_flag_spellings():
    assert quiet_start.verbosity_from_argv(["--x", "--verbosity=2"]) == 2
    assert quiet_start.verbosity_from_argv(["-v", "1", "score"]) == 1
    assert quiet_start.verbosity_from_argv(["--v=-1"]) == -1
    assert quiet_start.verbosity_from_argv(["--verbosity"]) == 0
    assert quiet_start.verbosity_from_argv(["--verbose=3", "-vv"]) == 0
    assert quiet_start.verbose_requested(["-v", "1"], {})
    assert not quiet_start.verbose_requested(["-v", "0"], {"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert quiet_start.verbose_requested([], {"AD_TRACEBACK": "1"})
    assert quiet_start.verbose_requested([], {"TF_CPP_MIN_LOG_LEVEL": "0"})


def test_quiet_block_filters_fd2_and_keeps_real_output(capfd):
    with quiet_start.quiet():
        os.write(2, STARTUP.encode())
        print("python-level line", file=sys.stderr)
    err = capfd.readouterr().err  # pytest's sys.stderr bypasses fd 2: compare as a set
    assert sorted(err.splitlines()) == [
        "/x/y.py:3: UserWarning: a Python warning", "W0000 00:00:1796545277.4   20307 "
        "some_op.cc:12] a real warning", "python-level line"]


def test_apitools_record_is_dropped_other_root_records_kept(caplog):
    with caplog.at_level(logging.WARNING):
        logging.getLogger().warning("apitools not found, and bigquery client libraries are "
                                    "not available despite the import not raising")
        logging.getLogger().warning("something real")
    assert [r.getMessage() for r in caplog.records] == ["something real"]


# ---- in a fresh process ------------------------------------------------------------------

def test_quiet_import_keeps_real_log_records_once_and_configures_nothing(tmp_path):
    """A warning logged during a quiet import still shows (once, via logging.lastResort
    as without the hook); Beam's apitools record does not, and the root logger stays
    unconfigured for the command's own setup_logging."""
    code = ("import logging, sys; from artifacts import quiet_start as q\n"
            "with q.quiet():\n"
            "    logging.getLogger('x').warning('kept')\n"
            "    logging.warning(q.APITOOLS + ' despite the import not raising')\n"
            "print(logging.getLogger().handlers)")
    result = _run(["-c", code], str(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == "[]", result
    _assert_only(result.stderr, [r"^kept$"])
    assert result.stderr.count("kept") == 1


IMPORT_TF = ["-c", "import pipeline, tensorflow as tf; tf.constant(1) + 1; "
             "import warnings; warnings.warn('kept')"]


@pytest.mark.skipif(not _no_gpu(), reason="the noise lines are those of a machine without a GPU")
def test_tensorflow_import_and_first_op_are_quiet(tmp_path):
    result = _run(IMPORT_TF, str(tmp_path))
    assert result.returncode == 0, result.stderr
    _assert_only(result.stderr, [r"^<string>:1: UserWarning: kept$"])


@pytest.mark.skipif(not _no_gpu(), reason="the noise lines are those of a machine without a GPU")
def test_ad_traceback_brings_the_startup_lines_back(tmp_path):
    result = _run(IMPORT_TF, str(tmp_path), AD_TRACEBACK="1")
    assert result.returncode == 0, result.stderr
    assert CUDA_NOTE in result.stderr and "UserWarning: kept" in result.stderr


def test_beam_cli_logging_keeps_its_format_and_level(tmp_path):
    """Beam's apitools warning is dropped without configuring the root logger first (a
    ``logging.warning`` call does that), so setup_logging's INFO format holds."""
    code = ("import beam_jobs, apache_beam, logging; from artifacts.cli import setup_logging; "
            "setup_logging(); logging.getLogger('x').info('hello')")
    result = _run(["-c", code], str(tmp_path))
    assert result.returncode == 0, result.stderr
    _assert_only(result.stderr, [r"^\d{4}-\d\d-\d\d [\d:,]+ INFO x: hello$"])


# ---- every CLI: help and one user error --------------------------------------------------

def _cli_cases(missing: str) -> dict[str, list[tuple[list[str], list[str]]]]:
    """CLI -> [(arguments after ``-m CLI``, expected stderr line regexes)]: help first,
    then a user error."""
    m = re.escape(missing)
    absl_error = r"^python -m {}: error: .*" + m
    return {
        "pipeline.train": [(["--helpshort"], []), (
            [f"--data_dir={missing}", f"--model_dir={missing}_m"],
            [absl_error.format(r"pipeline\.train") + ".* does not exist"])],
        "pipeline.evaluate": [(["--helpshort"], []), (
            [f"--model_dir={missing}"],
            [absl_error.format(r"pipeline\.evaluate") + ".*not a model directory"])],
        "pipeline.fit_prior": [(["--helpshort"], []), (
            [f"--model_dir={missing}", f"--output_model_dir={missing}_o"],
            [absl_error.format(r"pipeline\.fit_prior") + ".*not a model directory"])],
        "pipeline.critic_eval": [(["--helpshort"], []), (
            [f"--model_dir={missing}", f"--data_dir={missing}"],
            [absl_error.format(r"pipeline\.critic_eval") + ".* does not exist"])],
        "pipeline.surrogate_likelihood": [(["--helpshort"], []), (
            [f"--model_dir={missing}", f"--data_dir={missing}"],
            [absl_error.format(r"pipeline\.surrogate_likelihood") + ".* does not exist"])],
        "serving.export": [(["--helpshort"], []), (
            [f"--model_dir={missing}", f"--export_dir={missing}_x", "--model_name=m",
             "--nomlflow"], [absl_error.format(r"serving\.export") + ".*not a model directory"])],
        "beam_jobs.fid.train_classifier": [(["--help"], []), (
            [f"--data_dir={missing}", f"--output={missing}_o"],
            [r"^python -m beam_jobs\.fid\.train_classifier: error: data directory .* does not exist"])],
        "pipeline.quickstart": [(["--helpshort"], []), (
            ["--no_such_flag"],
            [r"^python -m pipeline\.quickstart: error: unrecognized arguments: --no_such_flag$"])],
        "pipeline.quickstart_check": [(["--helpshort"], []), (
            ["--saved_model=x"],
            [r"^python -m pipeline\.quickstart_check: error: .* required: --data_dir, --grid$"])],
        "pipeline.train_mnist_classifier": [(["--helpshort"], []), (
            ["--output=x"],
            [r"^python -m pipeline\.train_mnist_classifier: error: .* required: --mnist_dir$"])],
        "beam_jobs.preprocess": [(["--help"], []), (
            ["--source=image_folder", f"--input={missing}", f"--output_dir={missing}_o",
             "--image_size=8"],
            [r"^python -m beam_jobs\.preprocess: error: input .*" + m + ".* does not exist"])],
        "beam_jobs.fid": [(["--help"], []), (
            [f"--data_dir={missing}", f"--extractor_path={missing}", f"--output_stats={missing}"],
            [r"^error: extractor SavedModel directory .*" + m + ".* does not exist"])],
        "serving.client": [(["--helpshort"], []), (
            ["--target=local", f"--address={missing}", "score", "x.png"],
            # the client reads its image argument before it connects: a missing image is
            # the first user error it meets
            [r"^error: .*No such file or directory: 'x\.png'"])],
    }


FAST_CLIS = {"pipeline.train"}
CLIS = [c if c in FAST_CLIS else pytest.param(c, marks=pytest.mark.slow)
        for c in sorted(_cli_cases("x"))]


# ``python -m`` entry points that are no user's command: Beam's multi-processing runner
# starts its SDK worker processes with this module.
INTERNAL_ENTRY_POINTS = {"beam_jobs.runtime.quiet_workers"}


def test_every_cli_with_a_main_is_covered():
    """A new ``python -m`` entry point of the CLI packages must be added to the cases."""
    found = {".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__main__")
             for package in ("pipeline", "beam_jobs", "serving", "artifacts")
             for path in pathlib.Path(PROJECT_ROOT, package).rglob("*.py")
             if 'if __name__ == "__main__":' in path.read_text()}
    assert found - INTERNAL_ENTRY_POINTS == set(_cli_cases("x"))


@pytest.mark.skipif(not _no_gpu(), reason="the noise lines are those of a machine without a GPU")
@pytest.mark.parametrize("cli", CLIS)
def test_cli_stderr_holds_only_the_expected_lines(cli, tmp_path):
    for args, expected in _cli_cases(str(tmp_path / "missing"))[cli]:
        result = _run(["-m", cli, *args], str(tmp_path))
        assert result.returncode != 0 or not expected, result.stderr
        _assert_only(result.stderr, expected)


@pytest.mark.slow
@pytest.mark.skipif(not _no_gpu(), reason="the noise lines are those of a machine without a GPU")
@pytest.mark.parametrize("cli,args", [("pipeline.evaluate", ["--helpshort", "--verbosity=1"]),
                                      ("beam_jobs.fid", ["--help", "-v", "1"])])
def test_verbosity_flag_brings_the_startup_lines_back(cli, args, tmp_path):
    result = _run(["-m", cli, *args], str(tmp_path))
    assert CUDA_NOTE in result.stderr, result.stderr
