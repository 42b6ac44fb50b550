"""The architecture registry and what every builder shares: ``build(name, spec, **hparams)``.

A builder is a function with keyword-only, typed hyperparameters, registered by name in any
module of this package (the registry imports them on first use):

    @architectures.register("mlp", input="features")
    def mlp(spec: DataSpec, *, hidden_size: int, depth: int, ...) -> nn.Module: ...

Its defaults and search ranges live in ``conf/arch/<name>.yaml``; nothing else lists it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from torch import nn

from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec
from archselect.registry import Registry

Builder = Callable[..., nn.Module]

architectures: Registry[Builder] = Registry("architecture", "arch", package="archselect.architectures")


def hparam_types(name: str) -> dict[str, Any]:
    """Keyword-only parameters of a builder with their annotated types."""
    builder = architectures.get(name)
    hints = typing.get_type_hints(builder)
    return {
        p.name: hints.get(p.name, Any)
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def check_hparams(name: str, hparams: dict[str, Any], key: str) -> None:
    """Raise a ConfigError for unknown, missing or mistyped builder arguments."""
    types = hparam_types(name)
    for k, v in hparams.items():
        if k not in types:
            raise ConfigError(f"{key}.{k}", f"unknown hyperparameter of {name!r}", given=k,
                              allowed=types)
        expected = types[k]
        ok = (
            expected is Any
            or (expected is float and isinstance(v, int | float) and not isinstance(v, bool))
            or (expected is int and isinstance(v, int) and not isinstance(v, bool))
            or (expected not in (int, float) and isinstance(v, expected))
        )
        if not ok:
            raise ConfigError(f"{key}.{k}", "wrong type", given=v,
                              allowed=f"a value of type {getattr(expected, '__name__', expected)}")
    missing = sorted(set(types) - set(hparams))
    if missing:
        raise ConfigError(key, f"missing hyperparameters of {name!r}: {', '.join(missing)}",
                          fix=f"add them under {key}")


def build(name: str, spec: DataSpec, **hparams: Any) -> nn.Module:
    """Build the architecture ``name`` for ``spec``."""
    return architectures.get(name)(spec, **hparams)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
