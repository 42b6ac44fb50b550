"""The model hand-off: the champion alias moves only to a better model on the same test split,
`mlflow models predict` serves it on raw rows, and the optional ONNX export matches PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import NETWORKS_ONLY, ONE_WORKER, config_datamodule
from mlflow.tracking import MlflowClient

from archselect.run import run

pytestmark = pytest.mark.study  # every test here trains a real study

MODEL = "archselect-tabular_classification"
IRIS = ["task=tabular_classification", "data=iris", ONE_WORKER, NETWORKS_ONLY, "search.n_trials=1"]
# One perceptron epoch at a tiny learning rate stays near chance; an MLP trained longer does not.
WEAK = [*IRIS, "selector.candidates=[perceptron]", "search.max_epochs=1",
        "arch.perceptron.optim.lr=1e-6", "arch.perceptron.space.lr.low=1e-7"]
STRONG = [*IRIS, "selector.candidates=[mlp]", "search.max_epochs=40", "search.patience=10"]


def test_champion_moves_only_to_a_better_model_on_the_same_split(make_cfg, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(store)

    def champion() -> str:
        return str(client.get_model_version_by_alias(MODEL, "champion").version)

    weak = run(make_cfg(*WEAK, "search.study_name=weak"))
    assert weak.model_version == 1 and champion() == "1"
    assert "the first champion" in weak.champion

    strong = run(make_cfg(*STRONG, "search.study_name=strong", "export.onnx=true"))
    assert strong.test_metrics["macro_f1"] > weak.test_metrics["macro_f1"] + 0.2
    assert strong.model_version == 2 and champion() == "2"
    assert "-> version 2" in strong.champion and "better than version 1" in strong.champion

    again = run(make_cfg(*WEAK, "search.study_name=weak-again"))
    assert again.model_version == 3 and champion() == "2"
    assert "stays on version 2" in again.champion and "not better" in again.champion
    parent = client.get_run(str(again.parent_run_id))
    assert parent.data.tags["archselect.champion"] == again.champion

    # Another seed is another split: not comparable, so the alias stays, and the line says so.
    other = run(make_cfg(*WEAK, "search.study_name=other-split", "seed=7"))
    assert other.model_version == 4 and champion() == "2"
    assert "not comparable" in other.champion
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["archselect.data_hash"] == strong.spec.data_hash
    assert float(tags["archselect.test_macro_f1"]) == strong.test_metrics["macro_f1"]

    # ONNX (export.onnx=true on the strong study): logged next to the pyfunc; onnxruntime on the
    # encoded test rows gives the test accuracy the PyTorch model got.
    cfg = make_cfg(*STRONG)
    dm = config_datamodule(cfg, tmp_path / "cache")
    dm.prepare()
    mlflow.set_tracking_uri(store)
    assert strong.onnx_uri and weak.onnx_uri is None
    onnx_model = mlflow.pyfunc.load_model(strong.onnx_uri)
    logits = onnx_model.predict({"x": dm.x["test"]})["output"]
    accuracy = float((np.asarray(logits).argmax(-1) == dm.y["test"]).mean())
    assert abs(accuracy - strong.test_metrics["accuracy"]) < 1e-6
    assert client.get_run(str(strong.parent_run_id)).data.metrics["onnx_max_abs_diff"] < 1e-4

    # `mlflow models predict` on the champion, from raw rows, in a fresh process.
    rows = dm.frames["test"].head(5)
    (tmp_path / "in.json").write_text(json.dumps({"dataframe_split": json.loads(
        rows.to_json(orient="split", index=False))}))
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mlflow")), "models", "predict",
         "-m", f"models:/{MODEL}@champion", "-i", "in.json", "-o", "out.json", "-t", "json",
         "--env-manager", "local"],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": store}, capture_output=True,
        text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    served = pd.DataFrame(json.loads((tmp_path / "out.json").read_text())["predictions"])
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/2").predict(rows)
    assert served["label"].tolist() == expected["label"].tolist()
    assert set(served["label"]) <= {"setosa", "versicolor", "virginica"}
