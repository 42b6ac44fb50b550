"""Tried as someone trying to break it would: secrets on disk and on screen, a machine that fails
under a study, two commands at once, signals while registering, broken tracking stores, orphaned
workers, copied folders. Each case is real (processes, stores, files); none is mocked."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import NETWORKS_ONLY, NO_PRUNING, ONE_WORKER, archselect, compose_cfg
from mlflow.tracking import MlflowClient

from archselect.config.errors import ArchselectError, ConfigError
from archselect.finish import Finished, _worse_than_baseline
from archselect.run import run
from archselect.secrets import hide_secrets, mask_secrets, scrub

IRIS = ["task=tabular_classification", "data=iris", ONE_WORKER, NETWORKS_ONLY, "trainer.progress_bar=false",
        "selector.candidates=[perceptron,mlp]", "search.max_epochs=3",
        # one fit per trial (the commands these tests start do not get helpers.CHEAP)
        "selector.rules.cross_validation.max_samples=0"]
MODEL = "archselect-tabular_classification"
SECRET = "s3c@ret"
TS = optuna.trial.TrialState


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _running(proc: Any) -> bool:
    """Whether a psutil process still runs (an exited one that no one reaped is a zombie)."""
    import psutil

    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _versions(store: str) -> list[int]:
    return sorted(int(v.version) for v in MlflowClient(store).search_model_versions(
        f"name = '{MODEL}'"))


# -- secrets ----------------------------------------------------------------------------------
def test_a_password_with_a_raw_at_sign_is_masked_whole() -> None:
    assert mask_secrets("postgresql://u:ret@pw@host:5432/db") == "postgresql://u:***@host:5432/db"
    assert mask_secrets("see http://a:b@h/x?y=c@d") == "see http://a:***@h/x?y=c@d"
    # a driver that split the URL at the password's raw '@' quotes the rest as a host name
    said = scrub("failed to resolve host 'ret@pw@host'", "postgresql://u:ret@pw@host:5432/db")
    assert "ret" not in said and "@pw" not in said
    hidden = hide_secrets(["-m", f"search.storage=postgresql://u:{SECRET}@h/db", "seed=1"])
    assert SECRET not in " ".join(hidden) and "${oc.env:ARCHSELECT_SECRET_" in hidden[1]


def test_no_password_in_multirun_yaml_full_errors_or_cfg_job(tmp_path: Path) -> None:
    storage = f"search.storage=postgresql://alice:{SECRET}@127.0.0.1:1/db"
    runs = tmp_path / "runs"
    sweep = archselect("-m", *IRIS, storage, f"runs_dir={runs}", "search.n_trials=1,2",
                       cwd=tmp_path)
    assert sweep.returncode == 2, sweep.stderr
    assert "search.storage: cannot open the study storage" in sweep.stderr
    full = subprocess.run([sys.executable, "-m", "archselect", *IRIS, storage,
                           f"runs_dir={runs}"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"}, timeout=300)
    assert full.returncode != 0
    cfg_job = archselect(*IRIS, storage, f"runs_dir={runs}", "--cfg", "job", cwd=tmp_path)
    assert cfg_job.returncode == 0 and "storage: postgresql://alice:${oc.env:" in cfg_job.stdout
    printed = "".join(p.stdout + p.stderr for p in (sweep, full, cfg_job))
    assert SECRET not in printed and "ret@127" not in printed
    on_disk = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "multirun.yaml" for p in on_disk)
    for path in on_disk:
        assert SECRET.encode() not in path.read_bytes(), path


# -- a machine that fails under a study -------------------------------------------------------
@pytest.mark.study
def test_a_failing_disk_stops_the_study_uncounted_and_the_same_command_resumes(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "checkpoints").write_text("a file where the checkpoint folder goes\n")
    args = [*IRIS, "search.n_trials=2", "search.study_name=disk"]
    with pytest.raises(ArchselectError, match=r"search: stopped by the machine, not by a trial: .*"
                       r"that trial is not counted; fix: .*run the same command again"):
        run(compose_cfg(args, runs))
    study = optuna.load_study(study_name="disk", storage=f"sqlite:///{runs}/optuna.db")
    assert [t.state for t in study.trials if t.state != TS.WAITING] == [TS.FAIL]
    assert "fail_reason" not in study.trials[0].user_attrs  # not the trial's fault: not counted
    assert "environment_failure" in study.trials[0].user_attrs
    (runs / "checkpoints").unlink()  # the cause, fixed
    result = run(compose_cfg(args, runs))
    assert result.outcome is not None and result.model_version == 1
    study = optuna.load_study(study_name="disk", storage=f"sqlite:///{runs}/optuna.db")
    assert sum(t.state == TS.COMPLETE for t in study.trials) == 2
    assert not [t for t in study.trials if t.state == TS.WAITING]


@pytest.mark.study
def test_a_finished_one_trial_study_leaves_no_waiting_trial(tmp_path: Path) -> None:
    run(compose_cfg([*IRIS, "search.n_trials=1", "search.study_name=one"], tmp_path))
    study = optuna.load_study(study_name="one", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [TS.COMPLETE]


# -- two commands at once, signals while registering, a rerun ----------------------------------
@pytest.mark.study
def test_two_commands_at_once_share_one_study_one_parent_run_one_model(tmp_path: Path) -> None:
    # every trial completes, whichever command runs it and whenever (no pruning)
    args = [*IRIS, *NO_PRUNING, "search.n_trials=4", f"runs_dir={tmp_path / 'runs'}"]
    env = {**os.environ, "COLUMNS": "160"}
    procs = [subprocess.Popen([sys.executable, "-m", "archselect", *args], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    store = f"sqlite:///{tmp_path}/runs/mlflow.db"
    study = optuna.load_study(study_name="tabular_classification-iris",
                              storage=f"sqlite:///{tmp_path}/runs/optuna.db")
    assert sum(t.state == TS.COMPLETE for t in study.trials) == 4
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("archselect-tabular_classification")
    assert exp is not None
    parents = client.search_runs([exp.experiment_id], "tags.`archselect.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert _versions(store) == [1]


@pytest.mark.study
def test_a_rerun_completes_a_half_registered_model_instead_of_registering_again(
        tmp_path: Path) -> None:
    cfg = compose_cfg([*IRIS, "search.n_trials=1"], tmp_path)
    first = run(cfg)
    store = str(cfg.tracking.uri)
    client = MlflowClient(store)
    # As a signal between "Created version" and the alias would leave it: no alias.
    client.delete_registered_model_alias(MODEL, "champion")
    again = run(cfg)
    assert _versions(store) == [1] and again.model_version == first.model_version == 1
    assert int(client.get_model_version_by_alias(MODEL, "champion").version) == 1


@pytest.mark.study
def test_sigterm_while_registering_ends_with_one_line_and_no_running_parent(
        tmp_path: Path) -> None:
    args = [*IRIS, "search.n_trials=1", f"runs_dir={tmp_path / 'runs'}"]
    proc = subprocess.Popen([sys.executable, "-m", "archselect", *args], cwd=tmp_path,
                            env={**os.environ, "COLUMNS": "160", "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # the test split is printed just before logging the model
        if line.startswith("Test split"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=300)
    store = f"sqlite:///{tmp_path}/runs/mlflow.db"
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("archselect-tabular_classification")
    assert exp is not None
    parent = client.search_runs([exp.experiment_id], "tags.`archselect.role` = 'study'")[0]
    assert parent.info.status != "RUNNING"
    if proc.returncode == 130:  # the signal arrived before the model was registered
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines == ["archselect: error: interrupted"], err
    else:  # it had finished already
        assert proc.returncode == 0, err
    done = archselect(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _versions(store) == [1]
    assert int(client.get_model_version_by_alias(MODEL, "champion").version) == 1


# -- a full or read-only disk (a real file system: a small tmpfs) ----------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 3 MB tmpfs at ``tmp_path/disk`` (root only), and a function that remounts it with
    options (``size=64M``, ``ro``); unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()[:80]})")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)

    try:
        yield disk, remount
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.study
def test_a_full_disk_is_one_line_and_the_same_command_resumes_once_there_is_room(
        small_disk: Any) -> None:
    disk, remount = small_disk
    args = [*IRIS, "search.n_trials=3", "search.study_name=full"]
    with pytest.raises(ArchselectError, match=r"(runs_dir: cannot write .*No space left on device"
                       r"|search: stopped by the machine).*run the same command again") as info:
        run(compose_cfg(args, disk))
    assert "\n" not in str(info.value)
    remount("size=64M")
    result = run(compose_cfg(args, disk))
    assert result.model_version == 1
    study = optuna.load_study(study_name="full", storage=f"sqlite:///{disk}/optuna.db")
    assert sum(t.state in (TS.COMPLETE, TS.PRUNED) for t in study.trials) == 3
    client = MlflowClient(f"sqlite:///{disk}/mlflow.db")
    exp = client.get_experiment_by_name("archselect-tabular_classification")
    assert exp is not None
    parents = client.search_runs([exp.experiment_id], "tags.`archselect.role` = 'study'")
    assert [p.info.status for p in parents] == ["FINISHED"]


@pytest.mark.study
def test_a_read_only_tracking_store_is_one_line_before_any_trial(small_disk: Any,
                                                                 tmp_path: Path) -> None:
    disk, remount = small_disk
    remount("size=64M")
    # in another process: this one would keep the store's file open, and the disk busy
    first = archselect(*IRIS, "search.n_trials=1", f"runs_dir={disk}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    remount("ro")
    store = [f"tracking.uri=sqlite:///{disk}/mlflow.db",
             f"tracking.artifact_location={disk}/artifacts"]
    with pytest.raises(ConfigError, match=r"^tracking.uri: cannot use the tracking store "
                       r"\(MlflowException: .*readonly database\); given .*; fix: check that the "
                       r"store is reachable, writable and not full"):
        run(compose_cfg([*IRIS, "search.n_trials=1", *store], tmp_path / "here"))
    assert not (tmp_path / "here" / "optuna.db").exists()


# -- broken tracking stores, copied folders ---------------------------------------------------
@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: (d / "mlflow.db").write_text("not a database\n") and [],
     "tracking.uri: {d}/mlflow.db is not an MLflow store"),
    (lambda d: (d / "mlflow.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
     and [], r"tracking.uri: cannot use the tracking store \(DatabaseError: .*\); given .*; "
     r"fix: .*a damaged database file: move it away"),
    (lambda d: [f"tracking.uri=http://127.0.0.1:{_free_port()}"],
     "tracking.uri: the tracking server does not answer"),
])
def test_a_broken_tracking_store_is_one_line_before_any_trial(tmp_path: Path, make,
                                                              expected: str) -> None:
    extra = make(tmp_path)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=expected.format(d=tmp_path)):
        run(compose_cfg([*IRIS, "search.n_trials=1", *extra], tmp_path))
    assert time.monotonic() - start < 60
    assert not (tmp_path / "optuna.db").exists()


def test_a_new_tracking_store_starts_from_one_empty_database_migrated_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3
    from contextlib import closing

    from archselect.tracking import Tracker, _template_path

    def rows(db: Path, sql: str) -> list[Any]:
        with closing(sqlite3.connect(db)) as c:
            return c.execute(sql).fetchall()

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = _template_path()
    assert not template.exists()
    Tracker(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", "one", str(tmp_path / "a" / "art"))
    assert template.is_file()  # migrated once, kept without any experiment
    assert rows(template, "SELECT count(*) FROM experiments") == [(0,)]
    second = Tracker(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", "two",
                     str(tmp_path / "b" / "art"))
    version = "SELECT version_num FROM alembic_version"
    assert rows(tmp_path / "b" / "mlflow.db", version) == rows(template, version)
    found = {e.name: e.artifact_location for e in second.client.search_experiments()}
    assert found["two"] == (tmp_path / "b" / "art").as_uri() and set(found) == {"Default", "two"}
    # it takes runs, metrics and registered models as a store MLflow migrated itself does
    run_id = second.client.create_run(second.experiment_id).info.run_id
    second.client.log_metric(run_id, "x", 1.0)
    second.client.create_registered_model("m")
    assert second.client.get_run(run_id).data.metrics == {"x": 1.0}


@pytest.mark.study
def test_a_copied_runs_folder_does_not_write_into_the_original(tmp_path: Path) -> None:
    run(compose_cfg([*IRIS, "search.n_trials=1"], tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ConfigError, match=rf"tracking.artifact_location: experiment "
                       rf"'archselect-tabular_classification' of this store keeps its artifacts "
                       rf"in {tmp_path}/a/artifacts, not in {tmp_path}/b/artifacts"):
        run(compose_cfg([*IRIS, "search.n_trials=1"], tmp_path / "b"))


@pytest.mark.study
def test_the_champion_moves_off_a_version_whose_files_are_gone(tmp_path: Path) -> None:
    run(compose_cfg([*IRIS, "search.n_trials=1", "search.study_name=s1"], tmp_path))
    shutil.rmtree(tmp_path / "artifacts" / "models")  # the registered model's files
    second = run(compose_cfg([*IRIS, "search.n_trials=1", "search.study_name=s2"], tmp_path))
    assert "version 1 no longer loads" in second.champion
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert int(client.get_model_version_by_alias(MODEL, "champion").version) == 2


def test_a_model_worse_than_its_baseline_is_said() -> None:
    done = Finished(test_metrics={"rmse": 9.0}, baseline_name="mean predictor",
                    baseline_metrics={"rmse": 5.0})
    line = _worse_than_baseline(done, "rmse", "minimize")
    assert line is not None and line.startswith(
        "the best model's test rmse 9.0000 is worse than the mean predictor's 5.0000")
    assert _worse_than_baseline(done, "rmse", "maximize") is None


# -- orphaned workers -------------------------------------------------------------------------
@pytest.mark.study
def test_a_worker_exits_when_its_command_is_killed(tmp_path: Path) -> None:
    import psutil

    runs = tmp_path / "runs"
    args = [*IRIS, "search.n_workers=2", "search.n_trials=6", "search.max_epochs=100000",
            "search.patience=100000", "search.trial_timeout=120", f"runs_dir={runs}",
            f"search.storage=journal:///{runs}/study.log"]
    proc = subprocess.Popen([sys.executable, "-m", "archselect", *args], cwd=tmp_path,
                            env={**os.environ, "COLUMNS": "160"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    end = time.monotonic() + 180
    workers: list[psutil.Process] = []
    while time.monotonic() < end and not workers:
        workers = [c for c in psutil.Process(proc.pid).children()
                   if "archselect.worker" in " ".join(c.cmdline())]
        time.sleep(0.5)
    assert workers, "no worker started"
    storage = f"{runs}/study.log"
    while time.monotonic() < end:  # both the command and the worker are inside a trial
        try:
            trials = optuna.load_study(study_name="tabular_classification-iris",
                                       storage=optuna.storages.JournalStorage(
                                           optuna.storages.journal.JournalFileBackend(storage))
                                       ).trials
        except (KeyError, FileNotFoundError):
            trials = []
        if sum(t.state == TS.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials) == 2:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the worker never started a trial")
    proc.kill()
    proc.wait()
    end = time.monotonic() + 60
    alive = workers
    while alive and time.monotonic() < end:
        time.sleep(0.5)  # an exited worker no one reaps stays a zombie: it has exited all the same
        alive = [p for p in alive if _running(p)]
    for p in alive:
        p.kill()
    assert not alive, "the worker trained on after its command was killed"
