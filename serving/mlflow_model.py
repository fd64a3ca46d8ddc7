"""The exported SavedModel as MLflow pyfunc models, one per signature, each with a model
signature that `mlflow models serve` checks requests against.

MLflow gives a model one input schema, so each SavedModel signature is its own pyfunc
model, logged to the training run and registered as (N, H, W, C: rows and image shape; d:
latent size)

* ``NAME`` -- the export's serving_default (``score``; ``sample`` for a gan);
* ``NAME-sample`` and ``NAME-sample_latent`` -- the other signatures,

each with the alias ``--mlflow_alias`` (default :data:`DEFAULT_ALIAS`), so
``mlflow models serve -m models:/NAME@last_export`` serves the newest export.

=================  ===================================  ======================================
signature          input (schema)                       output (schema)
=================  ===================================  ======================================
``score``          tensor uint8 [-1, H, W, C]           ``log_likelihood_nats``,
                   (an array, one image per row)        ``bits_per_dim`` (and the IW outputs
                                                        of an ``--importance_samples`` export)
                                                        float32 [-1]
``sample``         columns ``seed`` long,               ``images`` uint8 [-1, H, W, C]
                   ``temperature`` double (JSON's
                   floats; cast to the float32 input)
``sample_latent``  tensor float32 [-1, d]               ``images`` uint8 [-1, H, W, C]
=================  ===================================  ======================================

Over REST: ``{"inputs": [[[[0], ...]]]}`` (score, one nested list per image) or
``{"inputs": {"seed": [1, 2], "temperature": [1.0, 0.5]}}`` (sample). A request of the
wrong shape or dtype is refused by MLflow with HTTP 400 naming the expected schema. The
param ``signature`` (default: the model's own) is accepted for clients that name the
signature; naming another one is an error that says which registered model serves it.

The models are logged as code (this file; MLflow runs it with ``model_config``
``{"serving_vN_sample": {"signature": "sample"}}`` and it sets the model of that
signature), not pickled. It imports
only TensorFlow, NumPy, pandas and MLflow, so it runs in the MLflow scoring server as is.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ARTIFACT_KEY = "saved_model"
SIGNATURE_PARAM = "signature"  # request param (and model_config key): the signature
DEFAULT_ALIAS = "last_export"
_DTYPES = {"images": np.uint8, "seed": np.int64, "temperature": np.float32,
           "latent": np.float32}


def _as_array(name: str, value: Any) -> np.ndarray:
    """Converts one input to its signature dtype, refusing lossy conversions."""
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


def registered_name(model_name: str, signature: str, serving_default: str) -> str:
    """The registry name of one signature's model: ``model_name`` for the serving
    default, else ``<model_name>-<signature>``."""
    return model_name if signature == serving_default else f"{model_name}-{signature}"


class _SignatureModel(mlflow.pyfunc.PythonModel):
    """One signature of an exported SavedModel (artifact ``saved_model``)."""

    signature_name = ""

    def load_context(self, context) -> None:
        import tensorflow as tf

        path = context.artifacts[ARTIFACT_KEY]
        self._fn = tf.saved_model.load(path).signatures[self.signature_name]
        meta_path = os.path.join(path, "assets.extra", "export_metadata.json")
        with open(meta_path) as f:
            self.metadata = json.load(f)

    def _check_param(self, params: dict[str, Any] | None) -> None:
        asked = (params or {}).get(SIGNATURE_PARAM) or self.signature_name
        if asked == "serving_default":
            asked = self.metadata["serving_default"]
        if asked != self.signature_name:
            name = self.metadata["model_name"]
            served = {s: registered_name(name, s, self.metadata["serving_default"])
                      for s in self.metadata["signatures"] if s in MODEL_CLASSES}
            raise ValueError(f"params signature={asked!r}: this model serves "
                             f"{self.signature_name!r}; the export's signatures are served by "
                             f"the registered models {served}")

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        outputs = self._fn(**{k: tf.constant(_as_array(k, v)) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}


class ScoreModel(_SignatureModel):
    """``score``: images uint8 [N, H, W, C] -> per-image nats and bits/dim."""

    signature_name = "score"

    def predict(self, context, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        self._check_param(params)
        return self._run({"images": model_input})


class SampleModel(_SignatureModel):
    """``sample``: a table of (seed, temperature) rows -> images uint8 [N, H, W, C]."""

    signature_name = "sample"

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        self._check_param(params)
        return self._run({"seed": model_input["seed"].to_numpy(),
                          "temperature": model_input["temperature"].to_numpy()})


class SampleLatentModel(_SignatureModel):
    """``sample_latent``: latents float32 [N, d] -> decoded images uint8 [N, H, W, C]."""

    signature_name = "sample_latent"

    def predict(self, context, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        self._check_param(params)
        return self._run({"latent": model_input})


MODEL_CLASSES: dict[str, type[_SignatureModel]] = {
    c.signature_name: c for c in (ScoreModel, SampleModel, SampleLatentModel)}


def model_signature(signature: str, metadata: dict[str, Any]):
    """The MLflow ModelSignature of one signature of the export described by
    ``metadata`` (export_metadata.json): shapes and dtypes of inputs and outputs."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    images = (-1, *metadata["image_shape"])
    image_out = Schema([TensorSpec(np.dtype(np.uint8), images, "images")])
    if signature == "score":
        inputs = Schema([TensorSpec(np.dtype(np.uint8), images)])
        outputs = Schema([TensorSpec(np.dtype(np.float32), (-1,), name)
                          for name in metadata["score"]["outputs"]])
    elif signature == "sample":
        inputs = Schema([ColSpec("long", "seed"), ColSpec("double", "temperature")])
        outputs = image_out
    else:
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, metadata["latent_size"]))])
        outputs = image_out
    return ModelSignature(inputs=inputs, outputs=outputs,
                          params=ParamSchema([ParamSpec(SIGNATURE_PARAM, "string", signature)]))


def input_example(signature: str, metadata: dict[str, Any]) -> np.ndarray | pd.DataFrame:
    """Two rows of a valid input: grey images, (seed, temperature) pairs, or zero latents."""
    if signature == "score":
        return np.full((2, *metadata["image_shape"]), 128, np.uint8)
    if signature == "sample":
        return pd.DataFrame({"seed": np.array([0, 1], np.int64),
                             "temperature": np.array([1.0, 0.5], np.float64)})
    return np.zeros((2, metadata["latent_size"]), np.float32)


def _log_one(signature: str, version_dir: str, model_name: str, metadata: dict[str, Any],
             alias: str | None):
    """Logs and registers one signature's model in the active run; returns its ModelInfo."""
    from mlflow import MlflowClient

    suffix = "" if signature == metadata["serving_default"] else f"_{signature}"
    name = registered_name(model_name, signature, metadata["serving_default"])
    logged_name = f"serving_v{metadata['version']}{suffix}"
    info = mlflow.pyfunc.log_model(
        name=logged_name, python_model=os.path.abspath(__file__),
        # MLflow also logs model_config as run params: one key per model keeps them apart
        model_config={logged_name: {SIGNATURE_PARAM: signature}},
        artifacts={ARTIFACT_KEY: version_dir},
        signature=model_signature(signature, metadata),
        input_example=input_example(signature, metadata), registered_model_name=name,
        metadata={k: metadata[k] for k in ("variant", "image_shape", "latent_size",
                                           "signatures", "version", "checkpoint_step")},
        pip_requirements=[f"tensorflow=={_version('tensorflow')}",
                          f"mlflow=={_version('mlflow')}", "numpy", "pandas"])
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, info.registered_model_version)
    return info


def log_and_register(model_dir: str, version_dir: str, model_name: str,
                     metadata: dict[str, Any], tracking_uri: str | None = None,
                     alias: str | None = DEFAULT_ALIAS) -> dict[str, Any] | None:
    """Logs each signature of the export to ``model_dir``'s MLflow run as a pyfunc model,
    registers it (:func:`registered_name`) and points ``alias`` at the new version; returns
    {signature: ModelInfo} (None, with a warning, if the model directory has no MLflow run)."""
    import mlflow

    from artifacts import tracking

    if tracking_uri:
        tracking.configure(tracking_uri)
    with tracking.attached_run(model_dir) as run_id:
        if run_id is None:
            log.warning("%s has no MLflow run in %s: the export is not logged or registered",
                        model_dir, mlflow.get_tracking_uri())
            return None
        infos = {s: _log_one(s, version_dir, model_name, metadata, alias)
                 for s in metadata["signatures"] if s in MODEL_CLASSES}
        mlflow.set_tags({"serving.export_dir": version_dir,
                         "serving.signatures": ",".join(metadata["signatures"])})
        mlflow.log_dict(metadata, f"serving/{model_name}_v{metadata['version']}.json")
        for s, info in infos.items():
            log.info("registered %r version %s (%s)%s", registered_name(
                model_name, s, metadata["serving_default"]), info.registered_model_version, s,
                f", alias {alias!r}" if alias else "")
        return infos


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _set_model_when_run_as_model_code() -> None:
    """MLflow runs this file with the logged ``model_config`` ({logged name: {"signature":
    ...}}) to load a model: set the model of that signature. Imported as a library, the
    config is the empty development one: nothing is set."""
    from mlflow.models import ModelConfig

    try:
        config = ModelConfig(development_config={"": {}}).to_dict()
    except FileNotFoundError:  # loaded without a model_config: not a model of this file
        return
    signatures = [v.get(SIGNATURE_PARAM) for v in config.values() if isinstance(v, dict)]
    if len(signatures) == 1 and signatures[0] in MODEL_CLASSES:
        mlflow.models.set_model(MODEL_CLASSES[signatures[0]]())


_set_model_when_run_as_model_code()
