"""The settings of a training run that are not the model's architecture (:class:`TrainConfig`).

Each field carries its help text (and, for a choice, its ``choices``) in ``dataclasses.field``
metadata, the single source of ``python -m pipeline.train``'s flags
(:mod:`pipeline.config_flags`); values are checked in ``__post_init__``. Steps count
generator updates, one per global batch of ``batch_size`` images.
"""
from __future__ import annotations

import dataclasses
import math

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class TrainConfig:
    """Everything about a training run that is not the model's architecture."""
    data_dir: str = dataclasses.field(metadata={
        "help": "Output directory of `python -m beam_jobs.preprocess`."})
    model_dir: str = dataclasses.field(metadata={
        "help": "Checkpoints, config, samples; reused to resume."})
    train_steps: int = dataclasses.field(default=1000, metadata={
        "help": "Total optimizer steps (including resumed ones)."})
    batch_size: int = dataclasses.field(default=64, metadata={
        "help": "Global batch size, split across replicas."})
    checkpoint_every: int = dataclasses.field(default=200, metadata={
        "help": "Steps between checkpoints."})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "Seed of init, data order and all training noise."})
    learning_rate: float = dataclasses.field(default=1e-3, metadata={
        "help": "Adam learning rate of encoder/decoder/flow."})
    lr_schedule: str = dataclasses.field(default="constant", metadata={
        "help": "Generator-side learning rate over the run: constant (the paper's), or cosine "
                "decay to 0 at --lr_decay_steps (the discriminator's stays constant).",
        "choices": LR_SCHEDULES})
    lr_decay_steps: int = dataclasses.field(default=0, metadata={
        "help": "Horizon of --lr_schedule=cosine (0 = --train_steps). Set it when a run will be "
                "resumed with a larger --train_steps, so every part follows one curve."})
    flow_learning_rate: float = dataclasses.field(default=0.0, metadata={
        "help": "If > 0, the flow's networks get their own Adam with this learning rate "
                "(deviation from the paper; 0 = --learning_rate, one optimizer)."})
    disc_learning_rate: float = dataclasses.field(default=2e-4, metadata={
        "help": "Adam learning rate of the discriminator."})
    adam_beta1: float = dataclasses.field(default=0.9, metadata={
        "help": "Adam beta_1 of the generator side."})
    disc_adam_beta1: float = dataclasses.field(default=0.5, metadata={
        "help": "Adam beta_1 of the discriminator."})
    disc_adam_beta2: float = dataclasses.field(default=0.999, metadata={
        "help": "Adam beta_2 of the discriminator."})
    disc_steps: int = dataclasses.field(default=1, metadata={
        "help": "Discriminator updates per generator update."})
    kl_warmup_steps: int = dataclasses.field(default=0, metadata={
        "help": "If > 0, the KL term's weight rises linearly from 0 to 1 over this many steps "
                "(deviation from the paper's objective; 0 = exact L_MLE)."})
    flow_warmup_steps: int = dataclasses.field(default=0, metadata={
        "help": "If > 0, the flow's networks are not updated for the first this many steps (its "
                "ActNorm keeps the data-dependent init), so the VAE learns to use its latent in "
                "logit space first (deviation from the paper)."})
    random_flip: bool = dataclasses.field(default=False, metadata={
        "help": "Random horizontal flips at train time."})
    resize_with_crop_or_pad: int = dataclasses.field(default=0, metadata={
        "help": "If > 0, center-crop or zero-pad images to this square size."})
    log_every: int = dataclasses.field(default=50, metadata={
        "help": "Steps between MLflow metric logs."})
    sample_every: int = dataclasses.field(default=500, metadata={
        "help": "Steps between sample grids (PNG)."})
    num_grid_samples: int = dataclasses.field(default=64, metadata={
        "help": "Images in a sample grid."})
    sample_temperature: float = dataclasses.field(default=1.0, metadata={
        "help": "Temperature of grid samples."})
    data_init_batch: int = dataclasses.field(default=256, metadata={
        "help": "Images for ActNorm's data-dependent init."})
    validation_every: int = dataclasses.field(default=0, metadata={
        "help": "If > 0, log the validation bits/dim (ELBO bound, fixed noise) of the first "
                "--validation_examples images every this many steps."})
    validation_examples: int = dataclasses.field(default=500, metadata={
        "help": "Validation images for --validation_every."})
    validation_split: str = dataclasses.field(default="validation", metadata={
        "help": "Held-out split of --data_dir the --validation_every curve is computed on "
                "(e.g. 'test' for a data set with train/test splits)."})
    keep_checkpoints: int = dataclasses.field(default=3, metadata={
        "help": "Checkpoints kept on disk."})
    strategy: str = dataclasses.field(default="auto", metadata={
        "help": "tf.distribute strategy; auto = MirroredStrategy if GPUs are visible.",
        "choices": STRATEGIES})
    devices: tuple = dataclasses.field(default=(), metadata={
        "help": "Devices of --strategy=mirrored (default: all GPUs)."})
    cluster_start_timeout_s: int = dataclasses.field(default=900, metadata={
        "help": "--strategy=multi_worker: seconds a task waits for every task of TF_CONFIG's "
                "cluster to start before it fails (0 = wait forever)."})
    mlflow_tracking_uri: str = dataclasses.field(default="", metadata={
        "help": "MLflow tracking URI ('' = the one recorded in --model_dir by an earlier run, "
                "else MLflow's default)."})
    verify_data: bool = dataclasses.field(default=False, metadata={
        "help": "Before training, check every shard's sha256 and every record's CRC against "
                "--data_dir's dataset.json (reads the whole data set; without it only the "
                "shards' record counts, frames and image shape are checked)."})
    strict_tracking: bool = dataclasses.field(default=False, metadata={
        "help": "Stop with one error line, before any work, if the MLflow store cannot be "
                "used at the start (default: one warning, and training goes on without "
                "tracking, its metrics kept in --model_dir/mlflow_unsent.jsonl)."})
    experiment: str = dataclasses.field(default="adaptive-density", metadata={
        "help": "MLflow experiment name."})
    run_name: str = dataclasses.field(default="", metadata={"help": "MLflow run name."})
    show_progress: bool = dataclasses.field(default=True, metadata={
        "help": "Show a progress bar."})
    jit_compile: bool | None = dataclasses.field(default=None, metadata={
        "help": "XLA-compile the training step (default: as measured by device type: on for "
                "GPUs; on CPUs without AVX-512 for runs of >= 1000 steps, where XLA's "
                "convolutions beat oneDNN's, else off; pipeline.train_step."
                "DEFAULT_JIT_BY_DEVICE)."})
    compute_dtype: str = dataclasses.field(default="auto", metadata={
        "help": "Arithmetic of the training step's convolutions and dense layers: bfloat16 "
                "keeps variables, optimizer state, log-determinants and losses in float32; "
                "validation, sample grids, evaluation and export are float32 always. auto: "
                "bfloat16 on CPUs with AVX-512 BF16 or AMX, else float32 (pipeline.precision).",
        "choices": COMPUTE_DTYPES})
    deterministic: bool = dataclasses.field(default=False, metadata={
        "help": "TensorFlow op determinism (tf.config.experimental.enable_op_determinism, "
                "set before the run's first op): with the same --seed, data, flags, TF "
                "version, CPU/GPU model and thread counts, two runs give bit-identical "
                "weights. Not across machines: other CPUs (e.g. AVX-512 vs AVX2) or thread "
                "counts round differently. Costs step time (README, 'Reproducible "
                "numbers'; benchmarks/bench_deterministic.py)."})

    def __post_init__(self):
        for name in ("train_steps", "batch_size", "checkpoint_every", "log_every",
                     "sample_every", "disc_steps", "data_init_batch", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name}={getattr(self, name)}: expected a positive integer")
        for name in ("learning_rate", "flow_learning_rate", "disc_learning_rate", "adam_beta1",
                     "disc_adam_beta1", "disc_adam_beta2", "sample_temperature"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"--{name}={getattr(self, name)}: expected a finite number")
        for name in ("learning_rate", "disc_learning_rate"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"--{name}={getattr(self, name)}: expected >= 0")
        if self.flow_learning_rate < 0:
            raise ValueError(f"--flow_learning_rate={self.flow_learning_rate}: expected >= 0 "
                             "(0 = --learning_rate)")
        for name in ("kl_warmup_steps", "flow_warmup_steps", "lr_decay_steps",
                     "cluster_start_timeout_s"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"--{name}={getattr(self, name)}: expected >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr_schedule={self.lr_schedule!r}: expected one of {LR_SCHEDULES}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy={self.strategy!r}: expected one of {STRATEGIES}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"--compute_dtype={self.compute_dtype!r}: expected one of "
                             f"{COMPUTE_DTYPES}")
