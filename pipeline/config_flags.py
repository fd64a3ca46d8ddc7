"""absl flags generated from dataclass fields, and read back into the dataclasses.

One flag per field, named like it, with the field's default and ``metadata["help"]`` as
its help. The flag type follows the field's annotation: bool -> DEFINE_boolean, int ->
DEFINE_integer, float -> DEFINE_float, str -> DEFINE_enum if ``metadata["choices"]`` is
given, else DEFINE_string; tuple -> DEFINE_list (read back as a tuple); ``T | None`` -> the
flag of T whose default may be None ("not given": the code decides). A field without a
default is a required flag (absl refuses a command line without it), unless its
``metadata["required"]`` is False: then the flag's default is None and the dataclass
refuses a missing value itself, with its own message. ``metadata["lower_bound"]`` of an int
or float field is the flag's lower bound (absl refuses a smaller value).

The flags belong to the module that calls :func:`define_flags` (this module disclaims
them, absl's ``disclaim_key_flags``), so ``python -m pipeline.train --help`` lists them.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterable

from absl import flags

from pipeline.train_config import TrainConfig
from tfp_models.hybrid_config import HybridConfig

flags.disclaim_key_flags()

# HybridConfig fields without a flag: the trainer takes the image shape from the data set.
NOT_FLAGS = ("image_shape",)

_DEFINE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def _flag_fields(cls: type, exclude: Iterable[str]) -> list[tuple[dataclasses.Field, type]]:
    """(field, resolved annotation) of each field of dataclass ``cls`` not in ``exclude``."""
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.name not in skip]


def _optional_of(kind) -> type | None:
    """T for an annotation ``T | None`` (``Optional[T]``), else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(kind)) == 2:
            return args[0]
    return None


def define_flags(cls: type, flag_values: flags.FlagValues = flags.FLAGS,
                 exclude: Iterable[str] = ()) -> None:
    """Defines one flag per field of dataclass ``cls`` (except ``exclude``) in
    ``flag_values``. Raises ValueError for a field without help or of an unsupported type."""
    for field, kind in _flag_fields(cls, exclude):
        text = field.metadata.get("help")
        if not text:
            raise ValueError(f"{cls.__name__}.{field.name} has no metadata['help']")
        no_default = (field.default is dataclasses.MISSING
                      and field.default_factory is dataclasses.MISSING)
        required = no_default and field.metadata.get("required", True)
        default = (None if no_default else field.default_factory()
                   if field.default is dataclasses.MISSING else field.default)
        kw = dict(flag_values=flag_values, required=required)
        if "lower_bound" in field.metadata:
            kw["lower_bound"] = field.metadata["lower_bound"]
        if "choices" in field.metadata:
            flags.DEFINE_enum(field.name, default, list(field.metadata["choices"]), text, **kw)
        elif kind is tuple:
            flags.DEFINE_list(field.name, None if default is None else list(default), text, **kw)
        elif _optional_of(kind) in _DEFINE:  # `T | None`: the flag's default may be None
            _DEFINE[_optional_of(kind)](field.name, default, text, **kw)
        elif kind in _DEFINE:
            _DEFINE[kind](field.name, default, text, **kw)
        else:
            raise ValueError(f"{cls.__name__}.{field.name}: no flag type for {kind!r}")


def values_from_flags(cls: type, flag_values: flags.FlagValues = flags.FLAGS,
                      exclude: Iterable[str] = ()) -> dict[str, Any]:
    """{field name: parsed flag value} for the fields :func:`define_flags` made flags of;
    list flags of tuple fields come back as tuples."""
    return {field.name: (tuple(flag_values[field.name].value) if kind is tuple
                         else flag_values[field.name].value)
            for field, kind in _flag_fields(cls, exclude)}


def define_train_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The flags of ``python -m pipeline.train``: one per :class:`HybridConfig` field but
    ``image_shape`` and one per :class:`TrainConfig` field (``data_dir`` and ``model_dir``
    required)."""
    define_flags(HybridConfig, flag_values, exclude=NOT_FLAGS)
    define_flags(TrainConfig, flag_values)


def train_configs_from_flags(
        flag_values: flags.FlagValues = flags.FLAGS) -> tuple[dict[str, Any], TrainConfig]:
    """(HybridConfig fields except image_shape, TrainConfig) from the parsed flags of
    :func:`define_train_flags`; the trainer adds the image shape from the data set."""
    model_values = values_from_flags(HybridConfig, flag_values, exclude=NOT_FLAGS)
    return model_values, TrainConfig(**values_from_flags(TrainConfig, flag_values))
