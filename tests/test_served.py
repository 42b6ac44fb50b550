"""The registered model takes the user's data as they have it, per row: a study trains on a CSV
written here (whole numbers, gaps, the user's own column names), then the champion is called in a
fresh process on a test CSV read back with pandas, and through ``mlflow models predict -t csv``;
both work and agree with the test metrics the study printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import compose_cfg, config_datamodule, mlflow_models_predict

from archselect.run import run

pytestmark = pytest.mark.study  # every test here trains a real study

PREDICT = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
for csv, params, out in json.loads(sys.argv[2]):
    model.predict(pd.read_csv(csv), params=params).to_json(out, orient="records",
                                                           date_format="iso")
"""


def predict_fresh(store: str, uri: str, *requests: Path | tuple[Path, dict[str, Any]]
                  ) -> Any:
    """The model's answers to ``pandas.read_csv(csv)`` of each request (a file, or a file and
    the params of the call), all from one new Python process; one answer, or a list of them."""
    asked = [(r, None) if isinstance(r, Path) else r for r in requests]
    outs = [csv.with_suffix(f".out{i}.json") for i, (csv, _) in enumerate(asked)]
    calls = [(str(csv), params, str(out)) for (csv, params), out in zip(asked, outs, strict=True)]
    done = subprocess.run([sys.executable, "-c", PREDICT, uri, json.dumps(calls)],
                          env={**os.environ, "MLFLOW_TRACKING_URI": store}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [pd.DataFrame(json.loads(out.read_text())) for out in outs]
    return answers[0] if len(answers) == 1 else answers


def test_tabular_model_takes_whole_numbers_gaps_and_extra_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 360
    year = rng.integers(1990, 2020, n)                    # whole numbers: int64 for pandas
    rooms = rng.integers(1, 7, n).astype(float)
    rooms[::11] = np.nan                                  # whole numbers beside gaps: float64
    district = rng.choice(["north", "south", "east"], n).astype(object)
    district[::13] = None
    score = (year - 2005) / 8 + rooms.clip(0, 6) * 0.4 + (district == "north") * 1.5
    label = np.where(np.nan_to_num(score, nan=1.0) > 1.6, "dear", "cheap")
    train = tmp_path / "homes.csv"
    pd.DataFrame({"year": year, "rooms": rooms, "district": district, "price_band": label}
                 ).to_csv(train, index=False)
    cfg = compose_cfg(["task=tabular_classification", "data=csv", f"data.path={train}",
                       "data.target=price_band", "search.n_trials=2", "search.max_epochs=30",
                       "search.patience=30", "selector.candidates=[mlp]"], tmp_path / "runs")
    result = run(cfg)
    store, uri = str(cfg.tracking.uri), "models:/archselect-tabular_classification@champion"

    # The study's test split, as the user's own rows (target included: an extra column).
    test = config_datamodule(cfg, tmp_path / "cache").raw_rows("test")  # type: ignore[attr-defined]
    csv = tmp_path / "test.csv"
    test.to_csv(csv, index=False)
    read = pd.read_csv(csv)
    assert read["year"].dtype == np.int64 and read["rooms"].isna().any()
    # (and every class's probability on request: the top one stays as it was)
    served, both = predict_fresh(store, uri, csv, (csv, {"probabilities": "all"}))
    accuracy = float((served["label"] == read["price_band"]).mean())
    assert accuracy == pytest.approx(result.test_metrics["accuracy"], abs=1e-6)
    assert accuracy > result.baseline_metrics["accuracy"]
    cli = mlflow_models_predict(store, uri, csv)
    assert cli["label"].tolist() == served["label"].tolist()
    assert both["label"].tolist() == served["label"].tolist()
    probs = both[["proba_cheap", "proba_dear"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)

    import mlflow

    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(uri)
    # The input example is the user's own training rows; the signature names their columns.
    assert model.metadata.get_input_schema().input_names() == ["year", "rooms", "district"]
    with pytest.raises(Exception, match=r"lacks column\(s\) 'rooms' \(the model's features\)"):
        model.predict(read.drop(columns="rooms"))


@pytest.mark.parametrize("arch", ["fasttext", "sentence_embeddings"])
def test_text_model_reads_the_training_column_or_text(tmp_path: Path, text_csv: Path,
                                                      arch: str) -> None:
    """Each way of reading texts (fastText's n-grams; a frozen encoder's embeddings) is made
    again by the served model, in a fresh process, from the text as the user's file holds it."""
    frame = pd.read_csv(text_csv).rename(columns={"review": "quote", "stars": "mood"})
    frame.insert(1, "year", np.arange(len(frame)) % 30 + 1990)
    train = tmp_path / "quotes.csv"
    frame.to_csv(train, index=False)
    cfg = compose_cfg(["data=csv", f"data.path={train}", "data.text_column=quote",
                       "data.target=mood", "data.max_samples=null", "search.n_trials=1",
                       f"selector.candidates=[{arch}]", "search.max_epochs=8",
                       "search.patience=8"], tmp_path / "runs")
    result = run(cfg)
    store, uri = str(cfg.tracking.uri), "models:/archselect-text_classification@champion"
    test = config_datamodule(cfg, tmp_path / "cache").raw_rows("test")  # type: ignore[attr-defined]
    csv = tmp_path / "test.csv"
    test.to_csv(csv, index=False)
    # `text` is an alias of the training column's name.
    alias = tmp_path / "alias.csv"
    test.rename(columns={"quote": "text"}).to_csv(alias, index=False)
    served, by_alias = predict_fresh(store, uri, csv, alias)
    accuracy = float((served["label"] == test["mood"]).mean())
    assert accuracy == pytest.approx(result.test_metrics["accuracy"], abs=1e-6)
    assert accuracy > result.baseline_metrics["accuracy"]
    assert mlflow_models_predict(store, uri, csv)["label"].tolist() == served["label"].tolist()
    assert by_alias["label"].tolist() == served["label"].tolist()


def test_forecaster_reads_whole_numbers_and_the_time_column_and_names_future_times(
        tmp_path: Path) -> None:
    t = np.arange(120)
    sales = np.round(200 + 2 * t + 30 * np.sin(2 * np.pi * t / 12)).astype(int)
    months = pd.date_range("2010-01-01", periods=120, freq="MS").strftime("%Y-%m")
    train = tmp_path / "sales.csv"
    pd.DataFrame({"month": months, "units": sales}).to_csv(train, index=False)
    cfg = compose_cfg(["task=time_series_forecasting", "data=csv", f"data.path={train}",
                       "data.time_column=month", "data.target=units", "data.lookback=24",
                       "data.horizon=6", "search.n_trials=1", "search.max_epochs=40",
                       "search.patience=40", "selector.candidates=[mlp]",
                       # the network's way of reading a history (ETS's: tests/test_final.py)
                       "selector.register_references=false"], tmp_path / "runs")
    result = run(cfg)
    store, uri = str(cfg.tracking.uri), "models:/archselect-time_series_forecasting@champion"
    dm: Any = config_datamodule(cfg, tmp_path / "cache")
    dm.prepare()

    # Every test window: its history as the user's file holds it (read back with pandas), one
    # fresh process answering them all; their MAE is the study's test MAE.
    script = tmp_path / "windows.py"
    script.write_text(
        "import json, sys\nimport mlflow, numpy as np, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "history = pd.read_csv(sys.argv[2])\n"
        "outs = [model.predict(history.iloc[:o]) for o in json.loads(sys.argv[3])]\n"
        "json.dump([o['forecast'].tolist() for o in outs], open(sys.argv[4], 'w'))\n"
        "outs[-1].to_csv(sys.argv[5], index=False)\n")
    csv = tmp_path / "history.csv"
    dm.history(0, len(dm.values)).to_csv(csv, index=False)
    origins = [int(o) for o in dm.origins["test"]]
    done = subprocess.run([sys.executable, str(script), uri, str(csv), json.dumps(origins),
                           str(tmp_path / "f.json"), str(tmp_path / "last.csv")],
                          env={**os.environ, "MLFLOW_TRACKING_URI": store}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    forecasts = np.asarray(json.loads((tmp_path / "f.json").read_text()))
    truth = dm.values[np.asarray(origins)[:, None] + np.arange(6)[None, :], 0]
    assert float(np.abs(forecasts - truth).mean()) == pytest.approx(result.test_metrics["mae"],
                                                                    rel=1e-4)
    # The last window's answer names the six months after its history.
    last = pd.read_csv(tmp_path / "last.csv")
    assert list(last.columns) == ["step", "month", "forecast"]
    first_future = pd.Timestamp(dm.times[origins[-1]])
    assert pd.Timestamp(last["month"].iloc[0]) == first_future

    # `mlflow models predict` on a history file whose rows are out of time order: same answer.
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(csv).iloc[: origins[-1]].sample(frac=1, random_state=0).to_csv(shuffled,
                                                                               index=False)
    cli = mlflow_models_predict(store, uri, shuffled)
    assert np.allclose(cli["forecast"].to_numpy(), forecasts[-1], atol=1e-4)


def test_series_classifier_takes_integer_ids_and_rows_in_any_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for sid in range(80):
        label = "up" if sid % 2 else "down"
        trend = np.linspace(0, 1, 30) * (1 if label == "up" else -1)
        for step in range(30):
            rows.append({"sid": 1000 + sid, "t": step, "a": round(trend[step] + rng.normal(0, .2), 4),
                         "b": int(rng.integers(0, 5)), "label": label})
    train = tmp_path / "motions.csv"
    pd.DataFrame(rows).sample(frac=1, random_state=0).to_csv(train, index=False)
    cfg = compose_cfg(["task=time_series_classification", "data=csv", f"data.path={train}",
                       "data.id_column=sid", "data.time_column=t", "data.target=label",
                       "search.n_trials=1", "search.max_epochs=30", "search.patience=30",
                       "selector.candidates=[mlp]"], tmp_path / "runs")
    result = run(cfg)
    store, uri = (str(cfg.tracking.uri),
                  "models:/archselect-time_series_classification@champion")
    dm: Any = config_datamodule(cfg, tmp_path / "cache")
    dm.prepare()
    test = dm.raw_series(dm.ids["test"]).sample(frac=1, random_state=2)  # any row order
    csv = tmp_path / "test.csv"
    test.to_csv(csv, index=False)
    assert pd.read_csv(csv)["sid"].dtype == np.int64
    served = predict_fresh(store, uri, csv)
    assert list(served.columns) == ["sid", "label", "probability"]
    truth = dict(zip(dm.ids["test"], (dm.spec.class_names[i] for i in dm.y["test"]), strict=True))
    accuracy = float(np.mean([truth[str(s)] == lab for s, lab in zip(served["sid"],
                                                                       served["label"],
                                                                       strict=True)]))
    assert accuracy == pytest.approx(result.test_metrics["accuracy"], abs=1e-6)
    assert accuracy > result.baseline_metrics["accuracy"]
    cli = mlflow_models_predict(store, uri, csv)
    assert cli["label"].tolist() == served["label"].tolist()
