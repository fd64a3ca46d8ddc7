"""Clients for an exported model served by TF Serving (REST or gRPC) or by
`mlflow models serve` (its /invocations endpoint), or run in this process (``local``).
``python -m serving.client ... sample|score ...`` is their command line
(:mod:`serving.client_cli`). No TensorFlow import here (a thin client); the gRPC and local
clients import it when made.

Every client has the same methods: ``score(images uint8 [N, H, W, C]) -> {"log_likelihood_nats":
[N], "bits_per_dim": [N]}`` (a deterministic point estimate, not a bound; an export made
with ``--importance_samples=K`` adds ``iw_bound_nats``, ``iw_bound_stderr_nats``,
``iw_bits_per_dim`` and ``iw_bits_per_dim_stderr``, the importance-weighted bound and its
standard error), ``sample(seeds [N], temperatures [N]) -> uint8 [N, H, W, C]`` and
``sample_latent(latent [N, d]) -> uint8 [N, H, W, C]``. Server-side errors (e.g. a wrong
image size, HTTP 400 / INVALID_ARGUMENT) raise :class:`ServingError` with the server's message.

An export accepts at most ``max_batch`` rows per request (export_metadata.json, default
1024); every client sends larger jobs as consecutive chunks of at most ``max_batch`` rows
(``--max_batch``) and concatenates the answers, which is the same as one big request
because each row's result depends only on that row.
"""
from __future__ import annotations

import abc
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Sequence

import numpy as np

DEFAULT_MAX_BATCH = 1024  # serving.signatures.DEFAULT_MAX_BATCH (not imported: no TF here)
_OUTPUT_DTYPES = {"images": np.uint8, "log_likelihood_nats": np.float32,
                  "bits_per_dim": np.float32, "iw_bound_nats": np.float32,
                  "iw_bound_stderr_nats": np.float32, "iw_bits_per_dim": np.float32,
                  "iw_bits_per_dim_stderr": np.float32}


class ServingError(RuntimeError):
    """The server rejected a request or could not be reached; the message is the server's."""


def _batch_inputs(seeds: Sequence[int], temperatures: Sequence[float] | float
                  ) -> dict[str, np.ndarray]:
    seeds = np.asarray(seeds, np.int64).reshape(-1)
    temps = np.asarray(temperatures, np.float32).reshape(-1)
    if temps.size == 1 and seeds.size != 1:
        temps = np.full(seeds.shape, temps[0], np.float32)
    if temps.shape != seeds.shape:
        raise ValueError(f"seeds [N] and temperatures [N] must have the same length; got "
                         f"{seeds.size} and {temps.size}")
    return {"seed": seeds, "temperature": temps}


def _check_images(images: Any) -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(f"images must be uint8 [N, H, W, C]; got {arr.dtype} {list(arr.shape)}")
    return arr


class _Client(abc.ABC):
    """Shared API; subclasses implement :meth:`predict` (one request). ``max_batch``: the
    most rows sent in one request (the export's --max_batch)."""

    max_batch: int = DEFAULT_MAX_BATCH

    @abc.abstractmethod
    def predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs ``signature`` on named inputs; returns its named outputs as arrays."""

    def predict_chunked(self, signature: str, inputs: dict[str, np.ndarray]
                        ) -> dict[str, np.ndarray]:
        """:meth:`predict` in requests of at most ``max_batch`` rows, outputs concatenated
        along the row axis."""
        if int(self.max_batch) < 1:
            raise ValueError(f"max_batch={self.max_batch}: expected a positive integer")
        n = len(next(iter(inputs.values())))
        if n <= self.max_batch:
            return self.predict(signature, inputs)
        parts = [self.predict(signature, {k: v[i:i + self.max_batch] for k, v in inputs.items()})
                 for i in range(0, n, self.max_batch)]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    def score(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 [N, H, W, C] -> {'log_likelihood_nats': [N], 'bits_per_dim': [N]} float32:
        a deterministic point estimate (mid-bin dequantization, fixed posterior noise), not
        a bound; plus the 'iw_*' bound outputs [N] if the export has importance samples."""
        return self.predict_chunked("score", {"images": _check_images(images)})

    def sample(self, seeds: Sequence[int], temperatures: Sequence[float] | float = 1.0
               ) -> np.ndarray:
        """One uint8 image [H, W, C] per seed (row i depends on seeds[i], temperatures[i])."""
        return self.predict_chunked("sample", _batch_inputs(seeds, temperatures))["images"]

    def sample_latent(self, latent: np.ndarray) -> np.ndarray:
        """float32 latents [N, d] -> uint8 images [N, H, W, C]."""
        return self.predict_chunked("sample_latent",
                                    {"latent": np.asarray(latent, np.float32)})["images"]


def _typed(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, _OUTPUT_DTYPES.get(k)) for k, v in outputs.items()}


def _post_json(url: str, payload: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        try:
            reply = json.loads(body)
        except ValueError:
            reply = None
        if isinstance(reply, dict):
            message = reply.get("error") or reply.get("message") or body
            trace = [line for line in str(reply.get("stack_trace", "")).splitlines() if line.strip()]
            if trace:  # MLflow's scoring server puts the model's own error last
                message = f"{message} ({trace[-1].strip()})"
        else:
            message = body
        raise ServingError(f"{url}: HTTP {err.code}: {message}") from err
    except urllib.error.URLError as err:
        raise ServingError(f"{url}: cannot reach the server ({err.reason})") from err


def _base_url(address: str) -> str:
    return address.rstrip("/") if "://" in address else f"http://{address.rstrip('/')}"


class RestClient(_Client):
    """TF Serving's REST API: ``fmt='row'`` sends ``instances`` (one object per example),
    ``fmt='columnar'`` sends ``inputs`` (one array per input)."""

    def __init__(self, address: str, model_name: str, fmt: str = "row",
                 version: int | None = None, timeout: float = 60.0):
        if fmt not in ("row", "columnar"):
            raise ValueError(f"fmt={fmt!r}: expected 'row' or 'columnar'")
        path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
        self.url = _base_url(address) + path + ":predict"
        self.fmt, self.timeout = fmt, timeout

    def predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fmt == "row":
            n = len(next(iter(inputs.values())))
            rows = [{k: v[i].tolist() for k, v in inputs.items()} for i in range(n)]
            reply = _post_json(self.url, {"signature_name": signature, "instances": rows},
                               self.timeout)
            preds = reply["predictions"]
            if preds and isinstance(preds[0], dict):
                return _typed({k: [p[k] for p in preds] for k in preds[0]})
            return _typed({"images": preds})  # one output: a plain list per row
        reply = _post_json(self.url, {"signature_name": signature,
                                      "inputs": {k: v.tolist() for k, v in inputs.items()}},
                           self.timeout)
        outputs = reply["outputs"]
        return _typed(outputs if isinstance(outputs, dict) else {"images": outputs})


class GrpcClient(_Client):
    """TF Serving's gRPC PredictionService (tensorflow-serving-api)."""

    def __init__(self, address: str, model_name: str, version: int | None = None,
                 timeout: float = 60.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 256 << 20),
                              ("grpc.max_send_message_length", 256 << 20)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_name, self.version, self.timeout = model_name, version, timeout

    def predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature
        if self.version:
            request.model_spec.version.value = int(self.version)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ServingError(f"gRPC {err.code().name}: {err.details()}") from err
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


class MlflowServeClient(_Client):
    """`mlflow models serve` of the registered pyfunc model: POST /invocations with
    {"inputs": ..., "params": {"signature": ...}}; ``inputs`` is the array itself for the
    signatures with one unnamed tensor input (score, sample_latent) and one list per column
    otherwise (sample), as the models' MLflow signatures declare."""

    #: Signatures whose MLflow model has a single unnamed tensor input.
    TENSOR_INPUT_SIGNATURES = frozenset({"score", "serving_default", "sample_latent"})

    def __init__(self, address: str, timeout: float = 60.0):
        self.url = _base_url(address) + "/invocations"
        self.timeout = timeout

    def predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature in self.TENSOR_INPUT_SIGNATURES and len(inputs) == 1:
            payload = next(iter(inputs.values())).tolist()
        else:
            payload = {k: v.tolist() for k, v in inputs.items()}
        reply = _post_json(self.url, {"inputs": payload, "params": {"signature": signature}},
                           self.timeout)
        return _typed(reply["predictions"])


class LocalClient(_Client):
    """An export's version directory run in this process (``tf.saved_model.load``): the
    same signatures and in-graph checks as TF Serving, no server needed."""

    def __init__(self, version_dir: str):
        import os

        import tensorflow as tf

        if not os.path.isfile(os.path.join(version_dir, "saved_model.pb")):
            raise ValueError(f"{version_dir!r} is not an export version directory (expected "
                             "saved_model.pb; e.g. exports/NAME/1)")
        self.loaded = tf.saved_model.load(version_dir)

    def predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        if signature not in self.loaded.signatures:
            raise ServingError(f"the export has no signature {signature!r} "
                               f"(it has {sorted(self.loaded.signatures)})")
        try:
            out = self.loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as err:
            lines = [ln.strip() for ln in str(getattr(err, "message", err)).splitlines()
                     if ln.strip()]
            useful = [ln for ln in lines if "assertion failed" in ln or "expected" in ln]
            raise ServingError((useful or lines or [repr(err)])[0]) from err
        return {k: v.numpy() for k, v in out.items()}


def make_client(target: str, address: str, model_name: str | None = None, fmt: str = "row",
                version: int | None = None, timeout: float = 60.0,
                max_batch: int = DEFAULT_MAX_BATCH) -> _Client:
    """target: 'rest' | 'grpc' (TF Serving, need model_name), 'mlflow', or 'local'
    (``address`` is an export's version directory). ``max_batch``: rows per request."""
    if target in ("rest", "grpc") and not model_name:
        raise ValueError(f"--target={target} needs --model_name (the TF Serving model name)")
    if int(max_batch) < 1:
        raise ValueError(f"--max_batch={max_batch}: expected a positive integer")
    if target == "rest":
        client: _Client = RestClient(address, model_name, fmt, version, timeout)
    elif target == "grpc":
        client = GrpcClient(address, model_name, version, timeout)
    elif target == "mlflow":
        client = MlflowServeClient(address, timeout)
    elif target == "local":
        client = LocalClient(address)
    else:
        raise ValueError(f"--target={target!r}: expected rest, grpc, mlflow or local")
    client.max_batch = int(max_batch)
    return client


if __name__ == "__main__":  # python -m serving.client: the command line's module runs it
    from serving.client_cli import main

    sys.exit(main())
