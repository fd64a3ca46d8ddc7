"""Train a hybrid generative model: ``python -m pipeline.train --flagfile=configs/X.cfg``.

Every flag can be given on the command line too (later flags override the flagfile).
A second run with the same ``--model_dir`` resumes from its latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys

from absl import app, flags

from tfp_models.hybrid import VARIANTS, HybridConfig
from tfp_models.posteriors import POSTERIORS
from tfp_models.priors import PRIORS

FLAGS = flags.FLAGS

# What and where.
flags.DEFINE_enum("variant", "cqf", sorted(VARIANTS), "Model variant (the paper's ablation).")
flags.DEFINE_string("data_dir", None, "Output directory of `python -m beam_jobs.preprocess`.")
flags.DEFINE_string("model_dir", None, "Checkpoints, config, samples; reused to resume.")
# Schedule.
flags.DEFINE_integer("train_steps", 1000, "Total optimizer steps (including resumed ones).")
flags.DEFINE_integer("batch_size", 64, "Global batch size, split across replicas.")
flags.DEFINE_integer("checkpoint_every", 200, "Steps between checkpoints.")
flags.DEFINE_integer("seed", 0, "Seed of init, data order and all training noise.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of encoder/decoder/flow.")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"],
                  "Generator-side learning rate over the run: constant (the paper's), or "
                  "cosine decay to 0 at --lr_decay_steps (the discriminator's stays constant).")
flags.DEFINE_integer("lr_decay_steps", 0,
                     "Horizon of --lr_schedule=cosine (0 = --train_steps). Set it when a run "
                     "will be resumed with a larger --train_steps, so every part follows one "
                     "curve.")
flags.DEFINE_float("flow_learning_rate", 0.0,
                   "If > 0, the flow's networks get their own Adam with this learning rate "
                   "(deviation from the paper; 0 = --learning_rate, one optimizer).")
flags.DEFINE_float("disc_learning_rate", 2e-4, "Adam learning rate of the discriminator.")
flags.DEFINE_float("adam_beta1", 0.9, "Adam beta_1 of the generator side.")
flags.DEFINE_float("disc_adam_beta1", 0.5, "Adam beta_1 of the discriminator.")
flags.DEFINE_integer("flow_warmup_steps", 0,
                     "If > 0, the flow's networks are not updated for the first this many "
                     "steps (its ActNorm keeps the data-dependent init), so the VAE learns "
                     "to use its latent in logit space first (deviation from the paper).")
flags.DEFINE_float("disc_adam_beta2", 0.999, "Adam beta_2 of the discriminator.")
flags.DEFINE_integer("disc_steps", 1, "Discriminator updates per generator update.")
flags.DEFINE_integer("kl_warmup_steps", 0,
                     "If > 0, the KL term's weight rises linearly from 0 to 1 over this many "
                     "steps (deviation from the paper's objective; 0 = exact L_MLE).")
flags.DEFINE_boolean("random_flip", False, "Random horizontal flips at train time.")
flags.DEFINE_integer("resize_with_crop_or_pad", 0,
                     "If > 0, center-crop or zero-pad images to this square size.")
flags.DEFINE_integer("log_every", 50, "Steps between MLflow metric logs.")
flags.DEFINE_integer("sample_every", 500, "Steps between sample grids (PNG).")
flags.DEFINE_integer("num_grid_samples", 64, "Images in a sample grid.")
flags.DEFINE_float("sample_temperature", 1.0, "Temperature of grid samples.")
flags.DEFINE_integer("data_init_batch", 256, "Images for ActNorm's data-dependent init.")
flags.DEFINE_integer("validation_every", 0,
                     "If > 0, log the validation bits/dim (ELBO bound, fixed noise) of the "
                     "first --validation_examples images every this many steps.")
flags.DEFINE_integer("validation_examples", 500, "Validation images for --validation_every.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept on disk.")
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker"],
                  "tf.distribute strategy; auto = MirroredStrategy if GPUs are visible.")
flags.DEFINE_list("devices", [], "Devices of --strategy=mirrored (default: all GPUs).")
flags.DEFINE_string("mlflow_tracking_uri", "", "MLflow tracking URI ('' = the one recorded "
                    "in --model_dir by an earlier run, else MLflow's default).")
flags.DEFINE_string("experiment", "adaptive-density", "MLflow experiment name.")
flags.DEFINE_string("run_name", "", "MLflow run name.")
flags.DEFINE_boolean("show_progress", True, "Show a progress bar.")
flags.DEFINE_boolean("jit_compile", True, "XLA-compile the training step.")
# Model.
flags.DEFINE_integer("latent_dim", 32, "Dimension of z.")
flags.DEFINE_enum("posterior", "diag", list(POSTERIORS), "Family of q(z|x).")
flags.DEFINE_integer("posterior_steps", 2, "IAF / planar steps.")
flags.DEFINE_integer("posterior_hidden", 128, "Hidden units of the IAF's MADE.")
flags.DEFINE_enum("prior", "standard", list(PRIORS),
                 "p(z): 'standard' N(0, I) (the paper's) or 'mixture', a learned mixture of "
                 "diagonal Gaussians (deviation; the KL becomes a one-sample estimate).")
flags.DEFINE_integer("prior_components", 10, "Components K of the 'mixture' prior.")
flags.DEFINE_integer("enc_dec_channels", 32, "Base channels of encoder and decoder.")
flags.DEFINE_integer("enc_dec_downsamples", 2, "Stride-2 stages of encoder/decoder.")
flags.DEFINE_integer("flow_scales", 2, "Scales of the Real NVP.")
flags.DEFINE_integer("flow_hidden", 32, "Channels of the coupling ResNets.")
flags.DEFINE_integer("flow_res_blocks", 1, "Residual blocks per coupling net.")
flags.DEFINE_integer("flow_kernel_size", 3,
                     "Convolution size of the coupling nets; 1 = a local flow that couples "
                     "pixels only within 2^(scales-1)-sized blocks (image-level structure "
                     "must then come from the latent).")
flags.DEFINE_boolean("use_actnorm", True, "ActNorm before every coupling.")
flags.DEFINE_float("logit_alpha", 0.05, "a of the logit preprocessing logit(a + (1 - 2a) x).")
flags.DEFINE_float("decoder_min_log_sigma", -6.0, "Lower bound of the decoder's log sigma.")
flags.DEFINE_integer("disc_channels", 32, "Base channels of the discriminator.")
flags.DEFINE_boolean("spectral_norm", False, "Spectral normalization in the discriminator.")
flags.DEFINE_float("lambda_adv", 1.0, "Weight of L_adv against L_MLE (nats per image).")
flags.DEFINE_enum("gradient_penalty", "none", ["none", "r1", "wgan-gp"],
                  "Gradient penalty of the discriminator.")
flags.DEFINE_float("gp_weight", 10.0, "Weight of the gradient penalty.")
flags.DEFINE_enum("disc_inputs", "quantized", ["quantized", "dequantized"],
                  "How images meet the discriminator: 'quantized' = real images at bin "
                  "centres, samples quantized to bin centres with a straight-through "
                  "gradient; 'dequantized' = real (x+u)/256 vs samples clipped to [0, 1].")
flags.DEFINE_float("free_bits", 0.0,
                   "Free bits per latent dimension in nats: the training loss uses "
                   "max(free_bits, KL_j) per example and dimension (deviation from the "
                   "paper; 0 = exact L_MLE). Reported bounds use the true KL.")
flags.DEFINE_boolean("decoder_data_init", True,
                     "Variants without a learned flow (vae, cq, gan): initialize the "
                     "decoder's per-dimension mean and log sigma from the logit features "
                     "of the first batch (else sigma starts at 1).")

flags.mark_flags_as_required(["data_dir", "model_dir"])


def _fields_from_flags(cls) -> dict:
    """The values of the flags named like the dataclass ``cls``'s fields."""
    return {f.name: FLAGS[f.name].value for f in dataclasses.fields(cls) if f.name in FLAGS}


def configs_from_flags():
    """(HybridConfig fields except image_shape, TrainConfig) from the parsed flags; the
    image shape comes from the data set. Flags are named after the dataclass fields."""
    from pipeline.trainer import TrainConfig

    model_values = _fields_from_flags(HybridConfig)
    train_values = _fields_from_flags(TrainConfig)
    train_values["devices"] = tuple(train_values["devices"])
    return model_values, TrainConfig(**train_values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from pipeline import data as data_lib
    from pipeline.trainer import TrainingInterrupted, data_image_shape, train

    values, train_cfg = configs_from_flags()
    info = data_lib.read_dataset_info(train_cfg.data_dir)
    model_cfg = HybridConfig(image_shape=data_image_shape(info, train_cfg), **values)
    params = {"flagfile": ",".join(a.split("=", 1)[1] for a in sys.argv if a.startswith("--flagfile="))}
    try:
        summary = train(model_cfg, train_cfg, params_to_log=params)
    except TrainingInterrupted as stop:  # checkpointed; the MLflow run is marked KILLED
        print(f"pipeline.train: {stop}; resume with the same --model_dir", file=sys.stderr)
        sys.exit(128 + stop.signum)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    from pipeline.cli import user_errors
    from pipeline.model_lock import ModelDirInUse
    from pipeline.trainer import TrainingDiverged

    app.run(user_errors("python -m pipeline.train", (ModelDirInUse, TrainingDiverged))(main))
