"""The independent Wasserstein critic's math (tfp_models.critic, its penalty from
tfp_models.objective) against closed forms: the gradient penalty of a linear critic, and
W1 between two Gaussians that differ only by a shift (W1 = the shift's norm)."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_models import critic as critic_lib
from tfp_models import objective


class Linear(keras.layers.Layer):
    """D(x) = <w, vec(x)> + b with fixed w."""

    def __init__(self, w):
        super().__init__()
        self.w = tf.constant(w, tf.float32)

    def call(self, x):
        return tf.reduce_sum(tf.reshape(x, (tf.shape(x)[0], -1)) * self.w, axis=-1) + 0.25


def test_penalty_and_estimate_of_a_linear_critic_are_their_closed_forms():
    rng = np.random.default_rng(0)
    w = rng.normal(size=12).astype(np.float32)
    d = Linear(w)
    real = tf.constant(rng.normal(size=(5, 2, 3, 2)), tf.float32)  # image-shaped inputs
    fake = tf.constant(rng.normal(size=(5, 2, 3, 2)) + 1.0, tf.float32)
    mix = tf.constant(rng.uniform(size=5), tf.float32)
    x_hat = objective.interpolates(real, fake, mix)
    np.testing.assert_allclose(x_hat.numpy()[2], mix[2] * real[2] + (1 - mix[2]) * fake[2],
                               rtol=1e-6)
    norm = np.linalg.norm(w)
    np.testing.assert_allclose(objective.gradient_norms(d, real).numpy(), [norm] * 5, rtol=1e-5)
    np.testing.assert_allclose(objective.wgan_gp_penalty(d, real, fake, mix).numpy(),
                               [(norm - 1) ** 2] * 5, rtol=1e-5)
    want_w = float(np.mean(real.numpy().reshape(5, -1) @ w - fake.numpy().reshape(5, -1) @ w))
    assert critic_lib.wasserstein_estimate(d, real, fake).numpy() == pytest.approx(want_w, 1e-5)
    out = critic_lib.critic_loss(d, real, fake, mix, 10.0)
    assert out["loss"].numpy() == pytest.approx(-want_w + 10.0 * (norm - 1) ** 2, rel=1e-5)


def test_penalty_of_a_nonlinear_critic_matches_finite_differences():
    keras.utils.set_random_seed(1)
    mlp = keras.Sequential([keras.layers.Dense(8, activation="tanh", dtype="float64"),
                            keras.layers.Dense(1, dtype="float64"),
                            keras.layers.Reshape((), dtype="float64")])
    x = tf.constant(np.random.default_rng(1).normal(size=(3, 4)), tf.float64)
    mlp(x)
    h = 1e-6
    grads = np.stack([(mlp(x + h * e).numpy() - mlp(x - h * e).numpy()) / (2 * h)
                      for e in np.eye(4)], axis=1)
    np.testing.assert_allclose(objective.gradient_norms(mlp, x).numpy(),
                               np.linalg.norm(grads, axis=1), rtol=1e-5)


def _trained_gaussian_critic(shift: np.ndarray, gp_weight: float, steps: int = 800):
    keras.utils.set_random_seed(0)
    d = len(shift)
    mlp = keras.Sequential([keras.layers.Dense(64, activation="leaky_relu"),
                            keras.layers.Dense(64, activation="leaky_relu"),
                            keras.layers.Dense(1), keras.layers.Reshape(())])
    mlp(tf.zeros((1, d)))
    trainer = critic_lib.CriticTrainer(mlp, learning_rate=1e-3, gp_weight=gp_weight)
    for s in range(steps):
        real = tf.random.stateless_normal((256, d), seed=(1, s))
        fake = tf.random.stateless_normal((256, d), seed=(2, s)) + shift
        trainer.step(real, fake, [3, s])
    # held-out draws, never seen in training
    real = tf.random.stateless_normal((5000, d), seed=(7, 0))
    fake = tf.random.stateless_normal((5000, d), seed=(8, 0)) + shift
    return trainer.estimate(real, fake)


@pytest.mark.parametrize("norm", [0.5, 1.0])
def test_critic_recovers_w1_of_a_shifted_gaussian(norm):
    """N(0, I_8) vs N(delta, I_8): W1 = ||delta|| exactly (a translation). WGAN-GP's two-sided
    penalty biases the estimate up by about ||delta|| / (2 gp_weight) relatively (the linear
    critic's optimum slope is 1 + ||delta|| / (2 gp_weight)): 2.5 % / 5 % here."""
    u = np.random.default_rng(0).normal(size=8)
    shift = (norm * u / np.linalg.norm(u)).astype(np.float32)
    estimate = _trained_gaussian_critic(shift, gp_weight=10.0)
    assert estimate == pytest.approx(norm, rel=0.07)


def test_a_critic_without_its_lipschitz_penalty_does_not_estimate_w1():
    """The check above can fail: without the penalty the critic's value is unbounded."""
    u = np.random.default_rng(0).normal(size=8)
    shift = (u / np.linalg.norm(u)).astype(np.float32)
    assert _trained_gaussian_critic(shift, gp_weight=0.0, steps=300) > 2.0


def test_trainer_rejects_bad_settings():
    mlp = keras.Sequential([keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="learning_rate"):
        critic_lib.CriticTrainer(mlp, learning_rate=0.0)
    with pytest.raises(ValueError, match="gp_weight"):
        critic_lib.CriticTrainer(mlp, gp_weight=-1.0)
