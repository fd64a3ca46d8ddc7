"""The files TF Serving reads beside the SavedModels of an export directory: the warmup
requests a version replays at load time, ``models.config`` (the model_config_list of every
exported model) and ``batching_parameters.txt`` (``--enable_batching`` settings). The two
shared files are written whole under a temporary name and renamed."""
from __future__ import annotations

import contextlib
import os
import re

import numpy as np
import tensorflow as tf

from serving.signatures import ServingModule

WARMUP_FILE = "tf_serving_warmup_requests"
MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"


def write_warmup_requests(path: str, model_name: str, module: ServingModule,
                          signature_names: list[str]) -> int:
    """Writes a TFRecord of PredictionLog{predict_log{request}} with one small
    PredictRequest per signature (TF Serving replays them at load time); returns the count."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    inputs = {
        "score": {"images": np.full((2,) + module.image_shape, 128, np.uint8)},
        "sample": {"seed": np.array([0, 1], np.int64), "temperature": np.array([1.0, 0.5], np.float32)},
        "sample_latent": {"latent": np.zeros((2, module.latent_size), np.float32)},
    }
    inputs["serving_default"] = inputs["score" if module.has_score else "sample"]
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for name in signature_names:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name))
            for key, value in inputs[name].items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(record.SerializeToString())
            count += 1
    return count


def write_models_config(export_dir: str, model_name: str, base_path: str) -> str:
    """Adds (or updates) ``model_name`` in ``<export_dir>/models.config``, a TF Serving
    ModelServerConfig text proto; other models already listed are kept. Returns the path."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = os.path.join(export_dir, MODELS_CONFIG)
    config = model_server_config_pb2.ModelServerConfig()
    if os.path.isfile(path):
        with open(path) as f:
            try:
                text_format.Parse(f.read(), config)
            except text_format.ParseError as err:
                raise ValueError(f"{path!r} is not a TF Serving model_config_list text proto: "
                                 f"{err}") from err
    entries = config.model_config_list.config
    entry = next((c for c in entries if c.name == model_name), None) or entries.add()
    entry.name = model_name
    entry.base_path = base_path
    entry.model_platform = "tensorflow"
    _write_text_atomically(path, text_format.MessageToString(config))
    return path


def _write_text_atomically(path: str, text: str) -> None:
    """Writes ``path`` whole under a temporary name beside it, then renames it: an old
    file is replaced in one step, or (a full disk, Ctrl-C) left as it was, and the
    temporary file removed."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_batching_parameters(export_dir: str, max_batch: int) -> str:
    """Writes ``<export_dir>/batching_parameters.txt``, a TF Serving BatchingParameters
    text proto for ``tensorflow_model_server --enable_batching
    --batching_parameters_file=...``. Its max_batch_size (rows of one merged batch) is
    ``max_batch``, or the value already in the file if smaller: the server-side batcher
    must never build a batch that a served model's in-graph limit rejects. Returns the path."""
    path = os.path.join(export_dir, BATCHING_PARAMETERS)
    size = int(max_batch)
    if os.path.isfile(path):
        with open(path) as f:
            found = re.search(r"max_batch_size\s*\{\s*value:\s*(\d+)", f.read())
        if found:
            size = min(size, int(found.group(1)))
    text = (
        "# TF Serving batching: tensorflow_model_server --enable_batching "
        f"--batching_parameters_file=<this file>\n"
        "# max_batch_size must not exceed the smallest --max_batch of the served exports.\n"
        f"max_batch_size {{ value: {size} }}\n"
        "batch_timeout_micros { value: 2000 }\n"       # wait <= 2 ms to fill a batch
        "max_enqueued_batches { value: 64 }\n"          # queue bound: back-pressure, not OOM
        "num_batch_threads { value: 4 }\n"
        "pad_variable_length_inputs: false\n")
    _write_text_atomically(path, text)
    return path
