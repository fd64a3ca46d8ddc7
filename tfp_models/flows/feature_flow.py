"""The whole feature map f: logit preprocessing, then a multi-scale Real NVP.

:func:`build_feature_flow` assembles the steps of :mod:`tfp_models.flows.steps` into a
:class:`FeatureFlow` ([N, H, W, C] in [0, 1) -> features [N, H, W, C], log-det [N] nats)
and the :class:`FeatureFlowNets` layer that owns all of its weights.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfp_models.flows.base import Chain, FlowStep
from tfp_models.flows.steps import (
    LOGIT_ALPHA,
    ActNorm,
    ActNormLayer,
    AffineCoupling,
    FactorOut,
    Squeeze,
    Unsqueeze,
    logit_preprocess,
)
from tfp_models.networks import ResNetCouplingNet, track_layer


class FeatureFlowNets(keras.layers.Layer):
    """Owns every weight of a feature flow (so ``model.trainable_variables`` and
    checkpoints see them); the :class:`FeatureFlow` bijector references these layers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coupling_nets: list[ResNetCouplingNet] = []
        self.actnorms: list[ActNormLayer] = []

    def add(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        """Registers a sub-layer (as an attribute too, so tf.train.Checkpoint sees it)."""
        track_layer(self, layer)
        kind = self.actnorms if isinstance(layer, ActNormLayer) else self.coupling_nets
        kind.append(layer)
        return layer

    def call(self, inputs):  # pragma: no cover - the layer is a container, not a computation
        raise TypeError("FeatureFlowNets holds weights; call FeatureFlow.forward_and_log_det")


class FeatureFlow(Chain):
    """The whole feature map f: logit preprocessing, then the multi-scale Real NVP.

    ``forward(x)`` maps images in [0, 1)^(H, W, C) ([N, H, W, C] float32) to features of
    the same shape; ``forward_and_log_det(x)`` also returns log |det df/dx| [N] in nats.
    ``nets`` is the Keras layer that owns the weights: attach it to a Keras model.
    ``bijectors`` are in :class:`Chain` order (applied last to first).
    """

    def __init__(self, bijectors: Sequence[FlowStep], nets: FeatureFlowNets,
                 image_shape: tuple[int, int, int], num_scales: int):
        super().__init__(bijectors, name="feature_flow")
        self.nets = nets
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_scales = num_scales

    @property
    def trainable_variables(self) -> Sequence[tf.Variable]:
        return self.nets.trainable_variables

    @property
    def actnorm_steps(self) -> list[ActNorm]:
        """Every :class:`ActNorm` of the flow, in the order the forward pass meets them."""
        found = []

        def visit(step):
            if isinstance(step, ActNorm):
                found.append(step)
            if isinstance(step, Chain):
                for child in reversed(step.bijectors):
                    visit(child)
            if isinstance(step, FactorOut):
                visit(step.inner)

        visit(self)
        return found

    def data_init(self, x: tf.Tensor) -> None:
        """Data-dependent ActNorm init from a batch x [N, H, W, C] in [0, 1) (eager; a
        no-op for layers already initialised, e.g. after a checkpoint restore)."""
        for step in self.actnorm_steps:
            step.pending_data_init = True
        try:
            self.forward_and_log_det(tf.convert_to_tensor(x, tf.float32))
        finally:
            for step in self.actnorm_steps:
                step.pending_data_init = False

    def build_weights(self) -> None:
        """Creates every variable by running a dummy batch (no ActNorm init)."""
        self.forward_and_log_det(tf.fill((1,) + self.image_shape, 0.5))


def check_squeezable(image_shape: Sequence[int], num_scales: int) -> None:
    """Raises ValueError unless H and W are divisible by 2^(num_scales - 1)."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    h, w, c = (int(d) for d in image_shape)
    factor = 2 ** max(num_scales - 1, 0)
    if h % factor or w % factor or min(h, w, c) < 1:
        raise ValueError(
            f"image size {h}x{w} cannot be squeezed {num_scales - 1} times by a "
            f"{num_scales}-scale flow: height and width must be divisible by {factor} "
            f"(use fewer scales, or pad/crop the data to a multiple of {factor})")


def build_feature_flow(image_shape: Sequence[int], num_scales: int, hidden_channels: int,
                       num_res_blocks: int, *, use_actnorm: bool = True,
                       logit_alpha: float = LOGIT_ALPHA,
                       couplings_per_scale: int = 3,
                       final_couplings: int = 4,
                       kernel_size: int = 3,
                       compute_dtype: str = "float32") -> FeatureFlow:
    """Builds the multi-scale Real NVP feature map f for images of ``image_shape``.

    Per scale (Real NVP section 3.6): ``couplings_per_scale`` checkerboard couplings,
    squeeze, ``couplings_per_scale`` channel-wise couplings, factor out half of the
    channels; the last scale has ``final_couplings`` checkerboard couplings. Each coupling
    is preceded by an ActNorm when ``use_actnorm``. After a factor-out the output is
    un-squeezed, so the features have the image's shape. ``num_scales=0`` gives the logit
    preprocessing alone (the feature space of the no-flow variants). ``kernel_size`` is
    the coupling nets' convolution size; with 1 a coupling conditions only on its own
    (squeezed) position, so f couples pixels within 2^s x 2^s blocks at most, s =
    num_scales - 1 (a local flow: image-level structure is left to the latent); its
    checkerboard couplings are then constant affine maps (a 1x1 net sees zeros at every
    pixel it transforms: :class:`~tfp_models.flows.steps.AffineCoupling`), so only the
    channel-wise couplings after each squeeze depend on the data.
    ``compute_dtype`` is the coupling nets' arithmetic ('float32' or 'bfloat16'); the
    affine maps, ActNorm and every log-determinant are float32 either way.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if num_scales < 0:
        raise ValueError(f"num_scales must be >= 0, got {num_scales}")
    check_squeezable(image_shape, num_scales)
    nets = FeatureFlowNets(name="feature_flow_nets")
    counter = iter(range(10**6))
    # Steps are listed in the order the forward pass applies them (which is also the order
    # the layers are created in, and so fixes their names and checkpoint keys), then
    # reversed into Chain order.

    def coupling(channels_in: int, channels_out: int, mask: str, parity: int) -> list[FlowStep]:
        i = next(counter)
        steps: list[FlowStep] = []
        if use_actnorm:
            layer = nets.add(ActNormLayer(channels_in, name=f"actnorm_{i}"))
            steps.append(ActNorm(layer, name=f"actnorm_{i}"))
        net = nets.add(ResNetCouplingNet(
            channels_out, hidden_channels, num_res_blocks, kernel_size,
            compute_dtype=compute_dtype, name=f"coupling_net_{i}"))
        steps.append(AffineCoupling(net, mask, parity, name=f"coupling_{i}"))
        return steps

    def scale(level: int, channels: int) -> FlowStep:
        steps: list[FlowStep] = []
        if level == num_scales - 1:
            for k in range(final_couplings):
                steps += coupling(channels, channels, "checkerboard", k % 2)
            return Chain(steps[::-1], name=f"scale_{level}")
        for k in range(couplings_per_scale):
            steps += coupling(channels, channels, "checkerboard", k % 2)
        steps.append(Squeeze(name=f"squeeze_{level}"))
        c4 = 4 * channels
        for k in range(couplings_per_scale):
            steps += coupling(c4, c4 - c4 // 2, "channel", k % 2)
        steps.append(FactorOut(scale(level + 1, c4 - c4 // 2), name=f"factor_out_{level}"))
        steps.append(Unsqueeze(name=f"unsqueeze_{level}"))
        return Chain(steps[::-1], name=f"scale_{level}")

    steps: list[FlowStep] = [logit_preprocess(logit_alpha)]
    if num_scales > 0:
        steps.append(scale(0, int(image_shape[-1])))
    flow = FeatureFlow(steps[::-1], nets, tuple(image_shape), num_scales)
    flow.build_weights()
    return flow
