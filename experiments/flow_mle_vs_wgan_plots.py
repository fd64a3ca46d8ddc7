"""The figures of experiments/flow_mle_vs_wgan.py: train and validation bits/dim over
training (from MLflow) and histograms of the latent codes.
"""
from __future__ import annotations

import math

import numpy as np


def metric_history(model_dir: str, key: str, uri: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    from artifacts import tracking

    run_id = tracking.run_id_of(model_dir)
    hist = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key) if run_id else []
    return sorted((m.step, m.value) for m in hist)


def plot_bpd(histories: dict[str, dict[str, list]], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (variant, curves), color in zip(histories.items(), ("tab:blue", "tab:red")):
        for key, style in (("train", ":"), ("validation", "-")):
            if curves[key]:
                ax.plot(*zip(*curves[key]), style, color=color, lw=1.4,
                        label=f"{variant} {key}")
    ax.axhline(8.0, color="0.4", lw=0.8, ls="--", label="uniform model (8 bits/dim)")
    ax.set_yscale("log")
    ax.set_xlabel("generator step")
    ax.set_ylabel("bits/dim (exact; log scale)")
    ax.set_title("Real NVP on MNIST: MLE vs WGAN-GP training", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_codes(codes: dict[str, np.ndarray], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lim = 8.0
    bins = np.linspace(-lim, lim, 161)
    for (variant, c), color in zip(codes.items(), ("tab:blue", "tab:red")):
        v = np.clip(c.ravel(), -lim, lim)  # out-of-range codes land in the end bins
        ax.hist(v, bins=bins, density=True, histtype="step", lw=1.4, color=color,
                label=f"{variant} codes f(x) (clipped to ±{lim:g})")
    grid = np.linspace(-lim, lim, 400)
    ax.plot(grid, np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi), "k--", lw=1,
            label="N(0, 1) density")
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 2)
    ax.set_xlabel("code value (all 784 dimensions of the validation digits pooled)")
    ax.set_ylabel("density (log scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
