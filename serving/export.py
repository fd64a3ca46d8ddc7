"""Exports a trained model directory as a TF Serving SavedModel and registers it in MLflow.

    python -m serving.export --model_dir=runs/cqf --export_dir=exports --model_name=cqf \
        [--version=N] [--score_importance_samples=K] [--importance_samples=K] [--nomlflow]

writes ``<export_dir>/<model_name>/<version>/`` (TF Serving's layout: saved_model.pb,
variables/, assets.extra/tf_serving_warmup_requests, assets.extra/export_metadata.json)
and ``<export_dir>/models.config`` (a model_config_list naming every exported model) with
``<export_dir>/batching_parameters.txt`` beside it (TF Serving's ``--enable_batching``
settings; its max_batch_size is the smallest ``--max_batch`` of the exported models).
The version defaults to 1 + the highest existing integer version; an existing version is
never overwritten. The version directory is written under a temporary name and renamed
when complete, so a TF Serving instance polling the base path never loads a partial
export: a full or read-only disk, or Ctrl-C, removes the partial export and leaves the
earlier versions as they were (one line, exit 2 or 130, no traceback; ``AD_TRACEBACK=1``
shows it). See serving/signatures.py for the signatures.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from typing import Any

import tensorflow as tf

from artifacts import fs_errors, memory_errors, model_io
from artifacts.cli import setup_logging
from serving.export_config import ExportConfig
from serving.server_files import (
    BATCHING_PARAMETERS,
    MODELS_CONFIG,
    WARMUP_FILE,
    write_batching_parameters,
    write_models_config,
    write_warmup_requests,
)
from serving.signatures import (
    DEFAULT_MAX_BATCH,
    DEFAULT_SCORE_SEED,
    IW_OUTPUTS,
    SCORE_OUTPUTS,
    ServingModule,
)

log = logging.getLogger(__name__)

PROG = "python -m serving.export"
METADATA_FILE = "export_metadata.json"


def check_model_name(model_name: str) -> None:
    """ValueError unless ``model_name`` is a plain name usable as one directory: letters,
    digits, '_', '.', '-', starting with a letter or digit (so no '..', no path separators,
    no hidden or absolute paths)."""
    if (not isinstance(model_name, str) or not model_name or not model_name[0].isalnum()
            or ".." in model_name
            or not all((ch.isascii() and ch.isalnum()) or ch in "_.-" for ch in model_name)):
        raise ValueError(f"--model_name={model_name!r}: expected a plain name of letters, "
                         "digits, '_', '.' or '-' that starts with a letter or digit and has "
                         "no '..' (it names a directory under --export_dir)")


def check_alias(alias: str) -> None:
    """ValueError unless ``alias`` is usable as an MLflow registry alias (letters, digits,
    '_', '-'; not 'latest' nor a version like 'v3', which MLflow reserves)."""
    if not re.fullmatch(r"[\w-]{1,255}", alias) or alias.lower() == "latest" or re.fullmatch(
            r"[vV]\d+", alias):
        raise ValueError(f"--mlflow_alias={alias!r}: expected letters, digits, '_' or '-', "
                         "not 'latest' and not a version name like 'v3' (MLflow reserves them)")


def existing_versions(model_base: str) -> list[int]:
    """Integer version directories under ``<export_dir>/<model_name>``, ascending."""
    if not os.path.isdir(model_base):
        return []
    return sorted(int(n) for n in os.listdir(model_base)
                  if n.isdigit() and os.path.isdir(os.path.join(model_base, n)))


def _score_metadata(module: ServingModule) -> dict[str, Any]:
    """What ``score`` returns, in export_metadata.json: a deterministic point estimate
    (never called a bound) and, with importance samples, the IW bound."""
    latent = module.model.spec.latent
    meta: dict[str, Any] = {
        "kind": "deterministic_point_estimate", "is_bound": False,
        "outputs": list(SCORE_OUTPUTS),
        "importance_samples": module.num_samples, "seed": module.score_seed,
        "dequantization": "mid-bin (x + 0.5) / 256",
        "estimator": ("ln p(x~) at the bin centres (exact density, not a bound on the "
                      "discrete image's log-probability)" if not latent else
                      f"{'ELBO' if module.num_samples == 1 else 'IW bound'} integrand at "
                      f"{module.num_samples} fixed posterior draw(s) shared by every image "
                      "(a point estimate, not a bound)"),
        "iw_bound": None,
    }
    if getattr(module.model, "binary", False):
        meta["data"] = "binarized"
        meta["dequantization"] = ("none: the image is binarized b = 1[x >= 128] (the mid-bin "
                                  "u = 0.5 of b = 1[u < x / 255]) and scored by the Bernoulli "
                                  "decoder")
        meta["units"] = ("log_likelihood_nats: ln P(b) of the binary image; bits_per_dim: "
                         "-log2 P(b) / D, bits per binary pixel (not 8-bit bits/dim)")
    if module.importance_samples:
        meta["outputs"] += list(IW_OUTPUTS)
        meta["iw_bound"] = {
            "importance_samples": module.importance_samples, "is_bound": True,
            "outputs": list(IW_OUTPUTS),
            "description": "ln (1/K) sum_k p(x+u_k, z_k)/q(z_k|x+u_k) with K draws of uniform "
                           "dequantization u_k and z_k ~ q per image, seeded per row by the "
                           "image's pixels and the seed: a lower bound in expectation on "
                           "ln P(x) + D ln 256 (an upper bound on bits/dim), with its "
                           "jackknife standard error over the K draws"}
        if getattr(module.model, "binary", False):
            meta["iw_bound"]["description"] = (
                "ln (1/K) sum_k P(b, z_k)/q(z_k|b) with K posterior draws z_k ~ q(z|b) per "
                "image for its one binarization b = 1[x >= 128], seeded per row: a lower "
                "bound in expectation on ln P(b) (nats; iw_bits_per_dim = -bound / (D ln 2)),"
                " with its jackknife standard error over the K draws")
    return meta


def export_model(model_dir: str, export_dir: str, model_name: str, version: int | None = None,
                 score_importance_samples: int = 1, score_seed: int = DEFAULT_SCORE_SEED,
                 serving_base_path: str | None = None, log_to_mlflow: bool = True,
                 tracking_uri: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 importance_samples: int = 0, mlflow_alias: str | None = "last_export") -> str:
    """Exports the latest checkpoint of ``model_dir``; returns the version directory.

    Args:
      model_dir: a model directory written by pipeline.train (model_config.json + ckpt-*).
      export_dir: the TF Serving model root; the model goes to export_dir/model_name/version.
      model_name: TF Serving / MLflow registry name ([A-Za-z0-9][A-Za-z0-9_.-]*, no '..').
      version: positive integer; None: 1 + the highest existing version (1 if none).
      score_importance_samples: K fixed posterior draws of ``score``'s deterministic point
        estimate (1: the ELBO's integrand at one fixed draw); not a bound.
      score_seed: seed of the fixed posterior noise used by ``score`` (and, with the
        image's pixels, of the per-row draws of ``importance_samples``).
      serving_base_path: base_path written to models.config (default: the absolute
        export_dir/model_name; e.g. "/models/NAME" for the tensorflow/serving image).
      log_to_mlflow: log the export to model_dir's MLflow run and register it as
        ``model_name`` (skipped, with a warning, if the model dir has no MLflow run).
      tracking_uri: MLflow tracking URI (None: MLflow's current/default one).
      max_batch: the most rows one request to any signature may hold (checked in the
        graph; recorded in export_metadata.json and batching_parameters.txt).
      importance_samples: K > 0 adds the importance-weighted bound with its standard error
        to ``score`` (K dequantization and posterior draws per image, seeded per row);
        0: the point estimate only.
      mlflow_alias: registry alias set on the new version of every registered model
        (serving.mlflow_model; None or '': none).

    Raises:
      FileExistsError: the version already exists. ValueError: bad name/version/K.
      fs_errors.DiskError: a full, read-only or failing disk (the partial version
        directory is removed; after the version is complete, models.config or
        batching_parameters.txt could not be updated).
      KeyboardInterrupt: Ctrl-C, with a message saying what was kept.
    """
    check_model_name(model_name)
    if log_to_mlflow and mlflow_alias:
        check_alias(mlflow_alias)
    if isinstance(max_batch, bool) or int(max_batch) != max_batch or int(max_batch) < 1:
        raise ValueError(f"--max_batch={max_batch!r}: expected a positive integer")
    if isinstance(importance_samples, bool) or int(importance_samples) < 0:
        raise ValueError(f"--importance_samples={importance_samples!r}: expected K >= 0")
    if int(score_importance_samples) < 1:
        raise ValueError(f"--score_importance_samples={score_importance_samples}: expected a "
                         "positive integer")
    model_base = os.path.abspath(os.path.join(export_dir, model_name))
    if version is None:
        version = (existing_versions(model_base) or [0])[-1] + 1
    if isinstance(version, bool) or int(version) != version or int(version) < 1:
        raise ValueError(f"--version={version!r}: expected a positive integer")
    version = int(version)
    version_dir = os.path.join(model_base, str(version))
    if os.path.exists(version_dir):
        raise FileExistsError(
            f"{version_dir!r} already exists: version {version} of {model_name!r} is never "
            f"overwritten; pass another --version or omit it to use "
            f"{existing_versions(model_base)[-1] + 1 if existing_versions(model_base) else 1}")

    model, step = model_io.load_trained_model(model_dir)
    module = ServingModule(model, score_importance_samples, score_seed, int(max_batch),
                           int(importance_samples))
    signatures = module.signatures()
    if not module.has_score:
        log.warning("variant %r defines no likelihood: the export has no 'score' signature; "
                    "serving_default is 'sample'", model.spec.name)
    kept = f"nothing was added to {model_base!r} (earlier versions are untouched)"
    with fs_errors.disk_errors(f"exporting version {version} of {model_name!r} to "
                               f"{version_dir!r}", after=kept):
        os.makedirs(model_base, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_base)  # not an int: TF Serving ignores it
    try:
        with fs_errors.disk_errors(f"exporting version {version} of {model_name!r} to "
                                   f"{version_dir!r}", after=kept):
            metadata = _write_version(module, signatures, tmp_dir, version_dir, model_dir,
                                      model_name, version, step)
    except KeyboardInterrupt as err:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise KeyboardInterrupt(kept) from err
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    done = f"version {version} is exported whole in {version_dir!r}"
    try:
        with fs_errors.disk_errors(f"{done}, but updating {MODELS_CONFIG} and "
                                   f"{BATCHING_PARAMETERS} in {export_dir!r}"):
            config_path = write_models_config(export_dir, model_name,
                                              serving_base_path or model_base)
            write_batching_parameters(export_dir, module.max_batch)
    except KeyboardInterrupt as err:
        raise KeyboardInterrupt(f"{done}; {MODELS_CONFIG} or {BATCHING_PARAMETERS} may not "
                                "list it yet") from err
    log.info("exported %s (step %d, variant %s, signatures %s) to %s; TF Serving config %s",
             model_dir, step, model.spec.name, metadata["signatures"], version_dir, config_path)
    if log_to_mlflow:
        from serving import mlflow_model
        try:
            mlflow_model.log_and_register(model_dir, version_dir, model_name, metadata,
                                          tracking_uri=tracking_uri, alias=mlflow_alias or None)
        except KeyboardInterrupt as err:
            raise KeyboardInterrupt(f"{done} and listed in {MODELS_CONFIG}; its MLflow "
                                    "registration may be incomplete") from err
    return version_dir


def _write_version(module: ServingModule, signatures: dict[str, Any], tmp_dir: str,
                   version_dir: str, model_dir: str, model_name: str, version: int,
                   step: int) -> dict[str, Any]:
    """Writes the SavedModel with its assets.extra into ``tmp_dir`` and renames it to
    ``version_dir``; returns the export metadata."""
    model = module.model
    os.chmod(tmp_dir, 0o755)  # mkdtemp's 0700 would hide the version from other users
    tf.saved_model.save(module, tmp_dir, signatures=signatures)
    extra = os.path.join(tmp_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    names = sorted(signatures)
    write_warmup_requests(os.path.join(extra, WARMUP_FILE), model_name, module, names)
    metadata: dict[str, Any] = {
        "model_name": model_name, "version": version, "model_dir": os.path.abspath(model_dir),
        "checkpoint_step": step, "variant": model.spec.name,
        "model_config": json.loads(model.config.to_json()),
        "image_shape": list(module.image_shape), "latent_size": module.latent_size,
        "signatures": names, "max_batch": module.max_batch,
        "serving_default": "score" if module.has_score else "sample",
        "score": (_score_metadata(module) if module.has_score else None),
        "no_score_reason": (None if module.has_score else
                            f"variant {model.spec.name!r} is trained adversarially only "
                            "and defines no likelihood"),
    }
    with open(os.path.join(extra, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
    try:
        os.rename(tmp_dir, version_dir)  # fails if another export created it meanwhile
    except OSError as err:
        if not os.path.exists(version_dir):
            raise
        raise FileExistsError(f"{version_dir!r} appeared during the export; not "
                              "overwritten") from err
    return metadata


def main(argv: list[str]) -> None:
    del argv
    cfg = config_from_flags()
    tracking_uri = cfg.mlflow_tracking_uri or None
    if cfg.mlflow:  # default: the store recorded in the model directory
        from artifacts import tracking
        tracking_uri = tracking.configure(tracking_uri, cfg.model_dir)
    with memory_errors.out_of_memory("exporting", memory_errors.size_settings(
            cfg, names=("max_batch", "score_importance_samples", "importance_samples"))):
        version_dir = export_model(
            cfg.model_dir, cfg.export_dir, cfg.model_name, cfg.version,
            cfg.score_importance_samples, cfg.score_seed, cfg.serving_base_path or None,
            cfg.mlflow, tracking_uri, cfg.max_batch, cfg.importance_samples, cfg.mlflow_alias)
    print(json.dumps({"version_dir": version_dir}))


def define_flags(flag_values=None) -> None:
    """The CLI's flags, one per :class:`ExportConfig` field (in absl's global FLAGS unless
    ``flag_values`` is given; defined only when run as a program)."""
    from absl import flags

    from pipeline import config_flags

    config_flags.define_flags(ExportConfig, flags.FLAGS if flag_values is None else flag_values)


def config_from_flags(flag_values=None) -> ExportConfig:
    """The parsed flags (absl's global FLAGS unless ``flag_values``) as an ExportConfig."""
    from absl import flags

    from pipeline import config_flags

    return ExportConfig(**config_flags.values_from_flags(
        ExportConfig, flags.FLAGS if flag_values is None else flag_values))


if __name__ == "__main__":
    from absl import app

    setup_logging()
    define_flags()
    from artifacts.cli import user_errors

    fs_errors.drop_failure_logs()
    app.run(fs_errors.interrupts_as_one_line(PROG)(user_errors(PROG)(main)))
