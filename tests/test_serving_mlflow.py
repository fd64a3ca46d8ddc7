"""The export in MLflow: logged to the model dir's run, registered as a pyfunc model whose
params pick the signature, and served by a real `mlflow models serve`."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient
from test_serving import PROJECT_ROOT, _digits, cqf_dir, cqf_export, loaded  # noqa: F401

from serving import client as client_lib


def _registered_version(name: str) -> str:
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    assert len(versions) == 1, [v.version for v in versions]
    return versions[0].version


def test_export_is_logged_to_the_training_run_and_registered(cqf_dir, cqf_export, tracking_uri):
    run_id = open(os.path.join(cqf_dir, "mlflow_run_id")).read().strip()
    version = MlflowClient().get_model_version("cqf_tiny", _registered_version("cqf_tiny"))
    assert version.run_id == run_id
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"  # the training run was re-opened and closed again
    assert run.data.tags["serving.export_dir"] == cqf_export[1]
    assert "score" in run.data.tags["serving.signatures"].split(",")
    logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/serving/cqf_tiny_v1.json")
    assert logged["variant"] == "cqf" and logged["version"] == 1


def test_pyfunc_predict_picks_the_signature_by_params(cqf_export, loaded, tracking_uri):
    model = mlflow.pyfunc.load_model(f"models:/cqf_tiny/{_registered_version('cqf_tiny')}")
    images = _digits(4)
    want = loaded.signatures["score"](images=tf.constant(images))
    for model_input in (images, {"images": images.astype(np.int64)},
                        pd.DataFrame({"images": list(images)})):
        got = model.predict(model_input, params={"signature": "score"})
        np.testing.assert_allclose(got["log_likelihood_nats"], want["log_likelihood_nats"],
                                   rtol=1e-6)
    default = model.predict(images)  # serving_default is score
    np.testing.assert_allclose(default["bits_per_dim"], want["bits_per_dim"], rtol=1e-6)
    sample = model.predict({"seed": [3, 4], "temperature": [1.0, 0.0]},
                           params={"signature": "sample"})
    np.testing.assert_array_equal(sample["images"], loaded.signatures["sample"](
        seed=tf.constant([3, 4], tf.int64), temperature=tf.constant([1.0, 0.0]))["images"])
    latent = model.predict(np.zeros((2, 4)), params={"signature": "sample_latent"})
    assert latent["images"].shape == (2, 16, 16, 1) and latent["images"].dtype == np.uint8
    with pytest.raises(ValueError, match=r"signature='nope'.*\['sample', 'sample_latent', 'score'\]"):
        model.predict(images, params={"signature": "nope"})
    with pytest.raises(ValueError, match=r"'images' must be uint8 pixel values in \[0, 255\]"):
        model.predict(images.astype(np.int64) + 300, params={"signature": "score"})
    with pytest.raises(ValueError, match=r"expects inputs \['seed', 'temperature'\]; missing \['temperature'\]"):
        model.predict({"seed": [1]}, params={"signature": "sample"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_the_saved_model(cqf_export, loaded, tracking_uri,
                                                          tmp_path):
    port = _free_port()
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    # mlflow starts `uvicorn` through the shell: the venv's bin must be on PATH even when
    # the tests run as .venv/bin/python without an activated venv (as `make test` does).
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, TF_CPP_MIN_LOG_LEVEL="2",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [mlflow_bin, "models", "serve", "-m",
             f"models:/cqf_tiny/{_registered_version('cqf_tiny')}", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 150
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "mlflow models serve not ready within 150 s:\n" + \
                log_path.read_text()[-3000:]
            time.sleep(0.5)
        images = _digits(3, offset=20)
        want = loaded.signatures["score"](images=tf.constant(images))
        raw = json.load(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": {"images": images.tolist()},
                             "params": {"signature": "score"}}).encode(),
            headers={"Content-Type": "application/json"}), timeout=60))
        np.testing.assert_allclose(raw["predictions"]["log_likelihood_nats"],
                                   want["log_likelihood_nats"], rtol=1e-6)
        client = client_lib.MlflowServeClient(f"127.0.0.1:{port}")
        np.testing.assert_allclose(client.score(images)["bits_per_dim"], want["bits_per_dim"],
                                   rtol=1e-6)
        got = client.sample([7, 8, 9], [1.0, 0.5, 0.0])
        np.testing.assert_array_equal(got, loaded.signatures["sample"](
            seed=tf.constant([7, 8, 9], tf.int64),
            temperature=tf.constant([1.0, 0.5, 0.0]))["images"])
        with pytest.raises(client_lib.ServingError, match="HTTP 400.*signature='bogus'"):
            client.predict("bogus", {"images": images})
        # The CLI against the same server: a sample grid and per-image bits/dim.
        from PIL import Image

        paths = []
        for i, img in enumerate(images):
            paths.append(str(tmp_path / f"d{i}.png"))
            Image.fromarray(img[..., 0]).save(paths[-1])
        cli_env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
        base = [sys.executable, "-m", "serving.client", "--target=mlflow",
                f"--address=127.0.0.1:{port}"]
        grid = tmp_path / "grid.png"
        out = subprocess.run(base + ["sample", "--n", "4", "--out", str(grid), "--seed", "7"],
                             capture_output=True, text=True, env=cli_env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert np.asarray(Image.open(grid)).shape == (2 * 18 + 2, 2 * 18 + 2)
        out = subprocess.run(base + ["score"] + paths, capture_output=True, text=True,
                             env=cli_env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        printed = [float(line.split("\t")[1].split()[0]) for line in out.stdout.splitlines()]
        np.testing.assert_allclose(printed, want["bits_per_dim"], atol=1e-4)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
