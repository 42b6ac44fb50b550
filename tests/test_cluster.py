"""Studies beyond one process, on the real servers ``archselect-cluster up`` starts: Debian's
PostgreSQL (the study storage) and an MLflow tracking server on it that proxies the artifacts.

Three commands started separately, each with its own runs folder (as on three machines: they
share nothing but the two URLs), run one study: the budget is exact, trial numbers unique, every
trial's MLflow run sits under the one parent run, and one of them tests and registers the model,
once, which then loads through the server. A worker "on another machine" (its own hostname, in a
UTS namespace) killed with SIGKILL mid-trial has its trial failed by the heartbeat, not by its
process id, and the study still ends with exactly its budget.

Where PostgreSQL or root are missing the tests are skipped with a message, except in CI (``CI``
set), where they fail: CI must run them. Where new namespaces are not allowed (``unshare``), the
killed-worker test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from helpers import STEADY_TRIALS, compose_cfg
from mlflow import MlflowClient

from archselect.cluster import Cluster, down
from archselect.run import run

IRIS = ["task=tabular_classification", "data=iris", "search.n_workers=1",
        "trainer.progress_bar=false", "selector.rules.cross_validation.max_samples=0",
        "selector.references=false"]
TS = optuna.trial.TrialState


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run it")
    pytest.skip(message)


CLUSTER = [sys.executable, "-m", "archselect.cluster"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """``archselect-cluster up`` (the command) in a folder of its own; ``down`` after the
    module's tests, and then ``status`` says none runs."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        _missing("starting PostgreSQL here needs root and runuser (initdb runs as postgres)")
    folder = Path(tempfile.mkdtemp(prefix="archselect-cluster-"))
    started = subprocess.run([*CLUSTER, "up", "--dir", str(folder), "--json"],
                             capture_output=True, text=True, timeout=180)
    # PostgreSQL's data: a folder of its own in /tmp where the postgres user cannot reach ours
    made = Cluster.load(folder)
    try:
        if started.returncode == 2 and "PostgreSQL is not installed" in started.stderr:
            _missing(started.stderr.strip())
        assert started.returncode == 0, started.stderr
        urls = json.loads(started.stdout)
        assert urls["storage"].startswith("postgresql://postgres@127.0.0.1:")
        assert urls["tracking"].startswith("http://127.0.0.1:")
        status = subprocess.run([*CLUSTER, "status", "--dir", str(folder)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and f"tracking.uri={urls['tracking']}" in status.stdout
        held = Cluster.load(folder)
        assert held is not None and held.storage == urls["storage"]
        yield held
    finally:
        stopped = subprocess.run([*CLUSTER, "down", "--dir", str(folder)], capture_output=True,
                                 text=True, timeout=120)
        gone = subprocess.run([*CLUSTER, "status", "--dir", str(folder)], capture_output=True,
                              text=True, timeout=60)
        down(folder, purge=True)  # the folder (and anything a failed stop left)
        if made is not None and made.pg_dir:
            shutil.rmtree(made.pg_dir, ignore_errors=True)
    assert stopped.stdout.strip() == "stopped"
    assert gone.returncode == 1 and "no cluster is running" in gone.stdout


def _command(args: list[str], cwd: Path, *, prefix: list[str] | None = None
             ) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COLUMNS": "160", "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([*(prefix or []), sys.executable, "-m", "archselect", *args,
                             f"runs_dir={cwd / 'runs'}"], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


@pytest.mark.study
def test_three_commands_share_one_postgresql_study_and_one_mlflow_server(
        cluster: Cluster, tmp_path: Path) -> None:
    args = [*IRIS, *STEADY_TRIALS, "search.max_epochs=60", "search.patience=60",
            "search.n_trials=5", "search.study_name=three", f"search.storage={cluster.storage}",
            f"tracking.uri={cluster.tracking}", "tracking.experiment=three",
            "tracking.model_name=three"]
    procs = [_command(args, tmp_path / f"machine{i}") for i in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:] + out[-2000:]
        assert "Traceback" not in err
    finishers = [out for out, _ in outs if "Model registered as three version 1" in out]
    assert len(finishers) == 1  # one command tested and registered; the others said so
    assert sum("is being finished by another process" in out for out, _ in outs) == 2

    study = optuna.load_study(study_name="three", storage=cluster.storage)
    assert sum(t.state == TS.COMPLETE for t in study.trials) == 5  # exactly the budget
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) >= 2  # trials ran in more than one command

    client = MlflowClient(cluster.tracking)
    exp = client.get_experiment_by_name("three")
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
    parents = client.search_runs([exp.experiment_id], "tags.`archselect.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trials = client.search_runs([exp.experiment_id], "tags.`archselect.role` = 'trial'")
    assert len(trials) == 5
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    versions = client.search_model_versions("name = 'three'")
    assert [int(v.version) for v in versions] == [1]
    assert client.get_model_version_by_alias("three", "champion").version == "1"
    # The artifacts went through the server into its own folder: no shared disk needed.
    assert any((Path(cluster.folder) / "artifacts").rglob("MLmodel"))

    mlflow.set_tracking_uri(cluster.tracking)
    try:
        model = mlflow.pyfunc.load_model("models:/three@champion")
    finally:
        mlflow.set_tracking_uri(None)
    rows = pd.DataFrame({"sepal length (cm)": [5.1, 6.7], "sepal width (cm)": [3.5, 3.0],
                         "petal length (cm)": [1.4, 5.2], "petal width (cm)": [0.2, 2.3]})
    answer = model.predict(rows)
    assert list(answer.columns) == ["label", "probability"] and len(answer) == 2


@pytest.mark.study
def test_a_worker_on_another_machine_killed_mid_trial_is_failed_by_its_heartbeat(
        cluster: Cluster, tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--uts", "true"],
                                         capture_output=True).returncode != 0:
        # a container may forbid new namespaces even to root: nothing to fix in the project
        pytest.skip("a second hostname needs unshare --uts (root, namespaces allowed)")
    args = [*IRIS, *STEADY_TRIALS, "search.n_trials=2", "search.study_name=killed",
            f"search.storage={cluster.storage}", f"tracking.uri={cluster.tracking}",
            "tracking.experiment=killed", "tracking.model_name=killed",
            "search.heartbeat_interval=1", "search.grace_period=3"]
    # The other machine: its own hostname, so that no process-id check can see it died.
    other = _command(args, tmp_path / "other", prefix=[
        unshare, "--uts", "sh", "-c", 'hostname other-machine && exec "$@"', "sh"])
    study = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if other.poll() is not None:
            pytest.fail("the other machine's command ended early: " + other.stderr.read()[-2000:])
        try:
            study = optuna.load_study(study_name="killed", storage=cluster.storage)
            # mid-trial: its MLflow run is open
            if any("mlflow_run_id" in t.user_attrs
                   for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,))):
                break
        except KeyError:  # not created yet
            pass
        time.sleep(0.5)
    else:
        pytest.fail("the other machine never started a trial")
    os.killpg(other.pid, signal.SIGKILL)
    other.wait(timeout=60)
    here = _command(args, tmp_path / "here")
    out, err = here.communicate(timeout=600)
    assert here.returncode == 0, err[-3000:] + out[-2000:]

    study = optuna.load_study(study_name="killed", storage=cluster.storage)
    killed = [t for t in study.trials if t.user_attrs.get("worker", "").startswith("other-machine")
              and t.state == TS.FAIL]
    assert len(killed) == 1 and "fail_reason" not in killed[0].user_attrs  # not counted
    assert sum(t.state == TS.COMPLETE for t in study.trials) == 2  # the budget, all the same
    run = MlflowClient(cluster.tracking).get_run(killed[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert "no heartbeat" in run.data.tags.get("archselect.fail_reason", "")


@pytest.mark.study
def test_a_submitit_local_sweep_of_search_worker_runs_one_study_worker_per_job(
        tmp_path: Path) -> None:
    # What hydra/launcher=submitit_slurm does on a cluster, on this machine: three jobs, each a
    # worker of the one study (search.worker=range(3) names no study of its own).
    journal = tmp_path / "study.journal"
    env = {**os.environ, "COLUMNS": "160", "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [sys.executable, "-m", "archselect", "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.timeout_min=10", *IRIS, "selector.candidates=[perceptron,mlp]",
         "search.max_epochs=3", "search.n_trials=6", "search.study_name=sweep",
         f"search.storage=journal:///{journal}", "search.worker=range(3)", "output=quiet",
         f"runs_dir={tmp_path / 'runs'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = sorted((tmp_path / "runs" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 3  # one job per worker
    assert all("Job completed successfully" in p.read_text() for p in logs)
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="sweep", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(journal))))
    assert sum(t.state in (TS.COMPLETE, TS.PRUNED) for t in study.trials) == 6
    assert len({t.number for t in study.trials}) == len(study.trials)
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'archselect-tabular_classification'")
    assert [int(v.version) for v in versions] == [1]  # one job finished the study


@pytest.mark.study
def test_one_trial_on_two_processes_with_ddp_and_gloo(tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    # trainer.devices=2 on CPU: each trial (and the refit) is one Lightning DDP fit on two
    # processes forked from the command (not a second start of the command).
    result = run(compose_cfg(["task=tabular_classification", "data=iris", "search.n_trials=1",
                              "search.enqueue_baselines=false",
                              "trainer.devices=2", "search.n_workers=null", "search.max_epochs=4",
                              "search.patience=10",
                              "selector.references=false", "search.refit=true"], tmp_path))
    assert "each trial on 2 CPU processes (DDP, gloo" in result.selection.parallel
    # the spawned processes' Lightning lines went to the study's log file, not the terminal
    log = Path(result.log_file).read_text()
    assert "MEMBER: 2/2" in log and "distributed_backend=gloo" in log
    out, err = capfd.readouterr()
    assert "Initializing distributed" not in out + err and "LeafSpec" not in out + err
    study = optuna.load_study(study_name=result.study_name,
                              storage=f"sqlite:///{tmp_path}/optuna.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for t in study.trials:
        assert t.state == TS.COMPLETE and t.user_attrs["epochs"] == 4
        # rank 0's epochs, carried back: reported to the pruner and logged by this process
        assert sorted(t.intermediate_values) == [0, 1, 2, 3]
        steps = client.get_metric_history(t.user_attrs["mlflow_run_id"], "val_f1")
        assert [m.step for m in steps] == [0, 1, 2, 3]
    assert result.model_version == 1 and result.test_metrics["accuracy"] > 0
