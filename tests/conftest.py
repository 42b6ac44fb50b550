"""Shared fixtures: compose the real config with cheap overrides into a per-test tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import compose_cfg

# One torch thread per test process (and per command a test starts): the suite runs one process
# per core, and on 2 busy cores two threads each make small models several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
