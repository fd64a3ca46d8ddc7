"""Is the decoder or the prior the limit of a trained model's samples? Decodes (T=0,
x = f^-1(mu(z))) latents from different sources and judges them with the quickstart's
MNIST classifier:

    python experiments/prior_diagnostic.py --model_dir work/sweep/cqf_k1l10_1600

Rows: the held-out digits themselves; their posterior means (reconstructions); z ~ the
model's own prior; and z from densities fitted after training to posterior draws of the
training digits (scikit-learn: one full-covariance Gaussian, mixtures of K Gaussians),
i.e. what a prior matched to the aggregate posterior would give. Columns: confident rate
(max class probability >= 0.9), label coverage (predicted-label entropy / ln 10) and FID
against the training split's reference statistics, in the classifier's 128-d features
(direct numpy, ``beam_jobs.fid.fid_math.frechet_distance``).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import tensorflow as tf
from sklearn.mixture import GaussianMixture

from artifacts.model_io import load_trained_model
from beam_jobs.fid.fid_math import frechet_distance
from pipeline.eval_harness import split_batches
from tfp_models import flows


def judge(classifier, reference, images: np.ndarray) -> tuple[float, float, float]:
    """(confident rate, label coverage, FID) of uint8 images [N, H, W, C]."""
    out = classifier(images=tf.constant(images))
    probs = tf.nn.softmax(out["logits"]).numpy()
    pool = out["pool"].numpy().astype(np.float64)
    hist = np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)
    coverage = -(hist[hist > 0] * np.log(hist[hist > 0])).sum() / np.log(probs.shape[1])
    fid = frechet_distance(pool.mean(0), np.cov(pool.T), reference["mu"], reference["sigma"])
    return float((probs.max(1) >= 0.9).mean()), float(coverage), float(fid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--work", default="work/quickstart",
                        help="Directory with data/mnist28, mnist_classifier, reference stats.")
    parser.add_argument("--num_samples", type=int, default=2000)
    parser.add_argument("--components", default="10,50")
    args = parser.parse_args()
    model, step = load_trained_model(args.model_dir)
    classifier = tf.saved_model.load(os.path.join(args.work, "mnist_classifier")).signatures[
        "features"]
    reference = np.load(os.path.join(args.work, "reference_train_stats.npz"))
    data_dir = os.path.join(args.work, "data", "mnist28")

    def decode(z: np.ndarray) -> np.ndarray:
        return flows.quantize_images(model.decode_to_images(tf.constant(z, tf.float32), 0.0)).numpy()

    def posterior(split: str, draw: bool) -> tuple[np.ndarray, np.ndarray]:
        ds, _ = split_batches(model, data_dir, split, 500)
        images, latents = [], []
        for i, batch in enumerate(ds):
            params = model.encoder(flows.dequantize_images(batch))
            if draw:
                eps = tf.random.stateless_normal((1, batch.shape[0], model.config.latent_dim),
                                                 seed=(0, i))
                latents.append(model.posterior.sample_and_log_prob(params, 1, eps)[0][0].numpy())
            else:
                latents.append(model.posterior.representative(params).numpy())
            images.append(batch.numpy())
        return np.concatenate(images), np.concatenate(latents)

    rows = []
    held_out, means = posterior("validation", draw=False)
    rows.append(("held-out digits", judge(classifier, reference, held_out)))
    rows.append(("their posterior means, decoded", judge(classifier, reference, decode(means))))
    noise = tf.random.stateless_normal((args.num_samples,) + model.prior_noise_shape(), seed=(0, 1))
    rows.append((f"z ~ the model's prior ({model.config.prior})",
                 judge(classifier, reference, decode(model.prior.from_noise(noise).numpy()))))
    _, train_z = posterior("train", draw=True)
    fits = [(1, "full")] + [(int(c), cov) for c in args.components.split(",")
                            for cov in ("full", "diag")]
    for k, cov in fits:
        fit = GaussianMixture(k, covariance_type=cov, random_state=0).fit(train_z)
        z = fit.sample(args.num_samples)[0]
        name = ("one full-covariance Gaussian" if k == 1
                else f"a {k}-component mixture of {cov}-covariance Gaussians")
        rows.append((f"z ~ {name} fitted to posterior draws (train); "
                     f"mean ln p(z) {fit.score(train_z):.1f} nats",
                     judge(classifier, reference, decode(z))))
    print(f"{args.model_dir} at step {step}; {args.num_samples} samples per prior row\n")
    print("| latents | confident | coverage | FID |\n|---|---|---|---|")
    for name, (conf, cov, fid) in rows:
        print(f"| {name} | {conf:.2f} | {cov:.2f} | {fid:.1f} |")


if __name__ == "__main__":
    main()
