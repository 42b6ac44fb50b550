"""The tabular rows: loaders, the Perceptron, and a short study per row on real data."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import datamodule

from archselect.config.errors import DataError
from archselect.run import run
from archselect.tasks.classification import ClassificationModule


def table_cfg(path: Path, target: str, **extra: object) -> dict[str, object]:
    return {"source": "file", "name": "csv", "path": str(path), "format": "auto",
            "target": target, "max_samples": None, "val_fraction": 0.2, "test_fraction": 0.2,
            **extra}


def mixed_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 200
    size = rng.normal(10, 3, n)
    colour = rng.choice(["red", "green", "blue"], n)
    label = np.where(size + (colour == "red") * 4 > 11, "big", "small")
    frame = pd.DataFrame({"size": size.round(3), "colour": colour, "label": label})
    frame.loc[::17, "size"] = np.nan  # missing numbers are imputed
    frame.loc[::23, "colour"] = None  # missing categories are a level of their own
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_csv_columns_are_detected_imputed_and_encoded(tmp_path: Path) -> None:
    dm = datamodule("tabular", table_cfg(mixed_csv(tmp_path), "label"), tmp_path)
    spec = dm.prepare()
    assert dm.numeric == ["size"] and dm.categorical == ["colour"]
    assert spec.class_names == ["big", "small"]
    assert spec.n_features == 1 + 4  # size + one-hot(red, green, blue, <missing>)
    assert not np.isnan(dm.x["train"]).any()
    assert abs(float(dm.x["train"][:, 0].mean())) < 1e-5  # standardised on the train split
    unseen = pd.DataFrame({"size": [9.0], "colour": ["purple"]})
    encoded = dm.preprocessor.transform(unseen)
    assert encoded.shape == (1, 5) and encoded[0, 1:].sum() == 0  # unseen level: all zeros
    assert spec.profile["missing_share"] > 0


def test_a_continuous_target_is_not_taken_for_classes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(300.0), "y": np.arange(300.0) * 1.5 + 0.25})
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"data.target: column 'y' looks continuous.*tabular_regression"):
        datamodule("tabular", table_cfg(tmp_path / "t.csv", "y"), tmp_path).prepare()


def test_perceptron_separates_a_linearly_separable_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (240, 2))
    keep = np.abs(x[:, 0] + 0.5 * x[:, 1]) > 0.1  # a margin around the boundary
    x = x[keep]
    label = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "up", "down")
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": label}).to_csv(tmp_path / "s.csv",
                                                                      index=False)
    dm = datamodule("tabular", table_cfg(tmp_path / "s.csv", "label"), tmp_path)
    spec = dm.for_trial(None, batch_size=16, num_workers=0)
    pl.seed_everything(0, verbose=False)
    module = ClassificationModule("perceptron", {}, {"lr": 0.05, "weight_decay": 0.0},
                                  spec.to_dict(), max_epochs=40)
    trainer = pl.Trainer(max_epochs=40, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    with torch.no_grad():
        preds = module(x=torch.as_tensor(dm.x["train"])).argmax(-1).numpy()
    assert (preds == dm.y["train"]).mean() == 1.0


def test_ready_rows_give_the_batches_a_row_by_row_loader_gives() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from archselect.data.base import ReadyRows, seeded_loader, stack_batch

    x, y = torch.randn(37, 3), torch.arange(37)
    ours = list(seeded_loader(ReadyRows(x, y), batch_size=8, shuffle=True, seed=3,
                              collate=stack_batch))
    rows = list(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                           generator=torch.Generator().manual_seed(3)))
    assert len(ours) == len(rows) == 5
    for batch, (xb, yb) in zip(ours, rows, strict=True):
        assert torch.equal(batch["inputs"]["x"], xb) and torch.equal(batch["target"], yb)
    pool = ReadyRows(x[:30], y[:30]) + ReadyRows(x[30:], y[30:])
    assert isinstance(pool, ReadyRows) and torch.equal(pool.tensors[1], y)


def test_epoch_values_are_means_over_rows_as_lightning_logs_them(tmp_path: Path) -> None:
    dm = datamodule("tabular", table_cfg(mixed_csv(tmp_path), "label"), tmp_path)
    spec = dm.for_trial(None, batch_size=16, num_workers=0)  # 40 val rows: 16 + 16 + 8
    pl.seed_everything(0, verbose=False)
    module = ClassificationModule("mlp", {"hidden_size": 16, "depth": 1, "activation": "relu",
                                          "dropout": 0.0},
                                  {"lr": 0.01, "weight_decay": 0.0}, spec.to_dict(),
                                  max_epochs=2)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    x, y = torch.as_tensor(dm.x["val"]), torch.as_tensor(dm.y["val"])
    assert len(y) % 16
    module.eval()
    with torch.no_grad():
        logits = module(x=x)
    logged = trainer.callback_metrics
    assert float(logged["val_loss"]) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y)), abs=1e-5)
    assert float(logged["val_acc"]) == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    assert set(module.epoch_values("train")) == {"train_loss", "train_acc"}
    assert 0.0 < float(module.epoch_values("train")["train_acc"]) <= 1.0


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_blocks_of_batches_take_the_same_optimiser_steps_as_single_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schedule: str) -> None:
    # A table trains BLOCK batches per Lightning step (manual optimisation): the same steps,
    # clipping and schedule as one batch per Lightning step. One epoch: the same weights (later
    # epochs shuffle from another draw of the seeded generator); three: the same schedule.
    from archselect.hardware import HardwareProfile
    from archselect.search import fit as fitting

    monkeypatch.setattr(fitting, "BLOCK", 4)
    settings = fitting.TrialSettings(
        n_trials=1, patience=3, seed=0, trial_timeout=None, monitor="val_f1", mode="max",
        devices=1, deterministic=False, gradient_clip_val=0.05, num_workers=0,
        progress_bar=False, limit_train_batches=None, checkpoints=tmp_path)
    hw = HardwareProfile(cpu_cores=1, torch_threads=1, memory_gb=1.0)
    for epochs in (1, 3):
        config = fitting.Configuration(
            arch="mlp", model={"hidden_size": 16, "depth": 1, "activation": "relu",
                               "dropout": 0.2},
            optim={"lr": 0.01, "weight_decay": 0.01, "schedule": schedule}, data={},
            option=None, max_epochs=epochs)
        done = []
        for blocks in (False, True):
            dm = datamodule("tabular", table_cfg(mixed_csv(tmp_path), "label"), tmp_path)
            dm.blocks = blocks
            done.append(fitting.fit(config, dm=dm, view=None, settings=settings, hw=hw,
                                    family_cls=ClassificationModule,
                                    folder=tmp_path / f"{blocks}{epochs}", seed=0, batch_size=8))
            assert dm.block == 1  # back to plain batches after the fit
        plain, blocked = done
        batches = plain.trainer.num_training_batches
        assert batches > 4 and batches % 4  # several blocks, the last one shorter
        assert blocked.trainer.num_training_batches == -(-batches // 4)
        assert plain.trainer.global_step == blocked.trainer.global_step == epochs * batches
        assert not blocked.module.automatic_optimization
        lrs = [f.trainer.optimizers[0].param_groups[0]["lr"] for f in done]
        assert lrs[0] == pytest.approx(lrs[1]) and lrs[0] < 0.01  # the schedule moved alike
        if epochs == 1:
            for name, value in plain.module.state_dict().items():
                assert torch.allclose(value, blocked.module.state_dict()[name], atol=1e-6), name


@pytest.mark.study
def test_tabular_classification_study_and_served_model(make_cfg, tmp_path: Path) -> None:
    result = run(make_cfg("task=tabular_classification", "data=iris", "search.n_trials=3",
                          "search.max_epochs=25", "search.patience=25"))
    archs = {r.arch for r in result.outcome.records}
    assert archs >= {"perceptron", "mlp"}
    assert result.test_metrics["accuracy"] > result.baseline_metrics["accuracy"] + 0.3
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/archselect-tabular_classification/1")
    from sklearn.datasets import load_iris

    raw = load_iris(as_frame=True).frame.drop(columns="target").iloc[[0, 75, 149]]
    out = model.predict(raw)
    assert set(out["label"]) <= {"setosa", "versicolor", "virginica"}
    assert out["label"].iloc[0] == "setosa"


@pytest.mark.study
def test_tabular_regression_study_reports_rmse_mae_r2(make_cfg, tmp_path: Path) -> None:
    result = run(make_cfg("task=tabular_regression", "search.n_trials=2", "search.max_epochs=30"))
    assert set(result.test_metrics) == {"rmse", "mae", "r2"}
    assert result.baseline_name == "mean predictor"
    assert result.test_metrics["rmse"] < result.baseline_metrics["rmse"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert result.parent_run_id
    plots = {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert "plots/predicted_vs_actual.png" in plots
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/archselect-tabular_regression/1")
    from sklearn.datasets import load_diabetes

    out = model.predict(load_diabetes(as_frame=True).frame.drop(columns="target").head(4))
    assert list(out.columns) == ["prediction"] and out["prediction"].between(0, 500).all()


@pytest.mark.study
def test_a_continuous_target_selects_the_regression_row_by_itself(make_cfg,
                                                                   tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(240, 3))
    y = x @ np.array([3.0, -2.0, 0.5]) + rng.normal(scale=0.3, size=240) + 10
    path = tmp_path / "prices.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "price": y.round(3)}).to_csv(
        path, index=False)
    result = run(make_cfg("task=tabular_classification", "data=csv", f"data.path={path}",
                          "data.target=price", "search.n_trials=2", "search.max_epochs=20"))
    assert result.selection.task.name == "tabular_regression"
    assert result.study_name == "tabular_regression-csv-prices"  # the file's name in it
    assert result.selection.notes[0].startswith("tabular_classification -> tabular_regression")
    assert set(result.test_metrics) == {"rmse", "mae", "r2"}
    assert result.test_metrics["rmse"] < result.baseline_metrics["rmse"]
