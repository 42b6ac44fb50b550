"""The time series rows: loaders, windowing without leakage, seasonal naive, selection rules, and a
short study per row on the built-in sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import config_datamodule, datamodule, select_for

from archselect.config.errors import ConfigError, DataError
from archselect.data.series import seasonal_naive
from archselect.data.timeindex import detect_season
from archselect.run import run

SERIES_KEYS = {"time_column": "month", "time_format": None, "covariates": None, "lookback": 12,
               "horizon": 6, "stride": 1, "season_length": None, "resample": None,
               "fill_missing": "none", "normalise": "window", "max_samples": None,
               "val_fraction": 0.15, "test_fraction": 0.15}


def series_cfg(path: Path, **extra: Any) -> dict[str, Any]:
    return {"source": "file", "name": "csv", "path": str(path), "format": "auto",
            "target": "sales", **SERIES_KEYS, **extra}


def monthly_csv(tmp_path: Path, n: int = 120, drop: tuple[int, ...] = (),
                covariate: bool = True) -> Path:
    """Monthly sales with a trend and a yearly season; every value distinct."""
    t = np.arange(n)
    frame = pd.DataFrame({
        "month": pd.date_range("2010-01-01", periods=n, freq="MS").strftime("%Y-%m-%d"),
        "sales": (100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12) + t * 1e-3).round(6),
    })
    if covariate:
        frame["price"] = (5 + np.cos(2 * np.pi * t / 12)).round(6)
    frame = frame.drop(index=list(drop))
    path = tmp_path / "sales.csv"
    frame.to_csv(path, index=False)
    return path


def test_windows_never_read_later_spans_in_training(tmp_path: Path) -> None:
    dm = datamodule("series", series_cfg(monthly_csv(tmp_path), normalise="global"), tmp_path)
    spec = dm.prepare()
    assert spec.input_shape == [12, 2] and spec.horizon == 6
    a_val, _ = dm.bounds["val"]
    a_test, b_test = dm.bounds["test"]
    assert 0 < a_val < a_test < b_test == 120  # chronological spans, in order
    later = set(np.round(dm.values[a_val:, 0], 4))  # every value of the val and test spans
    dm.for_trial(None, batch_size=16, num_workers=0)
    seen: set[float] = set()
    for batch in dm.train_dataloader():
        x = batch["inputs"]["x"][..., 0] * spec.target_std + spec.target_mean  # back to units
        y = batch["target"] * spec.target_std + batch["offset"][:, None]
        seen |= set(np.round(torch.cat([x.flatten(), y.flatten()]).double().numpy(), 4))
    assert seen and not (seen & later), "a training batch read a value of a later span"
    # Scaling statistics are the training span's alone.
    assert spec.target_mean == pytest.approx(dm.values[:a_val, 0].mean())
    # The test windows' targets are exactly the test span, origin by origin.
    targets = dm.targets("test")
    assert targets.shape == (len(dm.origins["test"]), 6)
    assert float(targets[0, 0]) == pytest.approx(dm.values[a_test, 0], rel=1e-6)


def test_window_scaling_round_trips_to_the_series(tmp_path: Path) -> None:
    dm = datamodule("series", series_cfg(monthly_csv(tmp_path)), tmp_path)
    spec = dm.prepare()
    dm.for_trial(None, batch_size=8, num_workers=0)
    batch = next(iter(dm.test_dataloader()))
    units = batch["target"] * spec.target_std + batch["offset"][:, None]
    assert torch.allclose(units, dm.targets("test")[:8], atol=1e-3)
    # window mode: the last input step of the target channel is 0 (scaled around itself)
    assert torch.allclose(batch["inputs"]["x"][:, -1, 0], torch.zeros(8), atol=1e-6)


def test_a_gap_in_timestamps_is_reported_not_filled_unless_asked(tmp_path: Path) -> None:
    path = monthly_csv(tmp_path, drop=(30, 31))
    with pytest.raises(DataError, match=r"2 time step\(s\) missing from 'month' \(first "
                       r"2012-07-01, grid MS\).*data.fill_missing=interpolate"):
        datamodule("series", series_cfg(path), tmp_path).prepare()
    dm = datamodule("series", series_cfg(path, fill_missing="interpolate"), tmp_path)
    spec = dm.prepare()
    assert spec.profile["length"] == 120
    assert any("2 missing time step(s)" in n for n in spec.profile["notes"])
    assert np.isfinite(dm.values).all()


def test_irregular_or_duplicate_times_are_clear_errors(tmp_path: Path) -> None:
    days = pd.to_datetime("2020-01-01") + pd.to_timedelta(np.cumsum([1, 2, 5, 1, 3] * 30), "D")
    frame = pd.DataFrame({"month": days.strftime("%Y-%m-%d"), "sales": np.arange(150.0)})
    frame.to_csv(tmp_path / "irr.csv", index=False)
    with pytest.raises(DataError, match=r"irregular.*data\.resample"):
        datamodule("series", series_cfg(tmp_path / "irr.csv"), tmp_path).prepare()
    dm = datamodule("series", series_cfg(tmp_path / "irr.csv", resample="W",
                                         fill_missing="ffill"), tmp_path)
    assert dm.prepare().profile["frequency"].startswith("W")
    dup = pd.concat([frame.iloc[:1], frame])
    dup.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="appears more than once"):
        datamodule("series", series_cfg(tmp_path / "dup.csv"), tmp_path).prepare()


def test_bad_window_settings_say_which_key(tmp_path: Path) -> None:
    path = monthly_csv(tmp_path, n=60)
    with pytest.raises(DataError, match=r"data\.horizon=12"):
        datamodule("series", series_cfg(path, horizon=12, lookback=6), tmp_path).prepare()
    with pytest.raises(ConfigError, match=r"data\.covariates"):
        datamodule("series", series_cfg(path, covariates=["nope"]), tmp_path).prepare()
    with pytest.raises(ConfigError, match=r"data\.lookback"):
        datamodule("series", series_cfg(path, lookback=0), tmp_path).prepare()


def test_seasonal_naive_and_season_detection() -> None:
    t = np.arange(240)
    values = (10 * np.sin(2 * np.pi * t / 12))[:, None]
    assert detect_season(values[:, 0], "MS") == 12
    origins = np.array([100, 150])
    naive = seasonal_naive(values, origins, horizon=18, season=12)
    truth = values[origins[:, None] + np.arange(18)[None, :], 0]
    assert np.allclose(naive, truth)  # a purely seasonal series is its own seasonal naive
    # Steps beyond one season look back two seasons, never at the future.
    # origin 30: steps 0..11 read 18..29 (one season back), steps 12, 13 read 18, 19 (two)
    assert seasonal_naive(np.arange(50.0)[:, None], np.array([30]), 14, 12).tolist() == [
        [*range(18, 30), 18, 19]]


def long_csv(tmp_path: Path, *, two_labels: bool = False) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        label = "up" if i % 2 else "down"
        n = 30 + (i % 3) * 5  # unequal lengths: 30, 35, 40
        trend = np.linspace(0, 1, n) * (1 if label == "up" else -1)
        for step in range(n):
            rows.append({"series_id": f"s{i}", "t": step, "a": trend[step] + rng.normal(0, 0.1),
                         "b": rng.normal(), "label": label if not (two_labels and i == 2 and
                                                                  step == 5) else "up"})
    path = tmp_path / "long.csv"
    pd.DataFrame(rows).sample(frac=1, random_state=0).to_csv(path, index=False)  # any row order
    return path


def seq_cfg(path: Path, **extra: Any) -> dict[str, Any]:
    return {"source": "file", "name": "csv", "path": str(path), "format": "auto", "target": "label",
            "id_column": "series_id", "time_column": "t", "max_length": None, "fill_missing": "none",
            "max_samples": None, "val_fraction": 0.2, "test_fraction": 0.2, **extra}


def test_long_format_csv_becomes_equal_length_series(tmp_path: Path) -> None:
    dm = datamodule("sequences", seq_cfg(long_csv(tmp_path)), tmp_path)
    spec = dm.prepare()
    assert spec.input_shape == [40, 2] and spec.class_names == ["down", "up"]
    assert dm.channels == ["a", "b"]
    assert spec.profile["length"] == {"min": 30, "median": 35, "max": 40, "used": 40}
    assert sum(spec.profile["splits"].values()) == 60
    # Rows were shuffled in the file: each series is put back in time order.
    s0 = dm.x["train"][0, :30, 0]
    assert abs(np.corrcoef(np.arange(30), s0)[0, 1]) > 0.8
    with pytest.raises(DataError, match="more than one label"):
        datamodule("sequences", seq_cfg(long_csv(tmp_path, two_labels=True)), tmp_path).prepare()
    with pytest.raises(ConfigError, match=r"data\.id_column"):
        datamodule("sequences", seq_cfg(long_csv(tmp_path), id_column="sid"), tmp_path).prepare()


def test_rules_drop_or_cap_the_transformer(make_cfg) -> None:
    cfg = make_cfg("task=time_series_classification", "data=arrow_head",
                   "selector.rules.few_windows.min_train_samples=10")
    spec = config_datamodule(cfg, "/tmp").prepare()
    sel = select_for(cfg, spec)
    tr = next(c for c in sel.candidates if c.name == "series_transformer")
    assert tr.model["patch_size"] == 4 and "patch_size" not in tr.space  # 251 steps -> 63 tokens
    assert any("capped at 64 tokens" in r for r in tr.reasons)
    cfg = make_cfg("task=time_series_classification", "data=arrow_head")
    sel = select_for(cfg, spec)
    assert "series_transformer" in sel.dropped and "training series" in sel.dropped[
        "series_transformer"]
    mlp = sel.candidates[0]
    assert mlp.name == "mlp" and max(mlp.space["hidden_size"].choices) == 64
    assert mlp.space["depth"].high == 2 and any("small data, small model" in r for r in mlp.reasons)


@pytest.mark.study
def test_forecasting_study_on_airline_beats_nothing_silently(make_cfg) -> None:
    cfg = make_cfg("task=time_series_forecasting", "data=airline", "search.n_trials=2",
                   "search.max_epochs=3", "search.enqueue_baselines=true")
    result = run(cfg)
    assert result.outcome is not None and result.outcome.best is not None
    assert set(result.test_metrics) == {"mae", "rmse", "smape", "mase", "rel_mae"}
    assert result.baseline_name.startswith("seasonal naive (season 12)")
    # rel_mae scales by seasonal naive on the test windows; MASE by the training span's own
    # seasonal differences (the classic scale), so seasonal naive's MASE is not 1 by definition
    assert result.baseline_metrics["rel_mae"] == pytest.approx(1.0)
    profile = result.spec.profile
    assert result.baseline_metrics["mase"] == pytest.approx(
        profile["seasonal_naive_test_mae"] / profile["mase_scale_insample"], rel=1e-4)
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.parent_run_id, "plots")}
    assert "plots/forecast.png" in arts
    model = mlflow.pyfunc.load_model(str(result.model_uri))
    frame = pd.DataFrame({"Passengers": np.linspace(300, 450, 30)})
    out = model.predict(frame)
    assert list(out.columns) == ["step", "forecast"] and len(out) == 12
    assert np.isfinite(out["forecast"]).all()


@pytest.mark.study
def test_classification_study_on_basic_motions(make_cfg) -> None:
    cfg = make_cfg("task=time_series_classification", "data=basic_motions", "search.n_trials=2",
                   "search.max_epochs=30", "search.patience=30",
                   "selector.candidates=[mlp,series_lstm]")
    result = run(cfg)
    assert set(result.test_metrics) == {"accuracy", "macro_f1"}
    # Four balanced classes (majority 0.25); the LSTM reached 0.85 here.
    assert result.test_metrics["accuracy"] > result.baseline_metrics["accuracy"] + 0.3
    assert result.spec.input_shape == [100, 6]
    model = mlflow.pyfunc.load_model(str(result.model_uri))
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 6)), columns=[f"dim_{i}" for i in range(6)])
    frame.insert(0, "series_id", ["x"] * 100 + ["y"] * 100)
    out = model.predict(frame)
    assert list(out["series_id"]) == ["x", "y"]
    assert set(out["label"]) <= {"Badminton", "Running", "Standing", "Walking"}


@pytest.mark.parametrize("arch,kw", [
    ("mlp", {"hidden_size": 16, "depth": 1, "activation": "relu", "dropout": 0.0}),
    ("series_lstm", {"hidden_size": 8, "num_layers": 1, "dropout": 0.0, "bidirectional": True}),
    ("series_transformer", {"d_model": 16, "nhead": 2, "num_layers": 1, "dropout": 0.0,
                            "patch_size": 3}),
])
def test_series_models_export_to_onnx(tmp_path: Path, arch: str, kw: dict[str, Any]) -> None:
    from archselect.export import export_onnx
    from archselect.tasks.forecasting import ForecastingModule

    dm = datamodule("series", series_cfg(monthly_csv(tmp_path)), tmp_path)
    spec = dm.for_trial(None, batch_size=8, num_workers=0)
    module = ForecastingModule(arch, kw, {"lr": 1e-3, "weight_decay": 0.0}, spec.to_dict(), 1)
    inputs = next(iter(dm.test_dataloader()))["inputs"]
    done = export_onnx(module.eval(), inputs, tmp_path / "m.onnx", 1e-4)
    assert done.max_abs_diff < 1e-4 and done.output.shape[1] == 6
