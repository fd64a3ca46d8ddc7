"""The export in MLflow: one pyfunc model per signature, logged to the model dir's run with
a model signature and an input example (and no MLflow warning), registered with an alias,
checked by MLflow against its schema, and served by a real `mlflow models serve`."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from test_serving import PROJECT_ROOT, _digits, cqf_dir, cqf_export, loaded  # noqa: F401

from serving import client as client_lib
from serving import export, mlflow_model

NAME = "cqf_quiet"
SIGNATURES = ("score", "sample", "sample_latent")
_EXPORT: dict[str, object] = {}


@pytest.fixture(scope="module")
def logged(cqf_dir, tracking_uri, tmp_path_factory) -> dict[str, object]:
    """An export of the tiny cqf model logged to MLflow, with the warnings and log records
    of that export: {"version_dir", "warnings", "records"}."""
    if not _EXPORT:
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append
        logging.getLogger().addHandler(handler)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                version_dir = export.export_model(
                    cqf_dir, str(tmp_path_factory.mktemp("ex_mlflow")), NAME,
                    tracking_uri=tracking_uri, mlflow_alias="champion")
        finally:
            logging.getLogger().removeHandler(handler)
        _EXPORT.update(version_dir=version_dir, warnings=caught, records=records)
    return _EXPORT


def test_export_logs_no_mlflow_warning(logged):
    """Not one warning from MLflow's code, neither ``warnings`` (type hints, CloudPickle,
    input example) nor log records. DeprecationWarnings are left out: Python shows them
    only to ``__main__``, and MLflow 3.17 triggers one of pandas 3 when it saves any
    DataFrame input example (``df.columns == range(...)``)."""
    shown = [f"{w.filename}:{w.lineno}: {w.message}" for w in logged["warnings"]
             if "mlflow" in w.filename and not issubclass(w.category, DeprecationWarning)]
    assert shown == []
    assert [r.getMessage() for r in logged["records"] if r.name.startswith("mlflow")] == []


def test_one_registered_model_per_signature_with_the_alias(cqf_dir, logged, tracking_uri):
    run_id = open(os.path.join(cqf_dir, "mlflow_run_id")).read().strip()
    client = MlflowClient()
    for signature in SIGNATURES:
        name = mlflow_model.registered_name(NAME, signature, "score")
        version = client.get_model_version_by_alias(name, "champion")
        assert version.run_id == run_id, name
    assert [m.name for m in client.search_registered_models(f"name LIKE '{NAME}%'")] == [
        NAME, f"{NAME}-sample", f"{NAME}-sample_latent"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"  # the training run was re-opened and closed again
    assert run.data.tags["serving.export_dir"] == logged["version_dir"]
    assert run.data.tags["serving.signatures"].split(",") == sorted(
        [*SIGNATURES, "serving_default"])
    assert run.data.params["serving_v1_sample/signature"] == "sample"  # the model_config
    meta = mlflow.artifacts.load_dict(f"runs:/{run_id}/serving/{NAME}_v1.json")
    assert meta["variant"] == "cqf" and meta["version"] == 1


def test_models_carry_signature_and_input_example(logged, tracking_uri):
    score = mlflow.models.get_model_info(f"models:/{NAME}@champion")
    assert score.signature.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": (-1, 16, 16, 1)}}]
    assert [(o["name"], o["tensor-spec"]) for o in score.signature.outputs.to_dict()] == [
        (n, {"dtype": "float32", "shape": (-1,)}) for n in ("log_likelihood_nats",
                                                            "bits_per_dim")]
    assert score.saved_input_example_info is not None
    sample = mlflow.models.get_model_info(f"models:/{NAME}-sample@champion")
    assert sample.signature.inputs.to_dict() == [
        {"type": "long", "name": "seed", "required": True},
        {"type": "double", "name": "temperature", "required": True}]
    assert sample.signature.outputs.to_dict() == [
        {"type": "tensor", "name": "images",
         "tensor-spec": {"dtype": "uint8", "shape": (-1, 16, 16, 1)}}]
    latent = mlflow.models.get_model_info(f"models:/{NAME}-sample_latent@champion")
    assert latent.signature.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32",
                                                                   "shape": (-1, 4)}


def test_pyfunc_models_answer_like_the_saved_model(logged, tracking_uri):
    loaded = tf.saved_model.load(logged["version_dir"])
    images = _digits(4)
    score = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    want = loaded.signatures["score"](images=tf.constant(images))
    for params in (None, {"signature": "score"}, {"signature": "serving_default"}):
        got = score.predict(images, params=params)
        np.testing.assert_allclose(got["log_likelihood_nats"], want["log_likelihood_nats"],
                                   rtol=1e-6)
    sample = mlflow.pyfunc.load_model(f"models:/{NAME}-sample@champion")
    got = sample.predict(pd.DataFrame({"seed": [3, 4], "temperature": [1.0, 0.0]}))
    np.testing.assert_array_equal(got["images"], loaded.signatures["sample"](
        seed=tf.constant([3, 4], tf.int64), temperature=tf.constant([1.0, 0.0]))["images"])
    latent = mlflow.pyfunc.load_model(f"models:/{NAME}-sample_latent@champion")
    out = latent.predict(np.zeros((2, 4), np.float32))
    assert out["images"].shape == (2, 16, 16, 1) and out["images"].dtype == np.uint8


def test_schema_refuses_wrong_shapes_dtypes_and_signatures(logged, tracking_uri):
    score = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    images = _digits(2)
    with pytest.raises(MlflowException, match=r"Shape of input \(2, 16, 16, 3\) does not match "
                                              r"expected shape \(-1, 16, 16, 1\)"):
        score.predict(np.repeat(images, 3, axis=-1))
    with pytest.raises(MlflowException, match="uint8"):
        score.predict(images.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"signature='sample': this model serves 'score'.*"
                                         rf"'sample': '{NAME}-sample'"):
        score.predict(images, params={"signature": "sample"})
    sample = mlflow.pyfunc.load_model(f"models:/{NAME}-sample@champion")
    with pytest.raises(MlflowException, match="temperature"):
        sample.predict(pd.DataFrame({"seed": [1]}))


def test_rest_payloads_as_the_scoring_server_parses_them(logged, tracking_uri):
    """MLflow's own serving-input check (the scoring server's parsing and predict):
    JSON floats for temperature, the bare array serving.client sends for ``score``'s one
    unnamed tensor input."""
    from mlflow.models import validate_serving_input

    loaded = tf.saved_model.load(logged["version_dir"])
    got = validate_serving_input(f"models:/{NAME}-sample@champion", {
        "inputs": {"seed": [3, 4], "temperature": [1, 0.5]}, "params": {"signature": "sample"}})
    np.testing.assert_array_equal(got["images"], loaded.signatures["sample"](
        seed=tf.constant([3, 4], tf.int64), temperature=tf.constant([1.0, 0.5]))["images"])
    images = _digits(2)
    got = validate_serving_input(f"models:/{NAME}@champion", {
        "inputs": images.tolist(), "params": {"signature": "score"}})
    np.testing.assert_allclose(got["bits_per_dim"], loaded.signatures["score"](
        images=tf.constant(images))["bits_per_dim"], rtol=1e-6)


def test_bad_alias_is_refused_before_exporting(cqf_dir, tmp_path):
    for alias in ("latest", "v3", "a b"):
        with pytest.raises(ValueError, match="--mlflow_alias"):
            export.export_model(cqf_dir, str(tmp_path), "m", mlflow_alias=alias)
    assert not os.listdir(tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _serve(model_uri: str, tracking_uri: str, log_path) -> tuple[subprocess.Popen, int]:
    """Starts `mlflow models serve` (local env) and waits until /ping answers."""
    port = _free_port()
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    # mlflow starts `uvicorn` through the shell: the venv's bin must be on PATH even when
    # the tests run as .venv/bin/python without an activated venv (as `make test` does).
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, TF_CPP_MIN_LOG_LEVEL="2",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [mlflow_bin, "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 150
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            _stop(proc)
            pytest.fail(f"mlflow models serve not ready:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@pytest.mark.slow
def test_mlflow_models_serve_by_alias_validates_requests(logged, tracking_uri, tmp_path):
    loaded = tf.saved_model.load(logged["version_dir"])
    proc, port = _serve(f"models:/{NAME}@champion", tracking_uri, tmp_path / "server.log")
    try:
        images = _digits(3, offset=20)
        want = loaded.signatures["score"](images=tf.constant(images))
        status, raw = _post(port, {"inputs": images.tolist()})
        assert status == 200, raw
        np.testing.assert_allclose(raw["predictions"]["log_likelihood_nats"],
                                   want["log_likelihood_nats"], rtol=1e-6)
        client = client_lib.MlflowServeClient(f"127.0.0.1:{port}")
        np.testing.assert_allclose(client.score(images)["bits_per_dim"], want["bits_per_dim"],
                                   rtol=1e-6)
        status, raw = _post(port, {"inputs": np.repeat(images, 3, -1).tolist()})
        assert status == 400 and "does not match expected shape (-1, 16, 16, 1)" in \
            raw["message"], raw
        status, raw = _post(port, {"inputs": images.tolist(), "params": {"signature": "bogus"}})
        assert status == 400 and "signature='bogus'" in json.dumps(raw), raw
    finally:
        _stop(proc)
