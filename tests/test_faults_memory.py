"""Fault injection (issue 26 items 4 and 7, the gaps left): out of memory is one error line
naming the flags to lower (TensorFlow's RESOURCE_EXHAUSTED, Python's MemoryError, Beam's
re-raised text); Beam's multi_processing workers print no tracebacks of a full disk; a
truncated export is one line in ``serving.client --target=local``."""
from __future__ import annotations

import os

import pytest
import tensorflow as tf
from test_faults_preprocess import _cli, _images, mount_tmpfs  # noqa: F401 (a fixture)

from artifacts import cli, memory_errors


def _real_oom() -> None:
    """A real TensorFlow ResourceExhaustedError: a 4 TiB tensor (refused at once)."""
    tf.zeros([2**40])


def test_tensorflow_out_of_memory_is_one_line_naming_the_flags(capsys):
    """Before: ResourceExhaustedError's traceback (with op, device and Keras call lines)."""
    settings = memory_errors.size_settings(
        {"batch_size": 180, "enc_dec_channels": 2048, "latent_dim": None},
        {"batch_size": 1, "flow_hidden": 16})

    @cli.user_errors("python -m pipeline.train")
    def main():
        with memory_errors.out_of_memory("training", settings):
            _real_oom()

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(
        "python -m pipeline.train: error: out of memory while training: OOM when allocating "
        "tensor with shape[1099511627776] and type float; expected --batch_size=180, "
        "--enc_dec_channels=2048, --flow_hidden=16 to fit in this machine's memory ("), err
    assert err[0].endswith("GiB): lower them"), err


def test_memory_error_and_beam_s_text_are_out_of_memory_but_a_full_disk_is_not():
    with pytest.raises(memory_errors.OutOfMemory, match="while scoring: MemoryError; "
                       "expected --batch_size=8 "):
        with memory_errors.out_of_memory("scoring", batch_size=8):
            raise MemoryError
    beam = RuntimeError("tensorflow.python.framework.errors_impl.ResourceExhaustedError: "
                        "OOM when allocating tensor with shape[64,512] and type float on "
                        "/job:localhost [while running 'Features']")
    assert memory_errors.oom_description(beam) == (
        "OOM when allocating tensor with shape[64,512] and type float")
    disk = tf.errors.ResourceExhaustedError(None, None, "ckpt-4_temp; No space left on device")
    assert memory_errors.oom_description(disk) is None
    with pytest.raises(ValueError, match="not memory"):  # anything else passes unchanged
        with memory_errors.out_of_memory("scoring", batch_size=8):
            raise ValueError("not memory")


@pytest.mark.slow
def test_a_truncated_export_is_one_line_in_the_local_client(tmp_path, capsys):
    """Before: IndexError 'Read less bytes than requested' as a traceback."""
    from test_serving import write_untrained

    from serving import client_cli, export

    model_dir = write_untrained(str(tmp_path / "model"), "vae_f")
    version_dir = export.export_model(model_dir, str(tmp_path / "export"), "m",
                                      log_to_mlflow=False)
    data = os.path.join(version_dir, "variables", "variables.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    capsys.readouterr()
    code = client_cli.main(["--target=local", f"--address={version_dir}", "sample", "--n=2",
                            f"--out={tmp_path / 'grid.png'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: --address={version_dir}: the export does not load "
                             "(IndexError: Read less bytes than requested)"), err


@pytest.mark.slow
def test_a_full_disk_in_multi_processing_workers_is_one_line(tmp_path, mount_tmpfs):
    """--direct_running_mode=multi_processing: the shards fill the disk inside Beam's
    worker processes. Before: each worker printed its INFO lines and the bundle's traceback
    (8 tracebacks, ~190 lines) on stderr before the one error line."""
    images = _images(tmp_path / "in", 200, side=28)
    disk = mount_tmpfs("size=96k")
    with open(disk / "filler", "wb") as f:  # leave ~24 KiB: the plan fits, the shards do not
        f.write(b"\0" * (96 - 24) * 1024)
    job = _cli("--source=image_folder", f"--input={images}", f"--output_dir={disk / 'out'}",
               "--image_size=28", "--direct_running_mode=multi_processing",
               "--direct_num_workers=2")
    _, err = job.communicate(timeout=600)
    assert job.returncode == 2, err[-3000:]
    assert "Traceback" not in err and "OSError" not in err, err[-3000:]
    assert "INFO apache_beam" not in err and "INFO:" not in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert errors == [f"python -m beam_jobs.preprocess: error: writing the data set "
                      f"{disk / 'out'} failed: No space left on device"], err[-3000:]



@pytest.mark.slow
def test_a_model_too_big_for_memory_is_one_line_from_pipeline_train(digits16, tmp_path):
    """Encoder/decoder convolutions of 65,536 channels (a 154 GB kernel) are refused by the
    allocator when the model is built: no traceback, the last line names the size flags,
    exit 2."""
    import subprocess
    import sys

    from test_faults_preprocess import PROJECT_ROOT

    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    env.pop("AD_TRACEBACK", None)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.train", "--flagfile=configs/quickstart.cfg",
         f"--data_dir={digits16}", f"--model_dir={tmp_path / 'model'}", "--train_steps=2",
         "--enc_dec_channels=65536", "--enc_dec_downsamples=1",
         f"--mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()[-1:]  # after the run's info lines
    assert lines[0].startswith("python -m pipeline.train: error: out of memory while training: "
                               "OOM when allocating tensor"), lines
    assert "--enc_dec_channels=65536" in lines[0] and "lower them" in lines[0], lines
