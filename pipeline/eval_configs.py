"""The settings of the evaluation command lines, one frozen dataclass each:
:class:`EvalConfig` (``python -m pipeline.evaluate``), :class:`CriticEvalConfig`
(``pipeline.critic_eval``), :class:`FitPriorConfig` (``pipeline.fit_prior``) and
:class:`SurrogateConfig` (``pipeline.surrogate_likelihood``).

As for training (:mod:`pipeline.train_config`), each field's ``dataclasses.field``
metadata holds its help text, the single source of the CLI's flags
(:func:`pipeline.config_flags.define_flags`: one flag per field, of its name, type and
default). A field without a default is a required flag (absl: "Flag --X must have a value
other than None."), unless its metadata says ``"required": False``: then the flag
defaults to None and the dataclass refuses a missing value itself, with the message the
CLI has always given.
"""
from __future__ import annotations

import dataclasses

_field = dataclasses.field
MODEL_DIR_HELP = "Model directory written by pipeline.train."
MLFLOW_HELP = ("MLflow tracking URI ('' = the one recorded in --model_dir, else MLflow's "
               "default).")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """``python -m pipeline.evaluate``: bits/dim (and the other registered metrics) of a
    split, and FID/KID/IS/precision/recall of samples."""
    model_dir: str = _field(metadata={"help": MODEL_DIR_HELP, "required": False})
    data_dir: str | None = _field(default=None, metadata={
        "help": "Preprocessed data set (for BPD)."})
    split: str = _field(default="validation", metadata={"help": "Split to score."})
    importance_samples: int = _field(default=1, metadata={
        "help": "K of the importance-weighted bound (VAE variants)."})
    batch_size: int = _field(default=100, metadata={"help": "Images per batch."})
    max_examples: int | None = _field(default=None, metadata={
        "help": "Score at most this many images of the split."})
    seed: int = _field(default=0, metadata={
        "help": "Seed of the dequantization noise (for a Bernoulli-decoder model: of the "
                "fixed binarization of the split), the posterior noise and the samples."})
    fid_samples: int = _field(default=0, metadata={
        "help": "If > 0, FID/KID/IS/precision/recall of this many samples."})
    pr_max_samples: int = _field(default=10000, metadata={
        "help": "Feature vectors per side for precision/recall (a deterministic subset if "
                "more; 0: none)."})
    extractor: str = _field(default="mnist_classifier", metadata={
        "help": "Feature extractor (beam_jobs.extractors)."})
    extractor_path: str | None = _field(default=None, metadata={
        "help": "Local path of the extractor."})
    reference_stats: str | None = _field(default=None, metadata={
        "help": ".npz reference statistics (mu, sigma; pr_features for precision/recall: "
                "beam_jobs.fid --save_pr_features)."})
    temperature: float = _field(default=1.0, metadata={"help": "Sampling temperature for FID."})
    mlflow_tracking_uri: str = _field(default="", metadata={"help": MLFLOW_HELP})

    def __post_init__(self):
        from absl import app  # the CLI's usage error: the short help, then this line

        if not self.model_dir:
            raise app.UsageError("--model_dir is required")


@dataclasses.dataclass(frozen=True)
class CriticEvalConfig:
    """``python -m pipeline.critic_eval``: an independent WGAN-GP critic of a model."""
    model_dir: str = _field(metadata={"help": MODEL_DIR_HELP})
    data_dir: str = _field(metadata={
        "help": "Preprocessed data set: the critic trains on its 'train' split and is "
                "evaluated on --split."})
    split: str = _field(default="validation", metadata={
        "help": "Held-out split of --data_dir the Wasserstein estimate is reported on "
                "(validation or test; not train)."})
    critic_steps: int = _field(default=2000, metadata={
        "help": "Critic updates (Adam), one minibatch each."})
    batch_size: int = _field(default=64, metadata={
        "help": "Real and generated images per critic update."})
    learning_rate: float = _field(default=1e-4, metadata={
        "help": "Adam learning rate of the critic (beta_1 = 0.5, beta_2 = 0.9, as in WGAN-GP)."})
    gp_weight: float = _field(default=10.0, metadata={
        "help": "Weight of the WGAN-GP gradient penalty (||grad D|| - 1)^2 at random "
                "interpolates of real and generated images."})
    critic_channels: int = _field(default=32, metadata={
        "help": "Base channels of the critic's convolutions."})
    temperature: float = _field(default=1.0, metadata={
        "help": "Sampling temperature of the model's samples (1 = the model's distribution)."})
    seed: int = _field(default=0, metadata={
        "help": "Seed of the critic's init, data order and the samples."})
    train_samples: int = _field(default=10000, metadata={
        "help": "Model samples in the critic's training pool."})
    eval_every: int = _field(default=100, metadata={
        "help": "Critic steps between points of the curves."})
    max_eval_examples: int | None = _field(default=None, metadata={
        "help": "Use at most this many held-out images (and as many fresh samples); default "
                "all of --split."})
    output_json: str | None = _field(default=None, metadata={
        "help": "Also write the JSON summary (with curves) here."})
    output_png: str | None = _field(default=None, metadata={
        "help": "Curves PNG (default <model_dir>/critic/critic_<split>.png)."})
    mlflow_tracking_uri: str = _field(default="", metadata={"help": MLFLOW_HELP})
    show_progress: bool = _field(default=True, metadata={"help": "Progress bars."})


@dataclasses.dataclass(frozen=True)
class FitPriorConfig:
    """``python -m pipeline.fit_prior``: a model's prior refitted to its aggregate posterior,
    written as a new model directory."""
    model_dir: str = _field(metadata={
        "help": "Trained model directory (pipeline.train).", "required": False})
    output_model_dir: str = _field(metadata={
        "help": "New model directory for the refitted model.", "required": False})
    data_dir: str | None = _field(default=None, metadata={
        "help": "Data set (default: the one recorded at training)."})
    components: int = _field(default=50, metadata={"help": "Mixture components K."})
    max_examples: int | None = _field(default=None, metadata={
        "help": "Fit on at most this many training images."})
    seed: int = _field(default=0, metadata={
        "help": "Seed of the dequantization/posterior noise and of EM."})

    def __post_init__(self):  # a user error: one line through artifacts.cli.user_errors
        if not self.model_dir or not self.output_model_dir:
            raise ValueError("--model_dir and --output_model_dir are required")


@dataclasses.dataclass(frozen=True)
class SurrogateConfig:
    """``python -m pipeline.surrogate_likelihood``: per-image surrogate log-likelihoods."""
    model_dir: str = _field(metadata={"help": MODEL_DIR_HELP})
    data_dir: str = _field(metadata={"help": "Preprocessed data set of the images to score."})
    split: str = _field(default="validation", metadata={"help": "Split of --data_dir to score."})
    num_generated: int = _field(default=2000, metadata={
        "help": "Generator draws M coupled with each batch."})
    entropic_lambda: float = _field(default=5.0, metadata={
        "help": "lambda of the entropic model (squared-distance loss on [0, 1] pixels; the "
                "model's per-pixel noise variance is lambda / 2)."})
    batch_size: int = _field(default=500, metadata={
        "help": "Real images coupled at once (larger: tighter)."})
    max_examples: int | None = _field(default=None, metadata={
        "help": "Score at most this many images."})
    temperature: float = _field(default=0.0, metadata={
        "help": "Temperature of the generator draws."})
    seed: int = _field(default=0, metadata={"help": "Seed of the generator draws."})
    sinkhorn_iters: int = _field(default=1000, metadata={
        "help": "Most Sinkhorn iterations per batch."})
    sinkhorn_tolerance: float = _field(default=1e-6, metadata={
        "help": "Stop when N * row sums are within this of 1."})
    output_npz: str | None = _field(default=None, metadata={
        "help": "Write per-image values (nats, bits/dim, labels)."})
    mlflow_tracking_uri: str = _field(default="", metadata={"help": MLFLOW_HELP})
    show_progress: bool = _field(default=True, metadata={"help": "Progress bar."})
