"""The settings of ``python -m serving.export`` (:class:`ExportConfig`): each field's
``dataclasses.field`` metadata holds its help text (and ``lower_bound``), the single
source of the CLI's flags (:func:`pipeline.config_flags.define_flags`, as for training)."""
from __future__ import annotations

import dataclasses

from serving.signatures import DEFAULT_MAX_BATCH, DEFAULT_SCORE_SEED

_field = dataclasses.field


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """An export of a trained model directory as a TF Serving version (and its MLflow
    registration); --model_dir, --export_dir and --model_name are required flags."""
    model_dir: str = _field(metadata={"help": "Model directory written by pipeline.train."})
    export_dir: str = _field(metadata={
        "help": "TF Serving model root (writes NAME/VERSION/ in it)."})
    model_name: str = _field(metadata={
        "help": "Model name for TF Serving and the MLflow registry."})
    version: int | None = _field(default=None, metadata={
        "help": "Version number (default: 1 + highest existing).", "lower_bound": 1})
    score_importance_samples: int = _field(default=1, metadata={
        "help": "K fixed posterior draws of score's deterministic point estimate (1: one "
                "draw). Not a bound; see --importance_samples.", "lower_bound": 1})
    importance_samples: int = _field(default=0, metadata={
        "help": "If K > 0, score also returns the importance-weighted bound (iw_bound_nats, "
                "iw_bits_per_dim) with its standard error, from K dequantization and "
                "posterior draws per image seeded per row.", "lower_bound": 0})
    score_seed: int = _field(default=DEFAULT_SCORE_SEED, metadata={
        "help": "Seed of score's fixed posterior noise."})
    serving_base_path: str = _field(default="", metadata={
        "help": "base_path in models.config (default: the absolute export path; "
                "'/models/NAME' inside the tensorflow/serving image)."})
    max_batch: int = _field(default=DEFAULT_MAX_BATCH, metadata={
        "help": "Most rows (images, seeds, latents) per request; larger requests are refused "
                "inside the graph (clients split them).", "lower_bound": 1})
    mlflow: bool = _field(default=True, metadata={
        "help": "Log to the model dir's MLflow run and register the model (one registered "
                "model per signature, see serving/mlflow_model.py)."})
    mlflow_alias: str = _field(default="last_export", metadata={
        "help": "Registry alias pointed at the new versions: mlflow models serve -m "
                "models:/NAME@ALIAS ('' = none)."})
    mlflow_tracking_uri: str = _field(default="", metadata={
        "help": "MLflow tracking URI (default: the one recorded in --model_dir, else "
                "MLflow's)."})
