"""The real command in a subprocess: exit codes, one-line errors, Hydra multirun."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers import archselect, one_error_line

CHEAP = ["trainer.progress_bar=false", "search.max_epochs=1", "data.vocab_size=500",
         "data.min_frequency=1", "selector.candidates=[fasttext]"]


@pytest.mark.parametrize(("args", "expected"), [
    (["search.n_trails=3"], "search.n_trails: unknown key"),
    (["-m", "search.n_trails=2,4"], "search.n_trails: unknown key"),
    (["task=text_clasification"], "did you mean 'text_classification'"),
    # every row is built; a row switched off in the table is what an unbuilt one looks like
    (["task=audio_classification", "selector.table.audio_classification.available=false"],
     "not available yet"),
    (["selector.candidates=[lstm,resnt]"], "selector.candidates: unknown architecture 'resnt'"),
    (["output=jsn"], "output: unknown output mode; given 'jsn'; expected one of: json, quiet, "
                     "text (did you mean 'json'?)"),
    (["data=csv", "data.path=nope.csv"], "data.path: file not found; given 'nope.csv'"),
    (["data=csv", "data.path=reviews.csv", "data.target=label"],
     "data.target: no such column in the data; given 'label'; expected one of: review, stars"),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path: Path, text_csv: Path,
                                                    args: list[str], expected: str) -> None:
    proc = archselect(*args, f"runs_dir={tmp_path / 'runs'}", "data.text_column=review"
                      if "data=csv" in args else "seed=42", cwd=tmp_path)
    line = one_error_line(proc)
    assert line.startswith("archselect: error: ")
    assert expected in line
    runs = tmp_path / "runs"
    assert not (runs / "optuna.db").exists() and not (runs / "mlflow.db").exists()


@pytest.mark.study
def test_csv_study_via_hydra_multirun_one_study_per_job(tmp_path: Path, text_csv: Path) -> None:
    proc = archselect("-m", "data=csv", f"data.path={text_csv}", "data.text_column=review",
                      "data.target=stars", f"runs_dir={tmp_path / 'runs'}", *CHEAP,
                      "search.n_trials=1,2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Leaderboard" in proc.stdout
    assert "Model registered as archselect-text_classification" in " ".join(proc.stdout.split())
    # each job's header names its study, overrides and all
    assert "study text_classification-csv-reviews[search.n_trials=2]" in proc.stdout
    storage = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    names = sorted(optuna.study.get_all_study_names(storage))
    assert names == ["text_classification-csv-reviews[search.n_trials=1]",
                     "text_classification-csv-reviews[search.n_trials=2]"]
    counts = [len(optuna.load_study(study_name=n, storage=storage).trials) for n in names]
    assert counts == [1, 2]


@pytest.mark.study
def test_a_failing_multirun_job_does_not_stop_the_sweep(tmp_path: Path, text_csv: Path) -> None:
    # Job 0 asks for too few rows (a clear error); job 1 runs.
    proc = archselect("-m", "data=csv", f"data.path={text_csv}", "data.text_column=review",
                      "data.target=stars", f"runs_dir={tmp_path / 'runs'}", *CHEAP,
                      "search.n_trials=1", "data.max_samples=10,200", cwd=tmp_path)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("archselect: error")]
    assert errors[0].startswith("archselect: error: job 0 [data.max_samples=10]: "
                                "data.max_samples: too few rows")
    assert errors[-1] == "archselect: error: 1 multirun job(s) failed: 0"
    storage = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    assert optuna.study.get_all_study_names(storage) == [
        "text_classification-csv-reviews[data.max_samples=200]"]


def test_version_names_archselect_and_its_stack(tmp_path: Path) -> None:
    proc = archselect("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("archselect 0.1.0 (torch ") and "lightning" in line and "Hydra" not in line


def test_help_is_written_for_people_and_answers_at_once(tmp_path: Path) -> None:
    proc = archselect("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("usage: archselect") and "powered by Hydra" not in text
    assert "  image_generation " in text and "vae, dcgan, ddpm" in text
    assert "search.n_trials" in text and "dry_run=true" in text and "@champion" in text


IRIS_QUICK = ["task=tabular_classification", "data=iris", "search.n_trials=2",
              "search.max_epochs=2", "search.n_workers=1", "selector.references=false",
              "search.refit=false"]


@pytest.mark.study
def test_output_json_is_one_object_and_quiet_one_line(tmp_path: Path) -> None:
    import json

    import mlflow

    proc = archselect(*IRIS_QUICK, "output=json", f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)  # the whole of stdout: one JSON object, nothing else
    assert summary["task"] == "tabular_classification" and summary["dry_run"] is False
    assert summary["trials"] == {"COMPLETE": 2} and summary["stopped_by"] == "search.n_trials"
    assert set(summary["test_metrics"]) >= {"accuracy", "macro_f1"}
    assert summary["model_uri"] == "models:/archselect-tabular_classification/1"
    assert summary["tracking_uri"] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = mlflow.MlflowClient(summary["tracking_uri"])
    assert client.get_run(summary["parent_run_id"]).info.status == "FINISHED"
    # MLflow's own lines went to the study's log file, not the terminal
    log = Path(summary["log_file"])
    assert log.parent == tmp_path / "runs" / "logs"
    assert "Created version '1' of model 'archselect-tabular_classification'" in log.read_text()
    assert "Created version" not in proc.stdout + proc.stderr

    quiet = archselect(*IRIS_QUICK, "output=quiet", "search.study_name=q",
                       f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    lines = quiet.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Done in"), quiet.stdout[-2000:]
    assert "models:/archselect-tabular_classification/" in lines[0]

    dry = archselect(*IRIS_QUICK, "output=json", "dry_run=true", cwd=tmp_path)
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["selection"]["candidates"]
