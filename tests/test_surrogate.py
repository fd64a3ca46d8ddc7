"""tfp_models.surrogate: the entropic coupling against brute force, and the surrogate
log-likelihood a lower bound where the exact value is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linprog

from tfp_models import surrogate


def _entropic_objective(p: np.ndarray, cost: np.ndarray, lam: float) -> float:
    return float((p * cost).sum() + lam * (p * np.log(p)).sum())


def _exact_transport(cost: np.ndarray) -> float:
    """min <P, C> over couplings with uniform marginals, as a linear program."""
    n, m = cost.shape
    rows = np.kron(np.eye(n), np.ones((1, m)))
    cols = np.kron(np.ones((1, n)), np.eye(m))
    res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]),
                  b_eq=np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)]), bounds=(0, None))
    assert res.success
    return float(res.fun)


def test_sinkhorn_coupling_is_the_entropic_optimum():
    rng = np.random.default_rng(0)
    cost = surrogate.squared_distances(rng.normal(size=(6, 3)), rng.normal(size=(9, 3))).numpy()
    lam = 0.3
    log_p, _, err = surrogate.sinkhorn_log_coupling(cost, lam, max_iters=5000, tolerance=1e-12)
    p = np.exp(log_p.numpy())
    assert err < 1e-10
    np.testing.assert_allclose(p.sum(1), 1 / 6, atol=1e-12)
    np.testing.assert_allclose(p.sum(0), 1 / 9, atol=1e-12)
    best = _entropic_objective(p, cost, lam)
    # Every feasible move (mass eps around a 2x2 cycle) raises the objective: optimality.
    for _ in range(200):
        i, k = rng.choice(6, 2, replace=False)
        j, l = rng.choice(9, 2, replace=False)
        eps = 0.2 * min(p[i, l], p[k, j]) * rng.choice([-1, 1])
        eps = eps if eps > 0 else -0.2 * min(p[i, j], p[k, l])
        q = p.copy()
        q[i, j] += eps; q[k, l] += eps; q[i, l] -= eps; q[k, j] -= eps
        assert _entropic_objective(q, cost, lam) > best - 1e-12
    assert _entropic_objective(np.full((6, 9), 1 / 54), cost, lam) > best


def test_small_lambda_approaches_the_linear_program():
    rng = np.random.default_rng(1)
    cost = surrogate.squared_distances(rng.normal(size=(5, 2)), rng.normal(size=(5, 2))).numpy()
    exact = _exact_transport(cost)
    gaps = []
    for lam in (0.3, 0.03, 0.003):
        log_p, _, _ = surrogate.sinkhorn_log_coupling(cost, lam, max_iters=20000, tolerance=1e-10)
        transport = float((np.exp(log_p.numpy()) * cost).sum())
        assert transport >= exact - 1e-9
        gaps.append(transport - exact)
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3 * exact


def test_surrogate_formula_and_bound_on_the_monte_carlo_estimate():
    """Per point: the formula by hand from the coupling, and <= the smoothed-mixture
    estimate log (1/M) sum_j f(y | x_j) (the best q), which it bounds for any q."""
    rng = np.random.default_rng(2)
    real, fake, lam = rng.normal(size=(7, 4)), rng.normal(size=(11, 4)), 0.8
    out = surrogate.surrogate_log_likelihood(real, fake, lam, max_iters=5000, tolerance=1e-12)
    cost = ((real[:, None, :] - fake[None, :, :]) ** 2).sum(-1)
    log_p, _, _ = surrogate.sinkhorn_log_coupling(cost, lam, max_iters=5000, tolerance=1e-12)
    q = 7 * np.exp(log_p.numpy())
    by_hand = ((q * -cost / lam).sum(1) - (q * np.log(q)).sum(1) - math.log(11)
               - 2 * math.log(math.pi * lam))
    np.testing.assert_allclose(out["log_likelihood"].numpy(), by_hand, rtol=1e-9)
    mixture = surrogate.smoothed_mixture_log_likelihood(real, fake, lam).numpy()
    brute = np.log(np.mean(np.exp(-cost / lam), 1)) - 2 * math.log(math.pi * lam)
    np.testing.assert_allclose(mixture, brute, rtol=1e-10)
    assert np.all(out["log_likelihood"].numpy() <= mixture + 1e-10)


def test_linear_gaussian_generator_is_bounded_below_its_exact_likelihood():
    """Data y = A x + noise of variance lambda/2 is exactly the entropic model of G(x) = A x:
    its exact log f(y) is a Gaussian density; the surrogate stays below it on average."""
    rng = np.random.default_rng(3)
    d, r, lam = 6, 2, 1.0
    a = 2.0 * rng.normal(size=(d, r))
    cov = a @ a.T + lam / 2 * np.eye(d)
    y = rng.normal(size=(500, r)) @ a.T + math.sqrt(lam / 2) * rng.normal(size=(500, d))
    g = rng.normal(size=(1000, r)) @ a.T
    exact = -0.5 * (d * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1]
                    + np.einsum("ij,jk,ik->i", y, np.linalg.inv(cov), y))
    out = surrogate.surrogate_log_likelihood(y, g, lam, max_iters=3000, tolerance=1e-6)
    mixture = surrogate.smoothed_mixture_log_likelihood(y, g, lam).numpy()
    assert out["log_likelihood"].numpy().mean() < mixture.mean() < exact.mean() + 0.05
    assert exact.mean() - out["log_likelihood"].numpy().mean() < 0.2 * abs(exact.mean())


def test_bad_arguments():
    with pytest.raises(ValueError, match="lambda"):
        surrogate.sinkhorn_log_coupling(np.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match="dimensions"):
        surrogate.surrogate_log_likelihood(np.ones((2, 3)), np.ones((2, 4)), 1.0)
