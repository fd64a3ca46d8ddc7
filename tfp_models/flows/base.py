"""The base of every flow step: :class:`FlowStep` (single pass, no cache) and :class:`Chain`.

A step is a ``tfp.bijectors.Bijector`` on event rank 3: images or features [N, H, W, C]
float32 in, the same rank out, log-dets [N] in nats.
"""
from __future__ import annotations

import abc
from typing import Sequence

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

EVENT_NDIMS = 3


def sum_event(t: tf.Tensor) -> tf.Tensor:
    """Sums a [N, H, W, C] tensor over its event dims -> [N]."""
    return tf.reduce_sum(t, axis=[1, 2, 3])


class FlowStep(tfb.Bijector, metaclass=abc.ABCMeta):
    """A bijector on image batches [N, H, W, C] that computes its output and log-det in
    one pass and never caches (see the :mod:`tfp_models.flows` docstring)."""

    def __init__(self, name: str, is_constant_jacobian: bool = False):
        super().__init__(
            forward_min_event_ndims=EVENT_NDIMS,
            is_constant_jacobian=is_constant_jacobian,
            validate_args=False,
            parameters={"name": name},
            name=name)

    @abc.abstractmethod
    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (y = f(x) [N, H, W, C], log |det df/dx| [N] in nats)."""

    @abc.abstractmethod
    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (x = f^-1(y) [N, H, W, C], log |det df^-1/dy| [N] in nats)."""

    # TFP's hooks, all served by the single-pass methods.
    def _forward(self, x):
        return self.forward_and_log_det(x)[0]

    def _inverse(self, y):
        return self.inverse_and_log_det(y)[0]

    def _forward_log_det_jacobian(self, x):
        return self.forward_and_log_det(x)[1]

    def _inverse_log_det_jacobian(self, y):
        return self.inverse_and_log_det(y)[1]

    # Public entry points without TFP's identity cache.
    def forward(self, x: tf.Tensor, name: str = "forward", **kwargs) -> tf.Tensor:
        return super().forward(tf.identity(x), name=name, **kwargs)

    def inverse(self, y: tf.Tensor, name: str = "inverse", **kwargs) -> tf.Tensor:
        return super().inverse(tf.identity(y), name=name, **kwargs)

    def forward_log_det_jacobian(self, x: tf.Tensor, event_ndims: int | None = None,
                                 name: str = "forward_log_det_jacobian", **kwargs) -> tf.Tensor:
        return super().forward_log_det_jacobian(
            tf.identity(x), event_ndims=event_ndims, name=name, **kwargs)

    def inverse_log_det_jacobian(self, y: tf.Tensor, event_ndims: int | None = None,
                                 name: str = "inverse_log_det_jacobian", **kwargs) -> tf.Tensor:
        return super().inverse_log_det_jacobian(
            tf.identity(y), event_ndims=event_ndims, name=name, **kwargs)


class Chain(FlowStep):
    """Composition of flow steps, ordered as ``tfb.Chain``: the list is applied last to first.

    ```none
    Chain([b_K, ..., b_1]).forward(x) = b_K(...(b_1(x)))
    log |det J(x)| = sum_{k=1..K} log |det J_{b_k}(x_{k-1})|,   x_0 = x, x_k = b_k(x_{k-1})
    ```

    so ``Chain([b_K, ..., b_1]).inverse(y) = b_1^-1(...(b_K^-1(y)))``. ``bijectors`` keeps
    the list in that (TFP) order. Shapes: [N, H, W, C] in, [N, H', W', C'] out (each step
    may change H, W, C at event rank 3); log-dets [N] in nats.

    Why not ``tfb.Chain`` itself: it can hold these steps and gives the same values, but
    ``forward`` + ``forward_log_det_jacobian`` through it made 30 coupling-net calls on a
    2-scale flow where :meth:`forward_and_log_det` makes 10 (it recomputes every
    intermediate x_k for the log-det); it has no single-pass method for
    :class:`~tfp_models.flows.steps.FactorOut` and training to call; and it caches results
    by input identity, which go stale after a weight update. Variables are unaffected
    either way: Keras layers own them (``FeatureFlowNets``), so checkpoint keys do not
    depend on the bijector structure.
    """

    def __init__(self, bijectors: Sequence[FlowStep], name: str):
        super().__init__(name=name)
        self.bijectors = list(bijectors)

    def forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        total = tf.zeros(tf.shape(x)[:1], x.dtype)
        for step in reversed(self.bijectors):
            x, ldj = step.forward_and_log_det(x)
            total += ldj
        return x, total

    def inverse_and_log_det(self, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        total = tf.zeros(tf.shape(y)[:1], y.dtype)
        for step in self.bijectors:
            y, ldj = step.inverse_and_log_det(y)
            total += ldj
        return y, total
