"""Settings of the hybrid model (:class:`HybridConfig`) and the variants of the paper's
ablation (:data:`VARIANTS`).

Each HybridConfig field carries its help text (and, for a choice, its ``choices``) in
``dataclasses.field`` metadata: the single source the pipeline's command-line flags are
generated from (:mod:`pipeline.config_flags`). Validation runs in ``__post_init__``.

How images meet the discriminator (``disc_inputs``): 'quantized' (default) shows D the
real images at their bin centres (x + 0.5) / 256 and the samples quantized to bin centres
with a straight-through gradient, so both live on the same 256-level lattice and D cannot
separate them by dequantization noise or sub-bin values, while the generator still gets
D's gradient everywhere (also where f^-1 leaves [0, 1]). 'dequantized' is the earlier
behaviour: real images with the training dequantization noise (x + u) / 256 against
samples clipped to [0, 1] (zero gradient outside).

Deviations from the paper's objective, off by default (``free_bits`` = 0, and the
trainer's ``kl_warmup_steps`` = 0 give L_MLE exactly): free bits (Kingma et al., 2016)
replace each example's KL_j of latent dimension j by max(free_bits, KL_j) in the
training loss only; reported bounds always use the true KL. A deviation of the model
rather than the objective: ``prior='mixture'`` learns p(z) as a mixture of
``prior_components`` diagonal Gaussians (:mod:`tfp_models.priors`); the KL term is then a
one-sample Monte Carlo estimate ln q(z|x) - ln p(z), and the adversarial fakes are
decoded from z ~ p(z) of the learned prior.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from tfp_models import flows
from tfp_models.posteriors import POSTERIORS
from tfp_models.priors import PRIORS


@dataclasses.dataclass(frozen=True)
class Variant:
    """What a variant of the paper's ablation trains and has."""
    name: str
    latent: bool       # a VAE latent z with encoder/decoder
    learned_flow: bool  # f includes a Real NVP (else: logit preprocessing only)
    mle: bool          # trained by maximum likelihood
    adversarial: str   # '' (none), 'log_ratio' (BCE discriminator) or 'wgan' (WGAN-GP critic)
    description: str

    @property
    def has_likelihood(self) -> bool:
        """Whether the model defines (a bound on) log p(x): all but 'gan'."""
        return self.mle or not self.latent


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("vae", True, False, True, "", "VAE, Gaussian decoder in logit-pixel space, MLE"),
    Variant("vae_f", True, True, True, "", "VAE with Real NVP feature space, MLE"),
    Variant("cq", True, False, True, "log_ratio", "VAE trained by MLE + adversarial loss"),
    Variant("cqf", True, True, True, "log_ratio",
            "main model: VAE in Real NVP feature space, MLE + adversarial"),
    Variant("gan", True, False, False, "log_ratio", "generator mu(z) trained adversarially only"),
    Variant("flow", False, True, True, "", "plain Real NVP by maximum likelihood (NVP baseline)"),
    Variant("flow_wgan", False, True, False, "wgan", "Real NVP trained as a WGAN-GP generator"),
    Variant("flowgan", False, True, True, "log_ratio",
            "FlowGAN: plain Real NVP by MLE + the log-ratio adversarial loss on its samples"),
]}


DISC_INPUTS = ("quantized", "dequantized")
DECODERS = ("gaussian", "bernoulli")
GRADIENT_PENALTIES = ("none", "r1", "wgan-gp")


@dataclasses.dataclass
class HybridConfig:
    """Architecture and loss settings; serializable to JSON (stored with checkpoints)."""
    variant: str = dataclasses.field(default="cqf", metadata={
        "help": "Model variant (the paper's ablation).", "choices": tuple(sorted(VARIANTS))})
    image_shape: tuple = dataclasses.field(default=(28, 28, 1), metadata={
        "help": "(H, W, C) of the images; the trainer sets it from the data set."})
    latent_dim: int = dataclasses.field(default=32, metadata={"help": "Dimension of z."})
    posterior: str = dataclasses.field(default="diag", metadata={
        "help": "Family of q(z|x): 'diag' (diagonal Gaussian), 'iaf' (inverse autoregressive "
                "flow), 'planar' (planar flows), 'realnvp' (affine couplings on z with "
                "alternating half masks); the flows are conditioned on the encoder's context.",
        "choices": POSTERIORS})
    posterior_steps: int = dataclasses.field(default=2, metadata={
        "help": "Steps k of the posterior flow (iaf, planar, realnvp; unused by diag)."})
    posterior_hidden: int = dataclasses.field(default=128, metadata={
        "help": "Hidden units of the IAF's MADE and of the realnvp posterior's coupling nets."})
    decoder: str = dataclasses.field(default="gaussian", metadata={
        "help": "Likelihood p(x|z): 'gaussian' (factorized Gaussian in the feature space "
                "f(x), the paper's) or 'bernoulli' (binary data, variant vae only: each image "
                "is binarized b = 1[u < x/255] with the dequantization noise u, dynamically "
                "in training; bounds are -ln p(b) in nats of the binarized image, not 8-bit "
                "bits/dim).", "choices": DECODERS})
    prior: str = dataclasses.field(default="standard", metadata={
        "help": "p(z): 'standard' N(0, I) (the paper's) or 'mixture', a learned mixture of "
                "diagonal Gaussians (deviation; the KL becomes a one-sample estimate).",
        "choices": PRIORS})
    prior_components: int = dataclasses.field(default=10, metadata={
        "help": "Components K of the 'mixture' prior."})
    enc_dec_channels: int = dataclasses.field(default=32, metadata={
        "help": "Base channels of encoder and decoder."})
    enc_dec_downsamples: int = dataclasses.field(default=2, metadata={
        "help": "Stride-2 stages of encoder/decoder."})
    flow_scales: int = dataclasses.field(default=2, metadata={"help": "Scales of the Real NVP."})
    flow_hidden: int = dataclasses.field(default=32, metadata={
        "help": "Channels of the coupling ResNets."})
    flow_res_blocks: int = dataclasses.field(default=1, metadata={
        "help": "Residual blocks per coupling net."})
    flow_kernel_size: int = dataclasses.field(default=3, metadata={
        "help": "Convolution size of the coupling nets; 1 = a local flow that couples pixels "
                "only within 2^(scales-1)-sized blocks (image-level structure must then come "
                "from the latent)."})
    use_actnorm: bool = dataclasses.field(default=True, metadata={
        "help": "ActNorm before every coupling."})
    logit_alpha: float = dataclasses.field(default=flows.LOGIT_ALPHA, metadata={
        "help": "a of the logit preprocessing logit(a + (1 - 2a) x)."})
    decoder_min_log_sigma: float = dataclasses.field(default=-6.0, metadata={
        "help": "Lower bound of the decoder's log sigma."})
    disc_channels: int = dataclasses.field(default=32, metadata={
        "help": "Base channels of the discriminator."})
    spectral_norm: bool = dataclasses.field(default=False, metadata={
        "help": "Spectral normalization in the discriminator."})
    lambda_adv: float = dataclasses.field(default=1.0, metadata={
        "help": "Weight of L_adv against L_MLE (nats per image)."})
    gradient_penalty: str = dataclasses.field(default="none", metadata={
        "help": "Gradient penalty of the discriminator.", "choices": GRADIENT_PENALTIES})
    gp_weight: float = dataclasses.field(default=10.0, metadata={
        "help": "Weight of the gradient penalty."})
    disc_inputs: str = dataclasses.field(default="quantized", metadata={
        "help": "How images meet the discriminator: 'quantized' = real images at bin centres, "
                "samples quantized to bin centres with a straight-through gradient; "
                "'dequantized' = real (x+u)/256 vs samples clipped to [0, 1].",
        "choices": DISC_INPUTS})
    free_bits: float = dataclasses.field(default=0.0, metadata={
        "help": "Free bits per latent dimension in nats: the training loss uses max(free_bits, "
                "KL_j) per example and dimension (deviation from the paper; 0 = exact L_MLE). "
                "Reported bounds use the true KL."})
    decoder_data_init: bool = dataclasses.field(default=True, metadata={
        "help": "Variants without a learned flow (vae, cq, gan): initialize the decoder's "
                "per-dimension mean and log sigma from the logit features of the first batch "
                "(else sigma starts at 1)."})

    def __post_init__(self):
        self.image_shape = tuple(int(d) for d in self.image_shape)
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {sorted(VARIANTS)}")
        if self.posterior not in POSTERIORS:
            raise ValueError(f"unknown posterior {self.posterior!r}; expected one of {POSTERIORS}")
        if self.posterior_steps < 1 and self.posterior != "diag":
            raise ValueError(f"posterior_steps={self.posterior_steps}: the {self.posterior!r} "
                             "posterior needs at least 1 step")
        if self.posterior == "realnvp" and self.latent_dim < 2:
            raise ValueError(f"posterior='realnvp' couples two halves of z: needs latent_dim >= "
                             f"2, got {self.latent_dim}")
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; expected one of {DECODERS}")
        if self.decoder == "bernoulli" and (self.spec.learned_flow or self.spec.adversarial
                                            or not (self.spec.latent and self.spec.mle)):
            raise ValueError(
                f"decoder='bernoulli' models binarized images with a VAE trained by maximum "
                f"likelihood and no flow: use variant 'vae' (got {self.variant!r}, which "
                + ("has a learned flow" if self.spec.learned_flow else
                   "has an adversarial loss on grey-level images" if self.spec.adversarial
                   else "has no latent decoder") + ")")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; expected one of {PRIORS}")
        if self.prior_components < 1:
            raise ValueError(f"prior_components={self.prior_components}: expected >= 1")
        if self.prior != "standard" and not (self.spec.latent and self.spec.mle):
            raise ValueError(f"prior={self.prior!r} is learned by maximum likelihood; variant "
                             f"{self.variant!r} has no such term (use prior='standard')")
        if self.gradient_penalty not in GRADIENT_PENALTIES:
            raise ValueError(
                f"unknown gradient_penalty {self.gradient_penalty!r}; expected none, r1 or wgan-gp")
        if self.disc_inputs not in DISC_INPUTS:
            raise ValueError(f"unknown disc_inputs {self.disc_inputs!r}; expected one of "
                             f"{DISC_INPUTS}")
        if self.flow_kernel_size < 1 or self.flow_kernel_size % 2 == 0:
            raise ValueError(f"flow_kernel_size={self.flow_kernel_size}: expected a positive "
                             "odd integer")
        if self.free_bits < 0:
            raise ValueError(f"free_bits={self.free_bits}: expected >= 0 (nats per latent dim)")
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (H, W, C), got {self.image_shape}")
        if self.spec.learned_flow:
            flows.check_squeezable(self.image_shape, self.flow_scales)

    @property
    def spec(self) -> Variant:
        return VARIANTS[self.variant]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "HybridConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown HybridConfig fields {unknown}")
        return cls(**values)
