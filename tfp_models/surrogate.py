"""The entropic-GAN surrogate log-likelihood (Balaji, Hassani, Chellappa and Feizi, 2019).

A generator G with latent x ~ f_X defines, for a loss l and a regularization lambda > 0,
the entropic GAN's data model

    f(y) = integral f_X(x) f(y | x) dx,   f(y | x) = exp(-l(y, G(x)) / lambda) / C_lambda.

With l the squared Euclidean distance, f(y | x) is a Gaussian of variance lambda / 2 per
dimension around G(x) and C_lambda = (pi lambda)^(D/2). For any distribution q over M
generator draws x_1..x_M ~ f_X, Jensen's inequality gives

    log (1/M) sum_j f(y | x_j)  >=  sum_j q_j (-l(y, G(x_j)) / lambda) + H(q)
                                    - log M - (D/2) log(pi lambda),

and the left side is a consistent Monte-Carlo estimate of log f(y), biased low, so the
right side is a lower bound in expectation. The surrogate takes q = row i of the entropic
optimal coupling P* between N real points and the M draws, the solution of

    min_P  sum_ij P_ij l(y_i, G(x_j)) - lambda H(P),   P 1 = 1/N,   P^T 1 = 1/M,

found by Sinkhorn iterations in log space (q_ij = N P*_ij). Averaged over the real points
this is the source's bound -(1/lambda) (E_{P*}[l] - lambda H(P*)) + const, with
const = -log N - log M - (D/2) log(pi lambda).

Everything is float64 and in nats; the points are flattened vectors [N, D]. No I/O.
"""
from __future__ import annotations

import math

import tensorflow as tf


def squared_distances(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """||a_i - b_j||^2 [N, M] for a [N, D], b [M, D] (float64, clipped at 0)."""
    a = tf.cast(a, tf.float64)
    b = tf.cast(b, tf.float64)
    sq = (tf.reduce_sum(a * a, 1)[:, None] + tf.reduce_sum(b * b, 1)[None, :]
          - 2.0 * tf.matmul(a, b, transpose_b=True))
    return tf.maximum(sq, 0.0)


@tf.function
def _sinkhorn_steps(log_k: tf.Tensor, log_v: tf.Tensor, steps: tf.Tensor
                    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``steps`` Sinkhorn updates from log v; returns (log u, log v, row-marginal error)."""
    n = tf.cast(tf.shape(log_k)[0], tf.float64)
    m = tf.cast(tf.shape(log_k)[1], tf.float64)
    log_u = tf.zeros(tf.shape(log_k)[:1], tf.float64)
    for _ in tf.range(steps):
        log_u = -tf.math.log(n) - tf.reduce_logsumexp(log_k + log_v[None, :], axis=1)
        log_v = -tf.math.log(m) - tf.reduce_logsumexp(log_k + log_u[:, None], axis=0)
    rows = tf.exp(tf.reduce_logsumexp(log_u[:, None] + log_k + log_v[None, :], axis=1))
    return log_u, log_v, tf.reduce_max(tf.abs(n * rows - 1.0))


def sinkhorn_log_coupling(cost: tf.Tensor, lam: float, max_iters: int = 500,
                          tolerance: float = 1e-9, check_every: int = 10
                          ) -> tuple[tf.Tensor, int, float]:
    """log P* [N, M] of the entropic optimal coupling with uniform marginals 1/N, 1/M.

    Log-domain Sinkhorn: log P = log u_i - C_ij / lambda + log v_j, alternating
    log u = log a - LSE_j(-C/lambda + log v) and log v = log b - LSE_i(-C/lambda + log u)
    (columns are exact after each v-step), until the row marginals agree with 1/N to
    ``tolerance`` (max absolute error of N * row sums - 1, checked every ``check_every``
    iterations) or ``max_iters``. Returns (log P*, iterations run, that error).
    """
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    log_k = -tf.cast(cost, tf.float64) / lam
    log_v = tf.zeros(tf.shape(log_k)[1:], tf.float64)
    done, err = 0, float("inf")
    while done < max_iters and not err < tolerance:
        steps = min(check_every, max_iters - done)
        log_u, log_v, err_t = _sinkhorn_steps(log_k, log_v, tf.constant(steps))
        done += steps
        err = float(err_t)
    return log_u[:, None] + log_k + log_v[None, :], done, err


def surrogate_log_likelihood(real: tf.Tensor, generated: tf.Tensor, lam: float,
                             max_iters: int = 500, tolerance: float = 1e-9
                             ) -> dict[str, tf.Tensor | int | float]:
    """The surrogate log f(y_i) [N] in nats of real points [N, D] under the entropic model
    of the generator draws ``generated`` [M, D] (module docstring).

    Returns {"log_likelihood": [N], "transport": [N] (sum_j q_ij l_ij), "entropy": [N]
    (H(q_i)), "iterations", "marginal_error"}.
    """
    real = tf.reshape(tf.cast(real, tf.float64), [tf.shape(real)[0], -1])
    generated = tf.reshape(tf.cast(generated, tf.float64), [tf.shape(generated)[0], -1])
    n, d = real.shape
    m = generated.shape[0]
    if generated.shape[1] != d:
        raise ValueError(f"real points have {d} dimensions, generated ones {generated.shape[1]}")
    cost = squared_distances(real, generated)
    log_p, iters, err = sinkhorn_log_coupling(cost, lam, max_iters, tolerance)
    log_q = log_p + math.log(n)  # conditional over the draws, one row per real point
    # Renormalize each row (exact once Sinkhorn has converged; removes its residual).
    log_q = log_q - tf.reduce_logsumexp(log_q, axis=1, keepdims=True)
    q = tf.exp(log_q)
    transport = tf.reduce_sum(q * cost, axis=1)
    entropy = -tf.reduce_sum(tf.where(q > 0, q * log_q, tf.zeros_like(q)), axis=1)
    const = -math.log(m) - 0.5 * d * math.log(math.pi * lam)
    return {"log_likelihood": -transport / lam + entropy + const, "transport": transport,
            "entropy": entropy, "iterations": iters, "marginal_error": err}


def smoothed_mixture_log_likelihood(real: tf.Tensor, generated: tf.Tensor,
                                    lam: float) -> tf.Tensor:
    """log (1/M) sum_j f(y_i | x_j) [N] nats: the Monte-Carlo estimate the surrogate bounds
    (q = the exact posterior over the draws instead of the coupling's row)."""
    real = tf.reshape(tf.cast(real, tf.float64), [tf.shape(real)[0], -1])
    generated = tf.reshape(tf.cast(generated, tf.float64), [tf.shape(generated)[0], -1])
    d = real.shape[1]
    m = generated.shape[0]
    cost = squared_distances(real, generated)
    return (tf.reduce_logsumexp(-cost / lam, axis=1) - math.log(m)
            - 0.5 * d * math.log(math.pi * lam))
