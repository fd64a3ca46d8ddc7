"""The Beam jobs' command lines (``python -m beam_jobs.preprocess``, ``beam_jobs.fid``,
``beam_jobs.fid.train_classifier``) are absl flags on a private FlagValues per parse
(artifacts.cli.parse_flags): ``--flagfile`` works for every flag and may hold Beam options,
which reach Beam's PipelineOptions like the unknown flags of the command line; a usage
error is one line ``<prog>: error: ...`` on stderr, exit code 2, no traceback."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
from PIL import Image

from beam_jobs import preprocess
from beam_jobs.fid import cli as fid_cli
from beam_jobs.fid import train_classifier
from beam_jobs.runtime.beam_options import pipeline_options

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flagfile(path, *lines: str) -> str:
    path.write_text("# a comment\n" + "\n".join(lines) + "\n")
    return f"--flagfile={path}"


def _images(folder, n: int = 6) -> str:
    rng = np.random.default_rng(5)
    (folder / "a").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(
            folder / "a" / f"{i}.png")
    return str(folder)


# ---- flagfiles --------------------------------------------------------------------------

def test_preprocess_from_a_flagfile_with_beam_options(tmp_path, caplog, capsys):
    """Every flag of the job from a flagfile, the Beam options in it too: the job runs with
    them (mode and workers logged) and writes the shards of the same call by argument."""
    images = _images(tmp_path / "in")
    out = tmp_path / "out"
    flagfile = _flagfile(tmp_path / "job.flags", "--source=image_folder", f"--input={images}",
                         f"--output_dir={out}", "--image_size=8", "--grayscale",
                         "--no-center_crop", "--direct_running_mode=multi_threading",
                         "--direct_num_workers=2")
    with caplog.at_level(logging.INFO, logger="beam_jobs.runtime.beam_options"):
        assert preprocess.main([flagfile]) == 0
    assert f"wrote {out}: train 6" in capsys.readouterr().out
    used = [r.getMessage() for r in caplog.records if "Beam options" in r.getMessage()]
    assert used and "mode multi_threading, 2 worker(s)" in used[-1], used
    by_call = tmp_path / "by_call"
    preprocess.run_preprocess("image_folder", images, str(by_call), 8, grayscale=True,
                              center_crop=False, pipeline_args=["--direct_running_mode=in_memory"])
    shards = sorted(p.name for p in out.glob("*.tfrecord"))
    assert shards and shards == sorted(p.name for p in by_call.glob("*.tfrecord"))
    for name in shards:
        assert (out / name).read_bytes() == (by_call / name).read_bytes(), name


def test_preprocess_flagfile_and_command_line_mix(tmp_path):
    """Later flags win (the flagfile's or the command line's); the Beam options of both
    are returned in order for PipelineOptions; each parse starts from the defaults."""
    flagfile = _flagfile(tmp_path / "f", "--source=image_zip", "--input=a.zip,b.zip",
                         "--output_dir=o", "--image_size=8", "--split_by=top_folder",
                         "--runner=DirectRunner", "--nocenter_crop")
    args, rest = preprocess.parse_args([flagfile, "--image_size=16", "--center_crop",
                                        "--direct_num_workers=3", "--overwrite"])
    assert (args.source, args.input, args.output_dir, args.image_size, args.split_by) == (
        "image_zip", ["a.zip", "b.zip"], "o", 16, "top_folder")
    assert args.center_crop and args.overwrite and not args.grayscale
    assert rest == ["--runner=DirectRunner", "--direct_num_workers=3"]
    options = pipeline_options(rest)
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 3
    again, rest = preprocess.parse_args(["--source=image_zip", "--input=a.zip",
                                         "--output_dir=o", "--image_size=8"])
    assert not again.overwrite and again.center_crop and again.split_by == "hash"
    assert rest == []
    for spelling, crop in (("--no-center_crop", False), ("--center_crop=false", False),
                           ("--nocenter_crop", False), ("--center_crop", True)):
        args, _ = preprocess.parse_args(["--source=image_zip", "--input=a.zip",
                                         "--output_dir=o", "--image_size=8", spelling])
        assert args.center_crop is crop, spelling


def test_fid_from_a_flagfile_with_beam_options(tmp_path, monkeypatch, capsys):
    """fid.main reads a flagfile; its Beam options reach evaluate's pipeline_args (and
    PipelineOptions), a command-line flag after it wins."""
    from beam_jobs import fid

    seen = {}

    def fake_evaluate(source, extractor, extractor_path, **kwargs):
        seen.update(source=source, extractor=extractor, extractor_path=extractor_path, **kwargs)
        return {"fake": True}

    monkeypatch.setattr(fid_cli, "evaluate", fake_evaluate)
    flagfile = _flagfile(tmp_path / "fid.flags", f"--image_folder={tmp_path}",
                         "--extractor=classifier", "--extractor_path=ext", "--batch_size=7",
                         "--save_kid_features", "--runner=DirectRunner",
                         "--direct_num_workers=2")
    assert fid.main([flagfile, "--batch_size=9"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == '{"fake": true}'
    assert seen["source"] == fid.ImageFolderSource(str(tmp_path))
    assert (seen["extractor"], seen["extractor_path"], seen["batch_size"]) == (
        "classifier", "ext", 9)
    assert seen["save_kid_features"] and not seen["save_pr_features"]
    assert seen["pipeline_args"] == ["--runner=DirectRunner", "--direct_num_workers=2"]
    options = pipeline_options(seen["pipeline_args"])
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 2


# ---- unknown flags ----------------------------------------------------------------------

@pytest.mark.parametrize("parse,base", [
    (preprocess.parse_args, ["--source=image_zip", "--input=a.zip", "--output_dir=o",
                             "--image_size=8"]),
    (fid_cli.parse_args, ["--data_dir=d"])], ids=["preprocess", "fid"])
def test_a_misspelled_flag_goes_to_beam_which_discards_it(parse, base, caplog):
    """As with argparse's parse_known_args before: a flag the job does not know is a Beam
    option; Beam warns 'Discarding unparseable args' and the job runs without it.
    (argparse also took abbreviations such as --graysc for --grayscale; absl does not:
    they go to Beam the same way.)"""
    args, rest = parse([*base, "--greyscale", "--overwirte=1"])
    assert rest == ["--greyscale", "--overwirte=1"]
    with caplog.at_level(logging.WARNING, logger="apache_beam.options.pipeline_options"):
        pipeline_options(rest).get_all_options()
    assert any("Discarding unparseable args" in r.getMessage() and "--greyscale" in
               r.getMessage() for r in caplog.records), caplog.text


# ---- usage errors -----------------------------------------------------------------------

PRE = ["--source=image_zip", "--input=a.zip", "--output_dir=o", "--image_size=8"]
USAGE_ERRORS = [
    (preprocess.main, ["--source=image_zip", "--input=a.zip"],
     "the following flags are required: --output_dir, --image_size"),
    (preprocess.main, [*PRE, "--split_by=name"],
     "flag --split_by=name: invalid choice (choose from hash, top_folder)"),
    (preprocess.main, [*PRE, "--split_by=top_folder", "--validation_fraction=0.1"],
     "--validation_fraction applies only to --split_by=hash"),
    (preprocess.main, ["--source=image_zip", "--output_dir=o", "--image_size=8"],
     "--source=image_zip needs --input"),
    (preprocess.main, [*PRE, "--tfds_split=test"], "--tfds_split applies only to --source=tfds"),
    (preprocess.main, [*PRE[:3], "--image_size=big"], "flag --image_size=big: invalid literal"),
    (preprocess.main, [*PRE, "--nograyscale=1"], "--nograyscale=1 does not take an argument"),
    (preprocess.main, ["--verify", "--output_dir=o", "--image_size=8"],
     "--verify checks --output_dir only; unexpected --image_size"),
    (preprocess.main, ["--flagfile=/nonexistent/job.flags"], "Unable to open flagfile"),
    (fid_cli.cli, ["--data_dir=d", "--extractor=inception"], "flag --extractor=inception: "
     "invalid choice (choose from mnist_classifier, classifier, inception_v3, saved_model)"),
    (fid_cli.cli, ["--compare_stats=a.npz"], "--compare_stats expects A.npz,B.npz, got"),
    (fid_cli.cli, ["--image_folder=a", "--data_dir=b"], "give exactly one source"),
    (fid_cli.cli, ["--input=a.zip"], "--input needs --source"),
    (train_classifier.main, ["--output=o"], "the following flags are required: --data_dir"),
    (train_classifier.main, ["--data_dir=d", "--output=o", "--arch=resnet"],
     "flag --arch=resnet: invalid choice (choose from auto, small, airbench)"),
    (train_classifier.main, ["--data_dir=d", "--output=o", "--epoch=3"],
     "unrecognized arguments: --epoch=3"),
]


@pytest.mark.parametrize("main,argv,expected", USAGE_ERRORS)
def test_usage_errors_are_one_line_and_exit_2(main, argv, expected, capsys, monkeypatch):
    monkeypatch.delenv("AD_TRACEBACK", raising=False)
    prog = {preprocess.main: preprocess.PROG, fid_cli.cli: fid_cli.PROG,
            train_classifier.main: train_classifier.PROG}[main]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: {expected}"), err


def test_a_flagfile_line_with_a_space_is_a_usage_error(tmp_path, capsys):
    """'--image_size 8' is one argument in a flagfile (absl reads one per line): refused
    instead of passed on to Beam (which would drop it)."""
    flagfile = _flagfile(tmp_path / "f", *PRE[:3], "--image_size 8")
    with pytest.raises(SystemExit) as exit_info:
        preprocess.main([flagfile])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"{preprocess.PROG}: error: '--image_size 8': expected --image_size=VALUE (a flagfile "
        "holds one --flag=value per line)")


@pytest.mark.parametrize("main,flag", [(preprocess.main, "--help"), (fid_cli.cli, "-h"),
                                       (train_classifier.main, "--helpfull")])
def test_help_prints_the_description_and_every_flag(main, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([flag])
    assert exit_info.value.code == 0
    out, err = capsys.readouterr()
    assert err == "" and "usage: python -m beam_jobs." in out and "--flagfile" in out
    assert "-v,--verbosity" in out
    names = {preprocess.main: ["--split_by", "--[no]center_crop", "--tfds_split", "--[no]verify"],
             fid_cli.cli: ["--image_folder", "--source", "--extractor", "--compare_stats"],
             train_classifier.main: ["--data_dir", "--arch", "--time_budget_minutes"]}[main]
    assert all(f"{name}:" in out for name in names), out


CLI_ERRORS = [
    pytest.param("beam_jobs.preprocess", ["--split_by=name"],
                 "flag --split_by=name: invalid choice", id="preprocess"),
    pytest.param("beam_jobs.fid", ["--extractor=x"], "flag --extractor=x: invalid choice",
                 id="fid", marks=pytest.mark.slow),
    pytest.param("beam_jobs.fid.train_classifier", ["--output=o"],
                 "the following flags are required: --data_dir", id="train_classifier",
                 marks=pytest.mark.slow)]


@pytest.mark.parametrize("module,bad,expected", CLI_ERRORS)
def test_usage_error_from_a_flagfile_is_one_line_in_a_subprocess(module, bad, expected,
                                                                 tmp_path):
    """The entry point itself: the bad flag inside a flagfile, stderr exactly one line."""
    flagfile = _flagfile(tmp_path / "f", *bad)
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    env.pop("AD_TRACEBACK", None)
    result = subprocess.run([sys.executable, "-m", module, flagfile], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m {module}: error: {expected}"), \
        result.stderr[-3000:]
