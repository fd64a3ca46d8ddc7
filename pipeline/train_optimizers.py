"""The optimizers of a training run: the generator's Adam (with its learning-rate schedule),
the flow's own Adam when ``--flow_learning_rate`` is set, the discriminator's Adam."""
from __future__ import annotations

import keras

from pipeline.train_config import TrainConfig
from tfp_models.hybrid import HybridModel


def generator_learning_rate(
        cfg: TrainConfig, base: float) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate of a generator-side Adam (encoder/decoder/flow, and the flow's own
    optimizer): ``base`` for 'constant'; for 'cosine', Keras' CosineDecay from ``base`` to 0
    at step ``cfg.lr_decay_steps`` (0 = ``cfg.train_steps``) over the optimizer's own
    iteration count, which is checkpointed: a resume continues the same curve as long as the
    horizon is unchanged. The discriminator keeps its constant rate."""
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            base, decay_steps=cfg.lr_decay_steps or cfg.train_steps)
    return base


def make_optimizers(model: HybridModel, cfg: TrainConfig) -> tuple[
        keras.optimizers.Optimizer, keras.optimizers.Optimizer | None,
        keras.optimizers.Optimizer | None]:
    """(generator Adam, the flow's own Adam or None, discriminator Adam or None), built on
    their variables; call under the strategy's scope."""
    g_opt = keras.optimizers.Adam(generator_learning_rate(cfg, cfg.learning_rate),
                                  beta_1=cfg.adam_beta1)
    flow_vars = list(model.flow.trainable_variables)
    flow_opt = None
    if cfg.flow_learning_rate and flow_vars:
        flow_opt = keras.optimizers.Adam(generator_learning_rate(cfg, cfg.flow_learning_rate),
                                         beta_1=cfg.adam_beta1)
        flow_opt.build(flow_vars)
        flow_ids = {id(v) for v in flow_vars}
        g_opt.build([v for v in model.generator_variables if id(v) not in flow_ids])
    else:
        g_opt.build(model.generator_variables)
    d_opt = None
    if model.spec.adversarial:
        d_opt = keras.optimizers.Adam(cfg.disc_learning_rate, beta_1=cfg.disc_adam_beta1,
                                      beta_2=cfg.disc_adam_beta2)
        d_opt.build(model.discriminator_variables)
    return g_opt, flow_opt, d_opt
