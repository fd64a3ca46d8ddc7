"""A checkerboard coupling with a 1x1 net is a constant affine map: its one-pixel evaluation
(flows.steps.CONSTANT_1X1_CHECKERBOARD) gives the whole-image evaluation's values, log-dets
and gradients, and its log-det is the brute-force Jacobian's."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_flows import check_step, perturb

from tfp_models import flows
from tfp_models.flows import steps as steps_lib
from tfp_models.networks import ResNetCouplingNet


def _coupling(parity: int) -> flows.AffineCoupling:
    net = ResNetCouplingNet(3, 8, 1, kernel_size=1)
    step = flows.AffineCoupling(net, "checkerboard", parity, name="c")
    step.forward(tf.zeros((1, 4, 6, 3)))  # build
    perturb(net.trainable_variables, 0.3)
    return step


def _evaluate(step, x, one_pixel: bool, monkeypatch):
    monkeypatch.setattr(steps_lib, "CONSTANT_1X1_CHECKERBOARD", one_pixel)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y, ldj = step.forward_and_log_det(x)
        loss = tf.reduce_sum(tf.sin(y)) + tf.reduce_sum(ldj)
    grads = tape.gradient(loss, [x] + step.net.trainable_variables)
    x_back = step.inverse(y)
    return [y, ldj, x_back] + grads


@pytest.mark.parametrize("parity", [0, 1])
def test_one_pixel_evaluation_equals_the_whole_image_one(parity, monkeypatch):
    step = _coupling(parity)
    x = tf.random.stateless_normal((5, 4, 6, 3), seed=(7, parity))
    fast = _evaluate(step, x, True, monkeypatch)
    full = _evaluate(step, x, False, monkeypatch)
    assert float(tf.reduce_max(tf.abs(full[1]))) > 0.1  # a non-trivial coupling
    names = ["y", "log_det", "inverse", "dx"] + [v.path for v in step.net.trainable_variables]
    for name, a, b in zip(names, fast, full, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(fast[2].numpy(), x.numpy(), atol=1e-5)  # round trip


def test_one_pixel_log_det_is_the_jacobians(monkeypatch):
    monkeypatch.setattr(steps_lib, "CONSTANT_1X1_CHECKERBOARD", True)
    step = _coupling(0)
    check_step(step, tf.random.stateless_normal((2, 4, 6, 3), seed=(8, 1)))


def test_the_output_does_not_depend_on_the_transformed_pixels_inputs(monkeypatch):
    """What makes the shortcut exact: with 1x1 kernels, s and t at the transformed pixels
    are the same vector for any input (the whole-image evaluation shows it)."""
    monkeypatch.setattr(steps_lib, "CONSTANT_1X1_CHECKERBOARD", False)
    step = _coupling(1)
    a = tf.random.stateless_normal((2, 4, 6, 3), seed=(9, 1))
    b = tf.random.stateless_normal((2, 4, 6, 3), seed=(9, 2))
    _, s_a, t_a = step._checker_params(a)
    _, s_b, t_b = step._checker_params(b)
    np.testing.assert_allclose(s_a.numpy(), s_b.numpy(), atol=1e-6)
    np.testing.assert_allclose(t_a.numpy(), t_b.numpy(), atol=1e-6)
