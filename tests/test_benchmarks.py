"""The benchmarks under benchmarks/ run for real on tiny settings and their report renders."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TABULAR = ["task=tabular_classification", "data=iris", "selector.candidates=[mlp]"]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, ModuleType]:
    """The benchmark modules, writing their JSON under tmp_path."""
    monkeypatch.syspath_prepend(str(BENCH))
    mods = {name: importlib.import_module(name) for name in
            ("benchlib", "overhead", "bookkeeping", "quality", "report")}
    monkeypatch.setattr(mods["benchlib"], "RESULTS", tmp_path / "results")
    return mods


@pytest.mark.study
def test_overhead_runs_both_paths_and_the_report_shows_them(bench: dict[str, ModuleType],
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench["overhead"].ROWS, "tabular", {"overrides": TABULAR, "epochs": 3})
    monkeypatch.setattr(sys, "argv", ["overhead.py", "--reps", "1", "--rows", "tabular",
                                      "--no-profile"])
    bench["overhead"].main()
    data = json.loads((tmp_path / "results" / "overhead.json").read_text())
    row = data["rows"]["tabular"]
    assert row["epochs"] == 3 and row["arch"] == "mlp"
    assert row["archselect_samples_per_s"] > 0 and row["plain_samples_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["archselect_samples_per_s"] / row["plain_samples_per_s"],
                                         rel=0.05)
    assert data["machine"]["torch_threads"] >= 1 and len(data["machine"]["load_average"]) == 3
    out = tmp_path / "RESULTS.md"
    bench["report"].main(tmp_path / "results", out)
    text = out.read_text()
    assert "| tabular | mlp | 3 |" in text
    assert "## 4. Pruning\n\nNot run yet" in text


@pytest.mark.study
def test_bookkeeping_parts_add_up_to_the_study(bench: dict[str, ModuleType]) -> None:
    mod = bench["bookkeeping"]
    probe, result = mod.probe_study([*TABULAR, "search.n_trials=2", "search.max_epochs=2",
                                     "tracking.register=false"])
    assert len(result.outcome.records) == 2
    row = mod.breakdown(probe, 2)
    parts = row["per_trial_s"]
    assert all(v >= 0 for v in parts.values()), parts
    assert sum(parts.values()) == pytest.approx(row["trial_s"], rel=0.02, abs=0.01)
    assert parts["mlflow"] > 0 and parts["optuna"] > 0 and parts["checkpoint"] > 0
    assert row["mlflow_calls_per_trial"] >= 4  # start, params, per-epoch metrics, end


def test_quality_lists_unavailable_rows_with_their_reason(bench: dict[str, ModuleType]) -> None:
    quality = bench["quality"]
    assert quality.available(["task=tabular_classification"]) is None
    off = "selector.table.audio_classification.available=false"  # every row is built
    reason = quality.available(["task=audio_classification", off])
    assert reason is not None and "audio_classification" in reason


def test_classical_baseline_is_picked_on_validation(bench: dict[str, ModuleType]) -> None:
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    order = list(range(0, 150, 3)), list(range(1, 150, 3)), list(range(2, 150, 3))
    xs = dict(zip(("train", "val", "test"), (x[i] for i in order), strict=True))
    ys = dict(zip(("train", "val", "test"), (y[i] for i in order), strict=True))
    preds = bench["benchlib"].best_on_val(
        [DummyClassifier(), LogisticRegression(max_iter=500)], xs, ys)
    assert (preds == ys["test"]).mean() > 0.9
