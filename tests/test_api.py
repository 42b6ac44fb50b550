"""The Python API: a study from a DataFrame in a notebook's way (``archselect.fit``), its
leaderboard and registered model, the selection as data, and the command's one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CHEAP


def frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Two whole-number columns, a text column with gaps, a label that depends on them."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    visits = rng.integers(0, 12, n)
    region = rng.choice(["north", "south", "east", None], n)
    churned = np.where(visits + (age > 50) * 4 + rng.normal(0, 1.5, n) > 7, "yes", "no")
    return pd.DataFrame({"age": age, "visits": visits, "region": region, "churned": churned})


def test_select_returns_the_selection_as_data_and_writes_no_store(tmp_path: Path) -> None:
    import archselect

    found = archselect.select("tabular_classification", frame(), target="churned",
                              runs_dir=tmp_path / "runs")
    assert found["candidates"][0]["name"] == "perceptron"
    assert found["monitor"] == "val_f1" and found["profile"]["samples"] == 240
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_a_mistake_raises_the_commands_one_line(tmp_path: Path) -> None:
    import archselect
    from archselect.config.errors import ArchselectError

    with pytest.raises(ArchselectError, match=r"data\.target: no such column"):
        archselect.select("tabular_classification", frame(), target="label",
                          runs_dir=tmp_path / "runs")
    with pytest.raises(ArchselectError, match=r"search\.n_trails: unknown key"):
        archselect.fit("tabular_classification", frame(), target="churned",
                       overrides=["search.n_trails=2"], runs_dir=tmp_path / "runs")


@pytest.mark.study
def test_fit_on_a_dataframe_gives_a_leaderboard_and_a_model_that_predicts(tmp_path: Path) -> None:
    import archselect

    result = archselect.fit("tabular_classification", frame(), target="churned",
                            overrides=[*CHEAP, "search.n_trials=2",
                                       "selector.rules.cross_validation.max_samples=0"],
                            runs_dir=tmp_path / "runs")
    board = result.leaderboard
    assert list(board.columns[:4]) == ["trial", "architecture", "state", "val_f1"]
    assert len(board) == 2 and board["val_f1"].is_monotonic_decreasing
    assert result.model_uri == "models:/archselect-tabular_classification/1"
    assert result.run_id and set(result.test_metrics) >= {"accuracy", "macro_f1"}
    new = frame(30, seed=1).drop(columns="churned")
    answer = result.predict(new)
    assert len(answer) == 30 and set(answer["label"]) <= {"yes", "no"}
