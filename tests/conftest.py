"""Shared fixtures: compose the real config with cheap overrides into a per-test tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module

import archselect.config.schema  # noqa: F401  (registers the schema)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # tests never touch the network

# Small and fast, but real: the built-in data, real stores, real training.
TEXT_ONLY = ["data.max_samples=450", "data.vocab_size=2000"]
CHEAP = [
    "search.max_epochs=2",
    "search.patience=1",
    "trainer.progress_bar=false",
    "selector.rules.small_data.min_train_samples=50",
    "arch.lstm.model.hidden_size=32",
    "arch.lstm.model.embed_dim=32",
    "arch.lstm.space.hidden_size.low=32",
    "arch.lstm.space.hidden_size.high=64",
    "arch.lstm.space.hidden_size.step=32",
    "arch.lstm.space.embed_dim.choices=[32,64]",
    "arch.transformer.model.d_model=32",
    "arch.transformer.model.dim_feedforward=64",
    "arch.transformer.space.d_model.choices=[32,64]",
]


def compose_cfg(overrides: list[str], tmp_path: Path, cheap: bool = True) -> Any:
    """The real config, composed as the CLI would, with stores under ``tmp_path``."""
    with initialize_config_module("archselect.conf", version_base="1.3"):
        text = not any(o.startswith("task=") and o != "task=text_classification"
                       for o in overrides)
        base = ([*CHEAP, *TEXT_ONLY] if text else CHEAP) if cheap else []
        return compose("config", overrides=[*base, f"runs_dir={tmp_path}", *overrides])


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Any]:
    def make(*overrides: str, cheap: bool = True) -> Any:
        return compose_cfg(list(overrides), tmp_path, cheap=cheap)

    return make


@pytest.fixture
def text_csv(tmp_path: Path) -> Path:
    """A small review CSV written by the test: two classes, with clear word cues."""
    import random

    rng = random.Random(0)
    good = ["great", "wonderful", "moving", "superb", "delightful", "brilliant"]
    bad = ["dull", "awful", "boring", "tedious", "clumsy", "dreadful"]
    filler = ["the", "film", "plot", "acting", "story", "was", "really", "quite", "and", "cast"]
    rows = ["review,stars"]
    for i in range(240):
        cue = good if i % 2 else bad
        words = rng.sample(filler, 5) + rng.sample(cue, 2)
        rng.shuffle(words)
        rows.append(f"\"{' '.join(words)}\",{'pos' if i % 2 else 'neg'}")
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    return path
