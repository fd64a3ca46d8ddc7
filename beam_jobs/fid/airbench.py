"""The airbench-style CIFAR convnet of :mod:`beam_jobs.fid.train_classifier` (see its
module docstring): the patch-whitening kernel, the network, its augmentation and its
learning-rate schedule."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

if TYPE_CHECKING:  # imported where a model is built (slow imports)
    import keras

#: airbench base width: 32 (airbench94 uses 64, about 3x the CPU time per image here).
DEFAULT_WIDTH = 32
#: airbench94's optimisation settings (lr and weight decay per 1,024 examples, decoupled
#: from momentum as in its hyperparameters).
AIRBENCH = dict(lr=11.5, momentum=0.85, weight_decay=0.0153, bias_scaler=64.0,
                label_smoothing=0.2, ema_start=0.3, ema_every=5, ema_decay=0.95,
                ema_pow=3.0, lr_start=0.2, lr_peak_at=0.23, lr_end=0.07, translate=2,
                whiten_kernel=2, whiten_eps=5e-4, bn_momentum=0.4, logit_scale=1.0 / 9)
MIN_AIRBENCH_SIZE = 16  # three 2x2 poolings after a 2x2 valid convolution


def whitening_kernel(images: np.ndarray, kernel_size: int = 2, eps: float = 5e-4,
                     mean: Optional[np.ndarray] = None, std: Optional[np.ndarray] = None
                     ) -> np.ndarray:
    """[k, k, C, 2 k k C] conv kernel that whitens k x k patches of (normalized) ``images``
    (uint8 [N, H, W, C]): the eigenvectors of the patch covariance scaled by
    1/sqrt(eigenvalue + eps), with both signs (so a following GELU keeps all directions)."""
    n, h, w, c = images.shape
    k = kernel_size
    cov = np.zeros((k * k * c, k * k * c))
    count = 0
    for start in range(0, n, 500):  # chunks: all patches of 5,000 images take ~0.5 GB
        x = images[start:start + 500].astype(np.float64) / 255.0
        if mean is not None:
            x = (x - mean) / std
        patches = np.stack([x[:, i:h - k + 1 + i, j:w - k + 1 + j, :]
                            for i in range(k) for j in range(k)], axis=3)  # [n, h', w', kk, C]
        flat = patches.reshape(-1, k * k * c)  # (di, dj, channel) = Keras (kh, kw, cin)
        cov += flat.T @ flat
        count += len(flat)
    cov /= count
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    scaled = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)  # columns
    kernel = scaled.reshape(k, k, c, k * k * c)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)


def _dirac_init(conv) -> None:
    """Sets the first min(C_in, C_out) filters of a 3x3 Conv2D to identities."""
    kernel = np.array(conv.kernel.numpy())
    kh, kw, cin, cout = kernel.shape
    n = min(cin, cout)
    kernel[..., :n] = 0.0
    kernel[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
    conv.kernel.assign(kernel)


def build_airbench(input_shape: tuple[int, int, int], num_classes: int, width: int,
                   whitening_images: np.ndarray, seed: int = 0) -> "keras.Model":
    """The airbench-style features model on float [B, H, W, C] images in [0, 1]:
    outputs (pool [B, 4 width], logits [B, num_classes]) (see the module docstring)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    h, w, c = (int(v) for v in input_shape)
    x01 = whitening_images.astype(np.float64) / 255.0
    mean = x01.mean(axis=(0, 1, 2))
    std = np.maximum(x01.std(axis=(0, 1, 2)), 1e-3)
    k = AIRBENCH["whiten_kernel"]
    bn = dict(momentum=AIRBENCH["bn_momentum"], epsilon=1e-12, scale=False)
    convs = []

    def conv(x, filters):
        layer = layers.Conv2D(filters, 3, padding="same", use_bias=False)
        convs.append(layer)
        return layer(x)

    inputs = keras.Input((h, w, c), name="image")
    x = layers.Normalization(mean=mean.tolist(), variance=(std ** 2).tolist(),
                             name="standardize")(inputs)
    whiten = layers.Conv2D(2 * c * k * k, k, padding="valid", use_bias=True, name="whiten")
    x = layers.Activation("gelu")(whiten(x))
    for i, filters in enumerate((width, 4 * width, 4 * width)):
        x = conv(x, filters)
        x = layers.MaxPooling2D(name=f"group{i + 1}_pool")(x)
        x = layers.Activation("gelu")(layers.BatchNormalization(**bn)(x))
        x = conv(x, filters)
        x = layers.Activation("gelu")(layers.BatchNormalization(**bn)(x))
    pool = layers.GlobalMaxPooling2D(name="pool")(x)
    logits = layers.Rescaling(AIRBENCH["logit_scale"], name="logits")(
        layers.Dense(num_classes, use_bias=False, name="linear")(pool))
    model = keras.Model(inputs, [pool, logits], name="airbench_features")
    whiten.kernel.assign(whitening_kernel(whitening_images, k, AIRBENCH["whiten_eps"],
                                          mean, std))
    whiten.kernel.trainable = False
    for layer in convs:
        _dirac_init(layer)
    return model


def augment_fn(seed: int, pad: int) -> Callable:
    """(batch index, uint8 images [B, H, W, C], labels) -> (float images in [0, 1], labels):
    each image flipped left-right with probability 1/2 and translated by up to ``pad`` px
    (reflect padding), with stateless randomness keyed on (seed, batch index)."""
    import tensorflow as tf

    def augment(index, batch):
        images, labels = batch
        x = tf.cast(images, tf.float32) / 255.0
        b, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
        key = tf.stack([tf.constant(seed, tf.int64), index])
        flip = tf.random.stateless_uniform([b], key) < 0.5
        x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
        if pad:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
            shifts = tf.random.stateless_uniform([b, 2], key + [0, 1 << 40], 0, 2 * pad + 1,
                                                 tf.int32)
            rows = shifts[:, :1] + tf.range(h)[None, :]
            cols = shifts[:, 1:] + tf.range(w)[None, :]
            x = tf.gather(x, rows, axis=1, batch_dims=1)
            x = tf.gather(x, cols, axis=2, batch_dims=1)
        return x, labels

    return augment


def triangle(progress: float) -> float:
    """The learning-rate multiplier: lr_start -> 1 at lr_peak_at -> lr_end at 1."""
    a = AIRBENCH
    if progress < a["lr_peak_at"]:
        return a["lr_start"] + (1 - a["lr_start"]) * progress / a["lr_peak_at"]
    return 1 + (a["lr_end"] - 1) * (progress - a["lr_peak_at"]) / (1 - a["lr_peak_at"])
