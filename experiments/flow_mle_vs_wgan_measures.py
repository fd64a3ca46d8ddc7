"""The measurements of one trained model of experiments/flow_mle_vs_wgan.py: exact bits/dim
of the validation split and of as many training digits, the statistics of the latent codes
f(x~) against a standard normal, and a temperature-1 sample grid.
"""
from __future__ import annotations

import os

import numpy as np


def moments(values: np.ndarray, axis=None) -> dict[str, np.ndarray]:
    """Mean, variance and excess kurtosis E[(v - m)^4] / var^2 - 3 (float64)."""
    v = np.asarray(values, np.float64)
    m = v.mean(axis=axis, keepdims=True)
    var = ((v - m) ** 2).mean(axis=axis)
    kurt = ((v - m) ** 4).mean(axis=axis) / var ** 2 - 3.0
    return {"mean": np.squeeze(m, axis=axis) if axis is not None else float(m.squeeze()),
            "variance": var, "excess_kurtosis": kurt}


def code_statistics(codes: np.ndarray) -> dict[str, float]:
    """Pooled moments of codes [N, D], and medians over dimensions of per-dim moments."""
    pooled = moments(codes.ravel())
    per_dim = moments(codes, axis=0)
    return {"mean": float(pooled["mean"]), "variance": float(pooled["variance"]),
            "excess_kurtosis": float(pooled["excess_kurtosis"]),
            "median_dim_variance": float(np.median(per_dim["variance"])),
            "median_dim_excess_kurtosis": float(np.median(per_dim["excess_kurtosis"])),
            "max_abs": float(np.abs(codes).max())}


def evaluate_model(variant: str, args, data_dir: str, stem: str) -> dict:
    """Exact bits/dim of the validation split and of as many training digits, the codes'
    statistics (codes kept for the histogram) and a temperature-1 sample grid."""
    import tensorflow as tf

    from artifacts import images as images_lib
    from artifacts import model_io
    from pipeline import data as data_lib
    from pipeline.critic_eval import split_images
    from tfp_models import flows, metrics

    model, step = model_io.load_trained_model(os.path.join(args.work_dir, variant))
    info = data_lib.read_dataset_info(data_dir)
    held = split_images(info, "validation")
    train_imgs = split_images(info, "train", len(held), seed=args.seed + 7)
    out: dict = {"step": step}
    codes = []
    for name, images in (("validation", held), ("train", train_imgs)):
        bpd = []
        for i in range(0, len(images), 250):
            batch = tf.constant(images[i:i + 250])
            noise = tf.random.stateless_uniform(tf.shape(batch), seed=(args.seed, 100 + i))
            x = flows.dequantize_images(batch, noise)
            bpd.append(metrics.bits_per_dim(model.log_prob_bound(x), info.image_shape).numpy())
            if name == "validation":
                y, _ = model.flow.forward_and_log_det(x)
                codes.append(tf.reshape(y, (len(batch), -1)).numpy())
        out[f"{name}_bpd"] = float(np.mean(np.concatenate(bpd)))
    codes = np.concatenate(codes)
    out["codes"] = code_statistics(codes)
    out["_codes"] = codes
    grid = f"{stem}_samples_{variant}.png"
    images_lib.save_grid(model.sample(64, 1.0, seed=args.seed).numpy(), grid)
    out["grid"] = os.path.basename(grid)
    return out
