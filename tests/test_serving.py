"""serving.export / serving.client: TF Serving layout, signatures, determinism, validation,
warmup requests, versions, and (when tensorflow_model_server is installed) TF Serving."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from artifacts import model_io
from serving import client as client_lib
from serving import export
from serving.signatures import deterministic_score
from tfp_models.hybrid import HybridConfig, HybridModel

from conftest import TINY, TINY_SHAPE, train_tiny

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = TINY_SHAPE
# test_serving_mlflow imports these fixtures; the cache makes both modules share one
# trained model and one export per session instead of building each twice.
_SHARED: dict[str, object] = {}


@pytest.fixture(scope="session")
def cqf_dir(digits16, tmp_path_factory, tracking_uri) -> str:
    if "cqf_dir" not in _SHARED:
        _SHARED["cqf_dir"] = train_tiny(digits16, str(tmp_path_factory.mktemp("cqf") / "model"),
                                        tracking_uri, "cqf", train_steps=2, data_init_batch=16,
                                        seed=5)
    return _SHARED["cqf_dir"]


def write_untrained(model_dir: str, variant: str, **overrides) -> str:
    """A model dir (model_config.json + ckpt) of a freshly initialised model, no MLflow run."""
    config = HybridConfig(variant=variant, image_shape=SHAPE, **{**TINY, **overrides})
    model = HybridModel(config)
    step = tf.Variable(7, dtype=tf.int64)
    model_io.save_model_config(model_dir, config, {})
    model_io.make_checkpoint(model, step).write(os.path.join(model_dir, "ckpt-7"))
    with open(os.path.join(model_dir, "checkpoint"), "w") as f:  # for latest_checkpoint
        f.write('model_checkpoint_path: "ckpt-7"\nall_model_checkpoint_paths: "ckpt-7"\n')
    return model_dir


@pytest.fixture(scope="session")
def cqf_export(cqf_dir, tmp_path_factory, tracking_uri) -> tuple[str, str]:
    """(export_dir, version_dir) of the trained cqf model, K = 3 importance samples."""
    if "cqf_export" not in _SHARED:
        export_dir = str(tmp_path_factory.mktemp("exports"))
        version_dir = export.export_model(cqf_dir, export_dir, "cqf_tiny",
                                          score_importance_samples=3, tracking_uri=tracking_uri)
        _SHARED["cqf_export"] = (export_dir, version_dir)
    return _SHARED["cqf_export"]


@pytest.fixture(scope="session")
def loaded(cqf_export):
    if "loaded" not in _SHARED:
        _SHARED["loaded"] = tf.saved_model.load(cqf_export[1])
    return _SHARED["loaded"]


def _digits(n: int, offset: int = 0) -> np.ndarray:
    from PIL import Image

    from beam_jobs.sources.mnist_idx import load_mnist

    images, _ = load_mnist(os.path.join(PROJECT_ROOT, "..", "shared", "data", "mnist_test"))
    return np.stack([np.asarray(Image.fromarray(images[i]).resize((16, 16), Image.LANCZOS))
                     for i in range(offset, offset + n)])[..., None].astype(np.uint8)


def test_layout_metadata_and_models_config(cqf_export):
    export_dir, version_dir = cqf_export
    assert version_dir == os.path.join(os.path.abspath(export_dir), "cqf_tiny", "1")
    assert sorted(os.listdir(os.path.join(export_dir, "cqf_tiny"))) == ["1"]  # no temp dir left
    for name in ("saved_model.pb", "variables", "assets.extra"):
        assert os.path.exists(os.path.join(version_dir, name))
    meta = json.load(open(os.path.join(version_dir, "assets.extra", "export_metadata.json")))
    assert meta["variant"] == "cqf" and meta["checkpoint_step"] == 2
    assert meta["score"]["importance_samples"] == 3 and meta["score"]["is_bound"] is False
    assert meta["score"]["kind"] == "deterministic_point_estimate"
    assert meta["signatures"] == ["sample", "sample_latent", "score", "serving_default"]

    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(open(os.path.join(export_dir, "models.config")).read(),
                               model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "cqf_tiny", os.path.dirname(version_dir), "tensorflow")


def test_saved_model_cli_lists_the_signatures(cqf_export):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", cqf_export[1], "--all"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    blocks = {b.split("']", 1)[0]: b.split("Method name", 1)[0]
              for b in text.split("signature_def['")[1:]}
    assert set(blocks) >= {"score", "sample", "sample_latent", "serving_default"}
    score = blocks["score"]
    # images/latent are declared with unknown shape so the in-graph checks (which name
    # the expected shape) answer every caller, TF Serving's C++ runtime included.
    assert "inputs['images']" in score and "dtype: DT_UINT8" in score
    assert "shape: unknown_rank" in score
    assert "outputs['log_likelihood_nats']" in score and "outputs['bits_per_dim']" in score
    assert score.count("dtype: DT_FLOAT") == 2 and score.count("shape: (-1)") == 2
    sample = blocks["sample"]
    assert "inputs['seed']" in sample and "dtype: DT_INT64" in sample
    assert "inputs['temperature']" in sample
    assert "outputs['images']" in sample and "shape: (-1, 16, 16, 1)" in sample
    assert "DT_UINT8" in sample
    latent = blocks["sample_latent"]
    assert "inputs['latent']" in latent and "shape: (-1, 16, 16, 1)" in latent
    assert "inputs['images']" in blocks["serving_default"]


def test_score_equals_the_in_memory_model(cqf_dir, loaded):
    model, _ = model_io.load_trained_model(cqf_dir)
    images = _digits(6)
    got = loaded.signatures["score"](images=tf.constant(images))
    want = deterministic_score(model, tf.constant(images), num_samples=3)
    np.testing.assert_allclose(got["log_likelihood_nats"], want["log_likelihood_nats"], rtol=1e-4)
    np.testing.assert_allclose(got["bits_per_dim"], want["bits_per_dim"], rtol=1e-4)
    # bits/dim is the nats bound converted exactly; an image's score ignores its batch.
    d = np.prod(SHAPE)
    np.testing.assert_allclose(got["bits_per_dim"],
                               (-got["log_likelihood_nats"].numpy() / d + np.log(256)) / np.log(2),
                               rtol=1e-5)
    alone = loaded.signatures["score"](images=tf.constant(images[3:4]))
    np.testing.assert_allclose(alone["log_likelihood_nats"][0], got["log_likelihood_nats"][3],
                               rtol=1e-5)
    # The bound is a real function of the image: different digits score differently.
    assert np.ptp(got["log_likelihood_nats"].numpy()) > 1.0
    # serving_default is score.
    default = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_array_equal(default["log_likelihood_nats"], got["log_likelihood_nats"])


def test_sample_is_deterministic_per_row(cqf_dir, loaded):
    sample = loaded.signatures["sample"]
    a = sample(seed=tf.constant([11, 12, 13], tf.int64),
               temperature=tf.constant([1.0, 0.7, 0.0]))["images"].numpy()
    b = sample(seed=tf.constant([13, 99, 11], tf.int64),
               temperature=tf.constant([0.0, 1.0, 1.0]))["images"].numpy()
    assert a.dtype == np.uint8 and a.shape == (3,) + SHAPE
    np.testing.assert_array_equal(a[0], b[2])
    np.testing.assert_array_equal(a[2], b[0])
    assert not np.array_equal(a[0], a[1])  # different seeds, different images
    model, _ = model_io.load_trained_model(cqf_dir)
    np.testing.assert_array_equal(a[1:2], model.sample(1, 0.7, seed=12).numpy())


def test_sample_latent_is_the_decoder_mean(cqf_dir, loaded):
    model, _ = model_io.load_trained_model(cqf_dir)
    z = np.random.RandomState(0).randn(3, TINY["latent_dim"]).astype(np.float32)
    got = loaded.signatures["sample_latent"](latent=tf.constant(z))["images"].numpy()
    want = model.generate(tf.constant(z), 0.0, tf.zeros((3,) + SHAPE)).numpy()
    np.testing.assert_array_equal(got, np.clip(np.floor(want * 256), 0, 255).astype(np.uint8))


def test_bad_inputs_give_clear_errors(loaded):
    score = loaded.signatures["score"]
    good = _digits(2)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images must be uint8 \[N, 16, 16, 1\]; got shape\] \[2 8 16 1\]"):
        score(images=tf.constant(good[:, :8]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images must be uint8 \[N, 16, 16, 1\]; got shape\] \[16 16 1\]"):
        score(images=tf.constant(good[0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        score(images=tf.constant(good, tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"latent must be float32 \[N, 4\]"):
        loaded.signatures["sample_latent"](latent=tf.zeros((2, 5)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same length N"):
        loaded.signatures["sample"](seed=tf.constant([1, 2], tf.int64),
                                    temperature=tf.constant([1.0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be finite and >= 0"):
        loaded.signatures["sample"](seed=tf.constant([1], tf.int64),
                                    temperature=tf.constant([-1.0]))


def test_warmup_requests_parse_as_prediction_logs(cqf_export, loaded):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(cqf_export[1], "assets.extra", "tf_serving_warmup_requests")
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(path)]
    names = sorted(r.predict_log.request.model_spec.signature_name for r in records)
    assert names == ["sample", "sample_latent", "score", "serving_default"]
    for record in records:  # every warmup request runs on the export
        request = record.predict_log.request
        assert request.model_spec.name == "cqf_tiny"
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert all(v.shape[0] == 2 for v in outputs.values())


def test_gan_exports_no_score_and_flow_scores_exactly(tmp_path, caplog):
    gan_dir = write_untrained(str(tmp_path / "gan"), "gan")
    with caplog.at_level("WARNING", logger="serving.export"):
        version_dir = export.export_model(gan_dir, str(tmp_path / "ex"), "gan_tiny",
                                          log_to_mlflow=False)
    assert "no 'score' signature" in caplog.text
    meta = json.load(open(os.path.join(version_dir, "assets.extra", "export_metadata.json")))
    assert meta["score"] is None and "no likelihood" in meta["no_score_reason"]
    assert meta["serving_default"] == "sample"
    gan = tf.saved_model.load(version_dir)
    assert set(gan.signatures) == {"sample", "sample_latent", "serving_default"}
    out = gan.signatures["serving_default"](seed=tf.constant([4], tf.int64),
                                            temperature=tf.constant([1.0]))
    assert out["images"].dtype == tf.uint8

    flow_dir = write_untrained(str(tmp_path / "flow"), "flow")
    version_dir = export.export_model(flow_dir, str(tmp_path / "ex"), "flow_tiny",
                                      log_to_mlflow=False)
    flow = tf.saved_model.load(version_dir)
    model, _ = model_io.load_trained_model(flow_dir)
    images = _digits(3, offset=10)
    x = (images.astype(np.float32) + 0.5) / 256.0
    np.testing.assert_allclose(flow.signatures["score"](images=tf.constant(images))[
        "log_likelihood_nats"], model.log_prob_bound(tf.constant(x)), rtol=1e-4)
    # FlowGAN (the flow + an adversarial loss) scores exactly like the flow.
    flowgan_dir = write_untrained(str(tmp_path / "flowgan"), "flowgan")
    flowgan = tf.saved_model.load(export.export_model(
        flowgan_dir, str(tmp_path / "ex_flowgan"), "flowgan_tiny", log_to_mlflow=False))
    flowgan_model, _ = model_io.load_trained_model(flowgan_dir)
    np.testing.assert_allclose(flowgan.signatures["score"](images=tf.constant(images))[
        "log_likelihood_nats"], flowgan_model.log_prob_bound(tf.constant(x)), rtol=1e-4)
    y = np.random.RandomState(1).randn(2, 256).astype(np.float32)
    got = flow.signatures["sample_latent"](latent=tf.constant(y))["images"].numpy()
    want = model.features_to_images(tf.reshape(y, (2,) + SHAPE)).numpy()
    np.testing.assert_array_equal(got, np.clip(np.floor(want * 256), 0, 255).astype(np.uint8))
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(open(tmp_path / "ex" / "models.config").read(),
                               model_server_config_pb2.ModelServerConfig())
    assert [c.name for c in config.model_config_list.config] == ["gan_tiny", "flow_tiny"]


def test_versions_increment_and_are_never_overwritten(tmp_path):
    model_dir = write_untrained(str(tmp_path / "vae"), "vae")
    ex = str(tmp_path / "ex")
    os.makedirs(os.path.join(ex, "m", "3"))
    os.makedirs(os.path.join(ex, "m", "notes"))
    first = export.export_model(model_dir, ex, "m", log_to_mlflow=False)
    assert first.endswith(os.path.join("m", "4"))
    before = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    with pytest.raises(FileExistsError, match=r"version 4 of 'm' is never overwritten.*use 5"):
        export.export_model(model_dir, ex, "m", version=4, log_to_mlflow=False)
    assert os.path.getmtime(os.path.join(first, "saved_model.pb")) == before
    assert sorted(os.listdir(os.path.join(ex, "m"))) == ["3", "4", "notes"]
    with pytest.raises(ValueError, match="--version=0: expected a positive integer"):
        export.export_model(model_dir, ex, "m", version=0, log_to_mlflow=False)
    with pytest.raises(ValueError, match="--model_name='a/b'"):
        export.export_model(model_dir, ex, "a/b", log_to_mlflow=False)
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        export.export_model(str(tmp_path / "missing"), ex, "m", log_to_mlflow=False)


def test_cli_exports_the_next_version(cqf_dir, tmp_path, tracking_uri):
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    ex = tmp_path / "ex"
    cmd = [sys.executable, "-m", "serving.export", f"--model_dir={cqf_dir}", f"--export_dir={ex}",
           "--model_name=cli_model", "--nomlflow", "--version=2"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["version_dir"] == str(ex / "cli_model" / "2")
    assert "exported" in result.stderr and "cli_model" in result.stderr  # the log line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (not available from PyPI or "
                           "this machine's apt sources; see serving/README.md for Docker)")
def test_tf_serving_rest_and_grpc(cqf_export, loaded):
    export_dir, version_dir = cqf_export
    rest_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        ["tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         "--rest_api_host=127.0.0.1", f"--model_config_file={export_dir}/models.config",
         "--enable_model_warmup=true"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while True:
            try:
                status = json.load(urllib.request.urlopen(
                    f"http://127.0.0.1:{rest_port}/v1/models/cqf_tiny", timeout=2))
                if status["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "TF Serving did not load the model within 90 s"
            time.sleep(0.5)
        images = _digits(3)
        want = loaded.signatures["score"](images=tf.constant(images))["log_likelihood_nats"].numpy()
        for target in (client_lib.RestClient(f"127.0.0.1:{rest_port}", "cqf_tiny", "row"),
                       client_lib.RestClient(f"127.0.0.1:{rest_port}", "cqf_tiny", "columnar"),
                       client_lib.GrpcClient(f"127.0.0.1:{grpc_port}", "cqf_tiny")):
            np.testing.assert_allclose(target.score(images)["log_likelihood_nats"], want, rtol=1e-4)
            got = target.sample([5, 6], [1.0, 0.5])
            np.testing.assert_array_equal(got, loaded.signatures["sample"](
                seed=tf.constant([5, 6], tf.int64), temperature=tf.constant([1.0, 0.5]))["images"])
            with pytest.raises(client_lib.ServingError, match=r"images must be uint8 \[N, 16, 16, 1\]"):
                target.score(images[:, :8])
    finally:
        proc.kill()
        proc.wait(timeout=30)
