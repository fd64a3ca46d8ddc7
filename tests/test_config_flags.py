"""One source of configuration: pipeline.train's flags are generated from the HybridConfig
and TrainConfig fields (name, default, help, choices) and read back into them."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing

import pytest
from absl import flags

from pipeline import config_flags
from pipeline.data import DatasetInfo
from pipeline.train_config import TrainConfig
from pipeline.trainer import model_config_for_data
from tfp_models.hybrid import HybridConfig

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ["--data_dir=d", "--model_dir=m"]
PARSERS = {bool: flags.BooleanParser, int: flags.IntegerParser, float: flags.FloatParser,
           str: flags.ArgumentParser, tuple: flags.ListParser}


def _train_flags(argv=()) -> flags.FlagValues:
    """The flags of pipeline.train in a fresh FlagValues (the global FLAGS of this pytest
    process may hold other CLIs' --model_dir), parsed from ``argv``."""
    values = flags.FlagValues()
    config_flags.define_train_flags(values)
    values(["prog", *argv])
    return values


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.name != "image_shape"]


def test_every_field_has_a_flag_with_its_default_help_and_type():
    values = _train_flags(REQUIRED)
    fields = _fields(HybridConfig) + _fields(TrainConfig)
    assert sorted(values) == sorted(f.name for f, _ in fields)  # no flag without a field
    assert "image_shape" not in values
    for field, kind in fields:
        flag = values[field.name]
        assert field.metadata["help"].strip() and flag.help.endswith(field.metadata["help"])
        if field.default is dataclasses.MISSING:  # data_dir, model_dir
            assert flag.default is None and field.name in ("data_dir", "model_dir")
        else:
            default = tuple(flag.default) if kind is tuple else flag.default
            assert default == field.default and type(default) is type(field.default), field.name
        if "choices" in field.metadata:
            assert isinstance(flag.parser, flags.EnumParser), field.name
            assert flag.parser.enum_values == list(field.metadata["choices"])
        else:
            assert type(flag.parser) is PARSERS[config_flags._optional_of(kind) or kind], field.name


def test_data_dir_and_model_dir_are_required():
    for argv in ([REQUIRED[0]], [REQUIRED[1]]):
        with pytest.raises(flags.IllegalFlagValueError, match="must have a value"):
            _train_flags(argv)


def test_defaults_round_trip_into_the_dataclasses():
    model_values, train_cfg = config_flags.train_configs_from_flags(_train_flags(REQUIRED))
    assert train_cfg == TrainConfig(data_dir="d", model_dir="m")
    assert HybridConfig(**model_values) == HybridConfig()


def test_every_flag_value_round_trips_into_the_dataclasses():
    """A value other than the default for every field, given on the command line, arrives
    in the dataclass unchanged (tuples from list flags)."""
    # variant 'vae': the only one the non-default decoder ('bernoulli') accepts
    model = dict(variant="vae", latent_dim=7, posterior="iaf", posterior_steps=3,
                 posterior_hidden=9, prior="mixture", prior_components=4, enc_dec_channels=5,
                 enc_dec_downsamples=1, flow_scales=1, flow_hidden=6, flow_res_blocks=2,
                 flow_kernel_size=1, use_actnorm=False, logit_alpha=0.01,
                 decoder_min_log_sigma=-4.5, disc_channels=3, spectral_norm=True,
                 lambda_adv=2.5, gradient_penalty="r1", gp_weight=1.5,
                 disc_inputs="dequantized", free_bits=0.25, decoder_data_init=False,
                 decoder="bernoulli")
    run = dict(data_dir="data/x", model_dir="runs/y", train_steps=11, batch_size=4,
               checkpoint_every=3, seed=9, learning_rate=5e-4, lr_schedule="cosine",
               lr_decay_steps=20, flow_learning_rate=1e-4, disc_learning_rate=3e-4,
               adam_beta1=0.8, disc_adam_beta1=0.4, disc_adam_beta2=0.99, disc_steps=2,
               kl_warmup_steps=5, flow_warmup_steps=6, random_flip=True,
               resize_with_crop_or_pad=12, log_every=2, sample_every=7, num_grid_samples=9,
               sample_temperature=0.5, data_init_batch=17, validation_every=4,
               validation_examples=33, validation_split="test", keep_checkpoints=1,
               strategy="mirrored",
               devices=("/cpu:0", "/cpu:1"), cluster_start_timeout_s=30,
               mlflow_tracking_uri="sqlite:///x.db",
               experiment="e", run_name="r", show_progress=False, jit_compile=False,
               strict_tracking=True, verify_data=True, deterministic=True,
               compute_dtype="bfloat16")
    every = _fields(HybridConfig) + _fields(TrainConfig)
    assert set(model) | set(run) == {f.name for f, _ in every}

    def arg(name, value):
        if isinstance(value, bool):
            return f"--{'' if value else 'no'}{name}"
        return f"--{name}={','.join(value) if isinstance(value, tuple) else value}"

    argv = [arg(k, v) for k, v in {**model, **run}.items()]
    model_values, train_cfg = config_flags.train_configs_from_flags(_train_flags(argv))
    assert model_values == model
    assert train_cfg == TrainConfig(**run)
    assert HybridConfig(image_shape=(16, 16, 1), **model_values).latent_dim == 7


def test_a_field_without_help_or_of_an_unknown_type_is_refused():
    @dataclasses.dataclass
    class NoHelp:
        n: int = 1

    @dataclasses.dataclass
    class Odd:
        d: dict = dataclasses.field(default=None, metadata={"help": "a mapping"})

    with pytest.raises(ValueError, match="NoHelp.n has no metadata"):
        config_flags.define_flags(NoHelp, flags.FlagValues())
    with pytest.raises(ValueError, match="Odd.d: no flag type"):
        config_flags.define_flags(Odd, flags.FlagValues())


def test_the_model_config_takes_the_data_sets_image_shape():
    """The image shape is worked out in one place: the data set's, or the crop size."""
    info = DatasetInfo(data_dir="d", image_shape=(16, 16, 1), split_counts={"train": 8},
                       split_files={}, label_names=None, raw={})
    cfg = TrainConfig(data_dir="d", model_dir="m")
    values = {"variant": "vae", "latent_dim": 3}
    from_values = model_config_for_data(values, cfg, info)
    assert from_values == HybridConfig(image_shape=(16, 16, 1), **values)
    assert model_config_for_data(HybridConfig(**values), cfg, info) == from_values
    cropped = dataclasses.replace(cfg, resize_with_crop_or_pad=12)
    assert model_config_for_data(values, cropped, info).image_shape == (12, 12, 1)


def test_helpfull_lists_every_flag_with_its_help_under_pipeline_train():
    result = subprocess.run([sys.executable, "-m", "pipeline.train", "--helpfull"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
                            env=dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
    assert "pipeline/train.py:" in result.stdout, result.stderr[-3000:]  # absl's help exits 1
    section = result.stdout.split("pipeline/train.py:", 1)[1].split("\n\n", 1)[0]
    flat = re.sub(r"\s+", "", section)  # help text is re-wrapped
    for field, kind in _fields(HybridConfig) + _fields(TrainConfig):
        boolean = bool in (kind, config_flags._optional_of(kind))
        name = f"--[no]{field.name}:" if boolean else f"--{field.name}:"
        assert name in section, name
        assert re.sub(r"\s+", "", field.metadata["help"]) in flat, field.name


def test_optional_bool_flag_defaults_to_none_and_parses_both_ways():
    assert _train_flags(REQUIRED)["jit_compile"].value is None  # not given: by device type
    assert _train_flags(REQUIRED + ["--jit_compile"])["jit_compile"].value is True
    assert _train_flags(REQUIRED + ["--nojit_compile"])["jit_compile"].value is False


def test_a_field_without_default_but_required_false_is_an_optional_flag_of_default_none():
    """``metadata["required"] = False``: absl accepts a command line without the flag (the
    dataclass then refuses the missing value with its own message)."""
    @dataclasses.dataclass(frozen=True)
    class Checked:
        name: str = dataclasses.field(metadata={"help": "a name", "required": False})
        must: str = dataclasses.field(metadata={"help": "required by absl"})

        def __post_init__(self):
            if not self.name:
                raise ValueError("--name is required")

    values = flags.FlagValues()
    config_flags.define_flags(Checked, values)
    assert values["name"].default is None and values["must"].default is None
    with pytest.raises(flags.IllegalFlagValueError, match="--must must have a value"):
        values(["prog"])
    values(["prog", "--must=m"])  # no --name: absl accepts it ...
    assert config_flags.values_from_flags(Checked, values) == {"name": None, "must": "m"}
    with pytest.raises(ValueError, match="--name is required"):  # ... the dataclass does not
        Checked(**config_flags.values_from_flags(Checked, values))
    values(["prog", "--must=m", "--name=n"])
    assert Checked(**config_flags.values_from_flags(Checked, values)) == Checked("n", "m")


def test_lower_bound_metadata_bounds_int_and_optional_int_flags():
    @dataclasses.dataclass(frozen=True)
    class Bounded:
        count: int = dataclasses.field(default=1, metadata={"help": "n", "lower_bound": 1})
        version: int | None = dataclasses.field(default=None, metadata={
            "help": "v", "lower_bound": 1})
        scale: float = dataclasses.field(default=0.5, metadata={"help": "s", "lower_bound": 0.0})

    values = flags.FlagValues()
    config_flags.define_flags(Bounded, values)
    values(["prog"])
    assert config_flags.values_from_flags(Bounded, values) == {
        "count": 1, "version": None, "scale": 0.5}
    for bad in ("--count=0", "--version=0", "--scale=-0.1"):
        with pytest.raises(flags.IllegalFlagValueError, match="is not"):
            values(["prog", bad])
    values(["prog", "--count=2", "--version=3", "--scale=0"])
    assert Bounded(**config_flags.values_from_flags(Bounded, values)) == Bounded(2, 3, 0.0)
