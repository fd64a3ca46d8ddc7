"""An independent Wasserstein critic (Danihelka et al., 2017): WGAN-GP math, no I/O.

A critic D: R^shape -> R is trained, separately from any model's own discriminator, to
maximize E_real[D] - E_fake[D] under a Lipschitz-1 constraint imposed softly by the
gradient penalty of WGAN-GP (Gulrajani et al., 2017):

    L_D = E_fake[D(x_f)] - E_real[D(x_r)] + gp_weight * E[(||grad D(x_hat)||_2 - 1)^2],
    x_hat = m * x_r + (1 - m) * x_f,   m ~ U[0, 1) per example.

By Kantorovich-Rubinstein duality, W1(P_real, P_fake) = sup_{||D||_L <= 1} E_real[D] -
E_fake[D], so the trained critic's value :func:`wasserstein_estimate` on *held-out* real
examples against *fresh* fake ones estimates W1 (a lower bound up to the critic's
approximation and the penalty's softness; the training-set value can be optimistic when
the critic overfits: the reason to report both curves). Units: those of the inputs'
Euclidean norm (for images in [0, 1]: distance in [0, 1]^D pixel space).

The critic is any callable from a batch [N, ...] to scores [N] (e.g.
:class:`tfp_models.networks.Discriminator` without spectral normalization for images,
a small MLP for vectors); :class:`CriticTrainer` owns its Adam optimizer and compiled step.
The penalty is the one the hybrid model's discriminator uses
(:func:`tfp_models.objective.wgan_gp_penalty`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfp_models.objective import Critic, wgan_gp_penalty


def wasserstein_estimate(critic: Critic, real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    """E_real[D] - E_fake[D] (scalar) over the batches ``real`` [N, ...], ``fake`` [M, ...]."""
    return tf.reduce_mean(critic(real)) - tf.reduce_mean(critic(fake))


def critic_loss(critic: Critic, real: tf.Tensor, fake: tf.Tensor, mix: tf.Tensor,
                gp_weight: float) -> dict[str, tf.Tensor]:
    """The WGAN-GP critic loss on equal-sized batches: {'loss' (minimized), 'wasserstein'
    (E_real[D] - E_fake[D] on these batches), 'penalty' (mean, unweighted)}."""
    w = tf.reduce_mean(critic(real)) - tf.reduce_mean(critic(fake))
    penalty = tf.reduce_mean(wgan_gp_penalty(critic, real, fake, mix))
    return {"loss": -w + gp_weight * penalty, "wasserstein": w, "penalty": penalty}


class CriticTrainer:
    """Adam updates of a WGAN-GP critic (defaults of Gulrajani et al.: learning rate 1e-4,
    beta_1 = 0.5, beta_2 = 0.9, gp_weight = 10).

    ``step(real, fake, seed)`` takes equal-sized batches (float, same shape [N, ...]) and an
    int seed pair [2] for the interpolation weights; returns the scalars of
    :func:`critic_loss` before the update. ``variables`` are the critic's trainable weights
    (built by one call of the critic before the first step).
    """

    def __init__(self, critic: keras.layers.Layer, learning_rate: float = 1e-4,
                 gp_weight: float = 10.0, beta_1: float = 0.5, beta_2: float = 0.9,
                 jit_compile: bool = True):
        if not learning_rate > 0:
            raise ValueError(f"learning_rate={learning_rate}: expected > 0")
        if gp_weight < 0:
            raise ValueError(f"gp_weight={gp_weight}: expected >= 0")
        self.critic, self.gp_weight = critic, float(gp_weight)
        self.optimizer = keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2)
        self._step = tf.function(self._update, jit_compile=jit_compile)
        self._estimate = tf.function(lambda real, fake: wasserstein_estimate(critic, real, fake))
        self._scores = tf.function(lambda x: critic(x))

    def _update(self, real: tf.Tensor, fake: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        mix = tf.random.stateless_uniform(tf.shape(real)[:1], seed=seed)
        variables = self.critic.trainable_variables
        with tf.GradientTape() as tape:
            out = critic_loss(self.critic, real, fake, mix, self.gp_weight)
        self.optimizer.apply_gradients(zip(tape.gradient(out["loss"], variables), variables))
        return out

    def step(self, real: tf.Tensor, fake: tf.Tensor, seed) -> dict[str, float]:
        out = self._step(tf.convert_to_tensor(real), tf.convert_to_tensor(fake),
                         tf.convert_to_tensor(seed, tf.int64))
        return {k: float(v) for k, v in out.items()}

    def scores(self, x: tf.Tensor) -> tf.Tensor:
        """D(x) [N] without gradients (compiled)."""
        return self._scores(tf.convert_to_tensor(x))

    def estimate(self, real: tf.Tensor, fake: tf.Tensor) -> float:
        """:func:`wasserstein_estimate` on one pair of batches (compiled)."""
        return float(self._estimate(tf.convert_to_tensor(real), tf.convert_to_tensor(fake)))
