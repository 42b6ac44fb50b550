"""YAML ranges -> ``trial.suggest_*`` calls, checked before any study exists."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from archselect.config.errors import ConfigError

KINDS = ("int", "float", "categorical")


@dataclass(frozen=True)
class Param:
    """One searchable hyperparameter."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        """Short human-readable range, e.g. ``64..256 step 64`` or ``{32, 64}``."""
        if self.kind == "categorical":
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        text = f"{self.low:g}..{self.high:g}"
        if self.step:
            text += f" step {self.step:g}"
        if self.log:
            text += " (log)"
        return text

    def capped(self, cap: float) -> Param:
        """This range without the values above ``cap`` (at least its lowest value stays)."""
        from dataclasses import replace

        if self.kind == "categorical":
            kept = tuple(c for c in self.choices if c <= cap) or (min(self.choices),)
            return replace(self, choices=kept)
        assert self.low is not None and self.high is not None
        return replace(self, high=max(min(self.high, cap), self.low))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this range."""
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high


def parse_param(name: str, spec: Any, key: str) -> Param:
    """Check one YAML range and turn it into a Param.

    Raises:
        ConfigError: for an unknown type, low > high, a non-positive low with log, empty choices.
    """
    if not isinstance(spec, dict):
        raise ConfigError(key, "a search range must be a mapping", given=spec,
                          allowed="{type: int|float|categorical, low, high, ...}")
    kind = spec.get("type")
    if kind not in KINDS:
        raise ConfigError(f"{key}.type", "unknown range type", given=kind, allowed=KINDS)
    allowed = {"int": {"type", "low", "high", "step", "log"},
               "float": {"type", "low", "high", "step", "log"},
               "categorical": {"type", "choices"}}[kind]
    for extra in sorted(set(spec) - allowed):
        raise ConfigError(f"{key}.{extra}", f"not a field of a {kind} range", given=extra,
                          allowed=allowed)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise ConfigError(f"{key}.choices", "must be a non-empty list", given=choices)
        return Param(name, kind, choices=tuple(choices))
    for field_ in ("low", "high"):
        v = spec.get(field_)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{key}.{field_}", "must be a number", given=v)
        if kind == "int" and not float(v).is_integer():
            raise ConfigError(f"{key}.{field_}", "must be a whole number for an int range",
                              given=v)
    low, high = spec["low"], spec["high"]
    if low > high:
        raise ConfigError(f"{key}.low", f"is greater than high ({high})", given=low,
                          fix="swap low and high")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{key}.low", "must be > 0 for a log range", given=low)
    step = spec.get("step")
    if step is not None and (not isinstance(step, int | float) or step <= 0):
        raise ConfigError(f"{key}.step", "must be a positive number", given=step)
    if step is not None and log:
        raise ConfigError(f"{key}.step", "cannot be combined with log: true", given=step)
    return Param(name, kind, low=low, high=high, step=step, log=log)


def suggest(trial: optuna.Trial, prefix: str, space: dict[str, Param]) -> dict[str, Any]:
    """Ask the trial for every parameter of ``space``; names are ``<prefix>.<param>``."""
    values: dict[str, Any] = {}
    for name, p in space.items():
        full = f"{prefix}.{name}"
        if p.kind == "categorical":
            values[name] = trial.suggest_categorical(full, list(p.choices))
        elif p.kind == "int":
            assert p.low is not None and p.high is not None
            values[name] = trial.suggest_int(full, int(p.low), int(p.high),
                                             step=int(p.step or 1), log=p.log)
        else:
            assert p.low is not None and p.high is not None
            values[name] = trial.suggest_float(full, float(p.low), float(p.high), step=p.step,
                                               log=p.log)
    return values
