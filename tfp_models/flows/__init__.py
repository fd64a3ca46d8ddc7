"""The invertible feature map f_psi: a multi-scale Real NVP (Dinh et al., 2017) as TFP bijectors.

Images enter dequantized, x in [0, 1)^(H, W, C), as float32 tensors [N, H, W, C]; features
leave with the same shape. Every step is a ``tfp.bijectors.Bijector`` on event rank 3
whose ``forward_log_det_jacobian(x, event_ndims=3)`` has shape [N] and is in nats.

Two rules from Keras 3 / TFP shape this package:

* Keras 3 does not track variables created inside TFP objects, so every weight lives in a
  Keras layer (:class:`FeatureFlowNets` owns them all) and the bijectors are thin wrappers
  that reference those layers.
* TFP caches forward/inverse results by input-tensor identity; after a weight update a
  cached result is stale. The steps here do not cache (each public call sees a fresh
  ``tf.identity`` of its input), and :meth:`FlowStep.forward_and_log_det` computes the
  output and the log-det in one pass so training never runs a coupling net twice.

Modules: :mod:`~tfp_models.flows.base` (:class:`FlowStep`, :class:`Chain`),
:mod:`~tfp_models.flows.steps` (coupling, ActNorm, squeeze, factor-out, logit),
:mod:`~tfp_models.flows.feature_flow` (the whole f and its builder),
:mod:`~tfp_models.flows.quantization` (uint8 images <-> [0, 1) floats). Every name is
importable from ``tfp_models.flows``.
"""
from tfp_models.flows.base import EVENT_NDIMS, Chain, FlowStep, sum_event
from tfp_models.flows.feature_flow import (
    FeatureFlow,
    FeatureFlowNets,
    build_feature_flow,
    check_squeezable,
)
from tfp_models.flows.quantization import (
    dequantize_images,
    quantize_images,
    straight_through_quantize,
)
from tfp_models.flows.steps import (
    LOGIT_ALPHA,
    ActNorm,
    ActNormLayer,
    AffineCoupling,
    FactorOut,
    LogitPreprocess,
    Squeeze,
    Unsqueeze,
    logit_preprocess,
)

__all__ = [
    "EVENT_NDIMS", "Chain", "FlowStep", "sum_event",
    "FeatureFlow", "FeatureFlowNets", "build_feature_flow", "check_squeezable",
    "dequantize_images", "quantize_images", "straight_through_quantize",
    "LOGIT_ALPHA", "ActNorm", "ActNormLayer", "AffineCoupling", "FactorOut",
    "LogitPreprocess", "Squeeze", "Unsqueeze", "logit_preprocess",
]
