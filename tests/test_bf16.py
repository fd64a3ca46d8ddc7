"""bfloat16 training (--compute_dtype, pipeline.precision, tfp_models.networks): the heavy
layers compute in bfloat16, variables, log-determinants and outputs stay float32, and a
model trained in bfloat16 is restored, measured and inverted in float32 at float32
accuracy."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from artifacts import model_io
from pipeline import precision
from tfp_models.hybrid import HybridConfig, HybridModel

CONFIG = dict(variant="cqf", image_shape=(8, 8, 1), latent_dim=4, enc_dec_channels=4,
              enc_dec_downsamples=1, flow_scales=2, flow_hidden=4, disc_channels=4,
              spectral_norm=True, posterior_hidden=8)


def _perturb(model: HybridModel, seed: int = 0) -> None:
    """Non-trivial weights (a fresh flow is the identity: zero-initialised last layers)."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_weights:
        v.assign(v.numpy() + 0.1 * rng.standard_normal(v.shape).astype("float32"))


def _pair():
    cfg = HybridConfig(**CONFIG)
    bf16, f32 = HybridModel(cfg, compute_dtype="bfloat16"), HybridModel(cfg)
    _perturb(bf16)
    precision.copy_weights(bf16, f32)
    return bf16, f32


def test_the_heavy_layers_compute_in_bfloat16_with_float32_variables_and_outputs():
    bf16, f32 = _pair()
    assert {v.dtype for v in bf16.weights} == {"float32"}
    assert [tuple(v.shape) for v in bf16.weights] == [tuple(v.shape) for v in f32.weights]
    assert bf16.decoder.project.compute_dtype == "bfloat16"
    assert bf16.encoder.stem.compute_dtype == "bfloat16"
    assert bf16.flow_nets.coupling_nets[0].in_conv.compute_dtype == "bfloat16"
    assert f32.decoder.project.compute_dtype == "float32"
    x = tf.random.stateless_uniform((6, 8, 8, 1), seed=(1, 2))
    z = tf.random.stateless_normal((6, 4), seed=(3, 4))
    outputs = {
        "features": lambda m: m.flow.forward_and_log_det(x)[0],
        "log_det": lambda m: m.flow.forward_and_log_det(x)[1],
        "encoder": lambda m: m.encoder(x),
        "decoder_mu": lambda m: m.decoder(z)[0],
        "logits": lambda m: m.discriminator(x),
    }
    for name, fn in outputs.items():
        a, b = fn(bf16), fn(f32)
        assert a.dtype == tf.float32, name
        rel = float(tf.norm(a - b) / tf.norm(b))
        # bfloat16 has an 8-bit significand: outputs move by ~1e-3-1e-2, not 0, not more
        assert 1e-5 < rel < 5e-2, (name, rel)


def test_spectral_norm_runs_its_power_iteration_in_float32():
    bf16, _ = _pair()
    wrapper = bf16.discriminator.stem
    assert wrapper.dtype_policy.name == "float32" and wrapper.vector_u.dtype == "float32"
    bf16.discriminator(tf.zeros((2, 8, 8, 1)), training=True)
    kernel = wrapper.layer.kernel.numpy().reshape(-1, wrapper.layer.kernel.shape[-1])
    # one power iteration per call from a perturbed start: close to, not exactly, 1
    assert abs(np.linalg.svd(kernel, compute_uv=False)[0] - 1.0) < 0.5
    assert wrapper.layer.kernel.dtype == "float32"


def test_a_bfloat16_model_inverts_its_own_flow_exactly_and_in_float32_at_float32_accuracy():
    bf16, f32 = _pair()
    x = tf.random.stateless_uniform((6, 8, 8, 1), seed=(5, 6), minval=0.02, maxval=0.98)
    y_bf16, _ = bf16.flow.forward_and_log_det(x)
    # the same halves give the same s, t both ways: the bfloat16 nets cancel
    np.testing.assert_allclose(bf16.flow.inverse(y_bf16).numpy(), x.numpy(), atol=2e-5)
    y32, log_det = f32.flow.forward_and_log_det(x)
    np.testing.assert_allclose(f32.flow.inverse(y32).numpy(), x.numpy(), atol=2e-5)
    # and the float32 log-det is the float32 Jacobian's, brute force
    xs = x[:1]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = tf.reshape(f32.flow.forward(xs), [-1])
    jac = tf.reshape(tape.jacobian(y, xs), (64, 64)).numpy().astype("float64")
    np.testing.assert_allclose(np.linalg.slogdet(jac)[1], float(log_det[0]), rtol=1e-4)


def test_checkpoints_are_the_same_either_way(tmp_path):
    bf16, _ = _pair()
    step = tf.Variable(0, dtype=tf.int64)
    path = model_io.make_checkpoint(bf16, step).save(str(tmp_path / "ckpt"))
    restored = HybridModel(HybridConfig(**CONFIG))
    model_io.make_checkpoint(restored, tf.Variable(0, dtype=tf.int64)).restore(
        path).assert_existing_objects_matched()
    for a, b in zip(bf16.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_auto_picks_bfloat16_only_on_cpus_with_bfloat16_instructions(monkeypatch):
    from artifacts import machine_info

    strategy = tf.distribute.get_strategy()
    assert precision.default_compute_dtype(strategy, ["avx2", "avx512f"]) == "float32"
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is visible: auto is float32 there")
    assert precision.default_compute_dtype(strategy, ["avx512f", "avx512_bf16"]) == "bfloat16"
    assert precision.default_compute_dtype(strategy, ["amx_tile", "amx_bf16"]) == "bfloat16"
    monkeypatch.setattr(machine_info, "cpu_isa", lambda: ["avx2"])
    assert precision.resolve_compute_dtype("auto", strategy) == "float32"
    assert precision.resolve_compute_dtype("bfloat16", strategy) == "bfloat16"
    with pytest.raises(ValueError, match="--compute_dtype='float16'"):
        precision.resolve_compute_dtype("float16", strategy)


@pytest.mark.slow
def test_a_bfloat16_run_validates_and_samples_in_float32_and_evaluates_after(
        digits16, tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    from artifacts import tracking
    from pipeline.train_input import ValidationBound

    from conftest import train_tiny

    seen = []
    real = ValidationBound.bits_per_dim

    def spy(self):
        seen.append(self.model.decoder.project.compute_dtype)
        return real(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(ValidationBound, "bits_per_dim", spy)
    try:
        model_dir = train_tiny(digits16, tmp_path / "run", tracking_uri, "cqf",
                               compute_dtype="bfloat16", validation_every=2,
                               validation_examples=16, sample_every=2)
    finally:
        mp.undo()
    assert seen == ["float32", "float32"]
    run = MlflowClient(tracking_uri).get_run(tracking.run_id_of(model_dir))
    assert run.data.params["compute_dtype_used"] == "bfloat16"
    assert np.isfinite(run.data.metrics["validation/bpd"])
    # the float32 twin held the trained weights when it measured: measuring the restored
    # checkpoint in float32 gives the logged number again
    config, _ = model_io.load_model_config(model_dir)
    model = HybridModel(config)
    model_io.make_checkpoint(model, tf.Variable(0, dtype=tf.int64)).restore(
        tf.train.latest_checkpoint(model_dir)).expect_partial()
    from pipeline import data as data_lib

    info = data_lib.read_checked_dataset_info(digits16)
    again = ValidationBound(model, info, 16, 3, split="validation").bits_per_dim()
    assert again == pytest.approx(run.data.metrics["validation/bpd"], rel=1e-6)
