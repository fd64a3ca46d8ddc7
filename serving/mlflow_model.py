"""The exported SavedModel as an MLflow pyfunc model, served by `mlflow models serve`.

MLflow's TensorFlow flavour reaches only ``__call__``; this wrapper loads the SavedModel
with ``tf.saved_model.load`` and lets ``params={"signature": ...}`` pick the signature:

* ``score``: images uint8 [N, H, W, C] (an array, a DataFrame with one row per image
  whose single column holds an image, or {"images": ...}) -> {"log_likelihood_nats": [N],
  "bits_per_dim": [N]}.
* ``sample``: {"seed": [N] ints, "temperature": [N] floats} -> {"images": uint8 [N, H, W, C]}.
* ``sample_latent``: {"latent": [N, d]} or an [N, d] array -> {"images": ...}.

The default signature is the export's serving_default (score; sample for a gan).
Over REST: POST /invocations {"inputs": {"seed": [1, 2], "temperature": [1, 1]},
"params": {"signature": "sample"}}.

This module imports only TensorFlow, NumPy, pandas and MLflow: it is shipped with the
model (code_paths) and loaded by the MLflow scoring server.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import mlflow.pyfunc
import numpy as np

log = logging.getLogger(__name__)

ARTIFACT_KEY = "saved_model"
SIGNATURE_PARAM = "signature"
_INPUTS = {"score": ("images",), "sample": ("seed", "temperature"),
           "sample_latent": ("latent",)}
_DTYPES = {"images": np.uint8, "seed": np.int64, "temperature": np.float32,
           "latent": np.float32}


def _as_array(name: str, value: Any) -> np.ndarray:
    """Converts one input to its signature dtype, refusing lossy conversions."""
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        value = _frame_to_array(value)
    elif isinstance(value, pd.Series):
        value = np.stack([np.asarray(v) for v in value]) if value.dtype == object else value.to_numpy()
    arr = np.asarray(value)
    if arr.dtype == object:
        try:
            arr = np.stack([np.asarray(v) for v in arr])
        except ValueError as err:
            raise ValueError(f"input {name!r}: rows have different shapes ({err})") from err
    dtype = _DTYPES[name]
    if arr.size and dtype in (np.uint8, np.int64):
        if not np.issubdtype(arr.dtype, np.integer) and not (
                np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise ValueError(f"input {name!r} must hold integers ({np.dtype(dtype).name}); "
                             f"got {arr.dtype}")
        if dtype == np.uint8 and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"input {name!r} must be uint8 pixel values in [0, 255]; got range "
                             f"[{arr.min()}, {arr.max()}]")
    return arr.astype(dtype)


def _frame_to_array(frame) -> np.ndarray:
    """A DataFrame with one column of per-row arrays -> stacked; else the plain values."""
    if frame.shape[1] == 1 and frame.dtypes.iloc[0] == object:
        return np.stack([np.asarray(v) for v in frame.iloc[:, 0]])
    return frame.to_numpy()


class HybridServingModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of an exported SavedModel (artifact ``saved_model``)."""

    def load_context(self, context) -> None:
        import tensorflow as tf

        path = context.artifacts[ARTIFACT_KEY]
        self._model = tf.saved_model.load(path)
        self.signatures = dict(self._model.signatures)
        meta_path = os.path.join(path, "assets.extra", "export_metadata.json")
        self.metadata = json.load(open(meta_path)) if os.path.isfile(meta_path) else {}
        self.default_signature = self.metadata.get(
            "serving_default", "score" if "score" in self.signatures else "sample")

    def _inputs(self, signature: str, model_input: Any) -> dict[str, np.ndarray]:
        names = _INPUTS[signature]
        if isinstance(model_input, dict):
            data = model_input
        else:
            import pandas as pd

            if isinstance(model_input, pd.DataFrame) and set(names) <= set(model_input.columns) \
                    and len(names) > 1:
                data = {n: model_input[n] for n in names}
            elif len(names) == 1:
                data = {names[0]: model_input}
            else:
                raise ValueError(f"signature {signature!r} expects a dict (or DataFrame with "
                                 f"columns) {list(names)}; got {type(model_input).__name__}")
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"signature {signature!r} expects inputs {list(names)}; "
                             f"missing {missing} (got {sorted(data)})")
        return {n: _as_array(n, data[n]) for n in names}

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would
        # turn them into an input schema, but the inputs depend on params["signature"]
        """Runs the signature named by ``params['signature']`` (default: serving_default);
        returns its outputs as numpy arrays."""
        import tensorflow as tf

        signature = (params or {}).get(SIGNATURE_PARAM) or self.default_signature
        if signature == "serving_default":
            signature = self.default_signature
        if signature not in _INPUTS or signature not in self.signatures:
            raise ValueError(f"params signature={signature!r}: this model serves "
                             f"{sorted(s for s in self.signatures if s in _INPUTS)}")
        inputs = self._inputs(signature, model_input)
        outputs = self.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}


def log_and_register(model_dir: str, version_dir: str, model_name: str,
                     metadata: dict[str, Any], tracking_uri: str | None = None):
    """Logs the export to ``model_dir``'s MLflow run as a pyfunc model and registers it as
    ``model_name``; returns the ModelInfo (None, with a warning, if the model directory has
    no MLflow run)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from artifacts import tracking

    if tracking_uri:
        tracking.configure(tracking_uri)
    with tracking.attached_run(model_dir) as run_id:
        if run_id is None:
            log.warning("%s has no MLflow run in %s: the export is not logged or registered",
                        model_dir, mlflow.get_tracking_uri())
            return None
        serving_pkg = os.path.dirname(os.path.abspath(__file__))
        signature = ModelSignature(params=ParamSchema([
            ParamSpec(SIGNATURE_PARAM, "string", metadata["serving_default"])]))
        info = mlflow.pyfunc.log_model(
            name=f"serving_v{metadata['version']}", python_model=HybridServingModel(),
            artifacts={ARTIFACT_KEY: version_dir}, code_paths=[serving_pkg],
            signature=signature, registered_model_name=model_name,
            metadata={k: metadata[k] for k in ("variant", "image_shape", "latent_size",
                                               "signatures", "version", "checkpoint_step")},
            pip_requirements=[f"tensorflow=={_version('tensorflow')}",
                              f"mlflow=={_version('mlflow')}", "numpy", "pandas"])
        mlflow.set_tags({"serving.export_dir": version_dir,
                         "serving.signatures": ",".join(metadata["signatures"])})
        mlflow.log_dict(metadata, f"serving/{model_name}_v{metadata['version']}.json")
        log.info("logged the export to MLflow run %s and registered %r version %s", run_id,
                 model_name, info.registered_model_version)
        return info


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
