from __future__ import annotations

import optuna
import pytest

from archselect.config.errors import ConfigError
from archselect.space import parse_param, suggest


def test_ranges_translate_to_optuna_distributions() -> None:
    space = {
        "width": parse_param("width", {"type": "int", "low": 32, "high": 128, "step": 32}, "k.width"),
        "lr": parse_param("lr", {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, "k.lr"),
        "act": parse_param("act", {"type": "categorical", "choices": ["relu", "gelu"]}, "k.act"),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = suggest(trial, "mlp", space)
    assert values["width"] in (32, 64, 96, 128)
    assert 1e-4 <= values["lr"] <= 1e-2
    assert values["act"] in ("relu", "gelu")
    dists = trial.distributions
    assert isinstance(dists["mlp.width"], optuna.distributions.IntDistribution)
    assert dists["mlp.width"].step == 32
    assert isinstance(dists["mlp.lr"], optuna.distributions.FloatDistribution)
    assert dists["mlp.lr"].log
    assert isinstance(dists["mlp.act"], optuna.distributions.CategoricalDistribution)
    assert space["width"].describe() == "32..128 step 32"
    assert space["lr"].describe() == "0.0001..0.01 (log)"


@pytest.mark.parametrize(("spec", "pattern"), [
    ({"type": "int", "low": 5, "high": 1}, "k.low: is greater than high"),
    ({"type": "float", "low": 0, "high": 1, "log": True}, "k.low: must be > 0 for a log range"),
    ({"type": "normal", "low": 0, "high": 1}, "k.type: unknown range type"),
    ({"type": "categorical", "choices": []}, "k.choices: must be a non-empty list"),
    ({"type": "int", "low": 0.5, "high": 3}, "k.low: must be a whole number"),
    ({"type": "float", "low": "a", "high": 1}, "k.low: must be a number"),
    ({"type": "int", "low": 1, "high": 3, "choices": [1]}, "k.choices: not a field of a int range"),
    (7, "k: a search range must be a mapping"),
])
def test_bad_ranges_are_config_errors(spec: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse_param("p", spec, "k")
