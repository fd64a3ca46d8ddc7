"""Bounded serving requests: every signature refuses more than the export's --max_batch rows
inside the graph, the limit is recorded, TF Serving's batching file matches it, and the
clients split larger jobs into chunks that give the same answers as small requests."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_serving import PROJECT_ROOT, _digits, write_untrained

from serving import client as client_lib
from serving import export, server_files

LIMIT = 4


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> tuple[str, str]:
    """(export_dir, version_dir) of an untrained cqf exported with --max_batch=4."""
    root = tmp_path_factory.mktemp("limited")
    model_dir = write_untrained(str(root / "model"), "cqf")
    version_dir = export.export_model(model_dir, str(root / "ex"), "tiny", log_to_mlflow=False,
                                      max_batch=LIMIT)
    return str(root / "ex"), version_dir


def test_every_signature_refuses_more_rows_than_max_batch(limited):
    export_dir, version_dir = limited
    meta = json.load(open(os.path.join(version_dir, "assets.extra", "export_metadata.json")))
    assert meta["max_batch"] == LIMIT
    loaded = tf.saved_model.load(version_dir)
    images = _digits(LIMIT + 1)
    assert loaded.signatures["score"](images=tf.constant(images[:LIMIT]))["bits_per_dim"].shape == [LIMIT]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"at most {LIMIT} images per request.*--max_batch.*got\] \[{LIMIT + 1}\]"):
        loaded.signatures["score"](images=tf.constant(images))
    seeds = tf.range(LIMIT + 1, dtype=tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"at most {LIMIT} seeds per request"):
        loaded.signatures["sample"](seed=seeds, temperature=tf.ones([LIMIT + 1]))
    assert loaded.signatures["sample"](seed=seeds[:LIMIT],
                                       temperature=tf.ones([LIMIT]))["images"].shape[0] == LIMIT
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"at most {LIMIT} latents per request"):
        loaded.signatures["sample_latent"](latent=tf.zeros([LIMIT + 1, 4]))


def test_batching_parameters_sit_next_to_models_config(limited, tmp_path):
    export_dir, _ = limited
    text = open(os.path.join(export_dir, "batching_parameters.txt")).read()
    assert os.path.isfile(os.path.join(export_dir, "models.config"))
    assert re.search(rf"max_batch_size \{{ value: {LIMIT} \}}", text)
    for field in ("batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        assert re.search(rf"^{field} \{{ value: \d+ \}}$", text, re.M), field
    # A second model exported with a larger limit keeps the server batch at the smaller one.
    assert server_files.write_batching_parameters(export_dir, 1024)
    assert f"max_batch_size {{ value: {LIMIT} }}" in open(
        os.path.join(export_dir, "batching_parameters.txt")).read()
    fresh = server_files.write_batching_parameters(str(tmp_path), 1024)
    assert "max_batch_size { value: 1024 }" in open(fresh).read()


def test_client_splits_large_jobs_into_chunks(limited):
    _, version_dir = limited
    client = client_lib.make_client("local", version_dir, max_batch=LIMIT)
    images = _digits(2 * LIMIT + 3)
    chunked = client.score(images)
    assert chunked["bits_per_dim"].shape == (2 * LIMIT + 3,)
    one_by_one = np.concatenate([client.score(images[i:i + 1])["bits_per_dim"]
                                 for i in range(len(images))])
    np.testing.assert_allclose(chunked["bits_per_dim"], one_by_one, rtol=1e-5)
    samples = client.sample(np.arange(LIMIT + 2), 0.5)
    assert samples.shape[0] == LIMIT + 2
    np.testing.assert_array_equal(samples[LIMIT:], client.sample([LIMIT, LIMIT + 1], 0.5))
    assert client.sample_latent(np.zeros((LIMIT + 1, 4), np.float32)).shape[0] == LIMIT + 1
    unchunked = client_lib.make_client("local", version_dir, max_batch=1024)
    with pytest.raises(client_lib.ServingError, match=rf"at most {LIMIT} images per request"):
        unchunked.score(images)


def test_export_cli_records_max_batch(limited, tmp_path):
    model_dir = os.path.join(os.path.dirname(limited[0]), "model")
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "serving.export", f"--model_dir={model_dir}",
                             f"--export_dir={tmp_path}", "--model_name=m", "--nomlflow",
                             "--max_batch=7"], capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    version_dir = json.loads(result.stdout.strip().splitlines()[-1])["version_dir"]
    meta = json.load(open(os.path.join(version_dir, "assets.extra", "export_metadata.json")))
    assert meta["max_batch"] == 7
    assert "max_batch_size { value: 7 }" in open(tmp_path / "batching_parameters.txt").read()
