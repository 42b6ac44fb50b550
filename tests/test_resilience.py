"""A study that survives: kill and resume, graceful stop, bad trials, budgets, parallel workers,
reproducibility, secrets. Real processes, real SQLite / journal stores in tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from helpers import NETWORKS_ONLY, ONE_WORKER, STEADY_TRIALS, compose_cfg
from mlflow.tracking import MlflowClient

from archselect.config.errors import ArchselectError
from archselect.run import run
from archselect.signals import interrupt_on_signals

pytestmark = pytest.mark.study  # every test here trains a real study

# The perceptron baseline finishes in 3 epochs; the MLP runs until search.trial_timeout (or a
# signal) stops it: trials whose length the test decides, on real data.
IRIS = ["task=tabular_classification", "data=iris", ONE_WORKER, NETWORKS_ONLY, "trainer.progress_bar=false",
        "selector.candidates=[perceptron,mlp]", "+selector.rules.no_gpu.max_epochs.perceptron=3",
        # one fit per trial (the commands these tests start do not get helpers.CHEAP)
        "selector.rules.cross_validation.max_samples=0"]
LONG_MLP = ["search.max_epochs=100000", "search.patience=100000"]
TS = optuna.trial.TrialState
# 2**20 x 2**20 weights (4 TiB): the allocation fails for real.
HUGE_MLP = ["arch.mlp.model.hidden_size=1048576", "arch.mlp.space.hidden_size.choices=[1048576]",
            "arch.mlp.model.depth=2"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "archselect", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_running(storage: str, name: str, number: int, proc: subprocess.Popen[str],
                      limit: float = 180) -> None:
    """Poll the study until trial ``number`` is running and has reported an epoch."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except KeyError:
            trials = []
        if any(t.number == number and t.state == TS.RUNNING and "mlflow_run_id" in t.user_attrs
               for t in trials):
            time.sleep(1.0)  # well inside its epochs
            return
        time.sleep(0.2)
    raise AssertionError(f"trial {number} never ran")


def _client(tmp_path: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("archselect-tabular_classification")
    assert exp is not None
    return client, exp.experiment_id


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state in (TS.COMPLETE, TS.PRUNED)
            or (t.state == TS.FAIL and "fail_reason" in t.user_attrs)]


@pytest.mark.slow
def test_sigkill_mid_trial_then_the_same_command_resumes_to_n_trials(tmp_path: Path) -> None:
    args = [*IRIS, *LONG_MLP, "search.trial_timeout=4", "search.n_trials=3",
            "search.study_name=k", f"runs_dir={tmp_path}"]
    storage = f"sqlite:///{tmp_path}/optuna.db"
    proc = _start(args, tmp_path)
    _wait_for_running(storage, "k", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = optuna.load_study(study_name="k", storage=storage).trials[1]
    assert killed.state == TS.RUNNING  # nobody closed it: the process is gone

    result = run(compose_cfg(args, tmp_path, cheap=False))  # the same command, again
    study = optuna.load_study(study_name="k", storage=storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert study.trials[1].state == TS.FAIL and "fail_reason" not in study.trials[1].user_attrs
    assert len(_counted(study)) == 3  # the killed trial is not counted: the study ran one more
    assert study.trials[0].state == TS.COMPLETE  # the finished trial was kept, not rerun
    assert not [t for t in study.trials if t.state in (TS.RUNNING, TS.WAITING)]
    # The killed MLP baseline was queued again and stopped by its trial budget this time.
    rerun = [t for t in study.trials[2:] if t.user_attrs.get("baseline")]
    assert [t.params["arch"] for t in rerun] == ["mlp"]
    assert rerun[0].state == TS.PRUNED and rerun[0].user_attrs["stopped_by"] == "search.trial_timeout"

    client, exp = _client(tmp_path)
    (dead,) = client.search_runs([exp], "tags.`archselect.trial` = '1'")
    assert dead.info.status == "KILLED" and dead.data.tags["archselect.state"] == "KILLED"
    assert "died mid-trial" in dead.data.tags["archselect.fail_reason"]
    assert result.model_version == 1
    assert next(r for r in result.outcome.records if r.number == 1).state == "FAIL"


@pytest.mark.slow
def test_sigterm_ends_the_trial_cleanly_and_registers_the_best_so_far(tmp_path: Path) -> None:
    args = [*IRIS, *LONG_MLP, "search.n_trials=4", "search.study_name=g", f"runs_dir={tmp_path}"]
    storage = f"sqlite:///{tmp_path}/optuna.db"
    proc = _start(args, tmp_path)
    _wait_for_running(storage, "g", 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("archselect:")]
    assert lines == ["archselect: error: interrupted (signal SIGTERM): the finished trials are "
                     "kept and the best model so far is registered; fix: run the same command "
                     "again to resume"], err[-3000:]
    assert "Traceback" not in err
    flat = " ".join(out.split())
    assert "Leaderboard" in out and "Model registered as archselect-tabular_classification" in flat
    assert "stopped by signal SIGTERM" in flat

    study = optuna.load_study(study_name="g", storage=storage)
    assert [t.state for t in study.trials[:2]] == [TS.COMPLETE, TS.FAIL]
    assert not [t for t in study.trials if t.state == TS.RUNNING]
    client, exp = _client(tmp_path)
    (stopped,) = client.search_runs([exp], "tags.`archselect.trial` = '1'")
    assert stopped.info.status == "KILLED"
    assert "interrupted" in stopped.data.tags["archselect.fail_reason"]
    (parent,) = client.search_runs([exp], "tags.`archselect.role` = 'study'")
    assert parent.info.status == "FINISHED"
    assert client.search_model_versions("name = 'archselect-tabular_classification'")


def test_a_signal_inside_a_store_write_waits_for_it_and_the_clean_up_can_write(
        tmp_path: Path) -> None:
    # The signal lands while the MLflow SQLite store is mid-transaction (sent from the driver's
    # own statement hook): the write finishes, then the interrupt is raised, and the clean-up's
    # write does not meet a locked database.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    engine = client._tracking_client.store.engine
    sent: list[str] = []

    def kill_once(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "INSERT INTO metrics" in statement and not sent:
            sent.append(statement)
            os.kill(os.getpid(), signal.SIGTERM)

    sqlalchemy.event.listen(engine, "after_cursor_execute", kill_once)
    received: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupt_on_signals(received):
        for step in range(50):
            client.log_metric(run_id, "loss", 1.0, step=step)
    sqlalchemy.event.remove(engine, "after_cursor_execute", kill_once)
    assert sent and received == ["SIGTERM"]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0]  # written whole
    start = time.monotonic()
    client.set_terminated(run_id, "KILLED")
    assert time.monotonic() - start < 3
    assert client.get_run(run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_failing_trials_are_recorded_and_max_failures_stops_the_study(tmp_path: Path) -> None:
    # Two real failures: an absurd learning rate makes the loss non-finite; a layer of 2**40
    # weights cannot be allocated (CPU out of memory). Both in a row hit search.max_failures.
    cfg = compose_cfg([*IRIS, "search.n_trials=5", "search.max_failures=2", "search.study_name=m",
                       "arch.perceptron.optim.lr=1e37", "arch.perceptron.space.lr.high=1e38",
                       *HUGE_MLP, "search.max_epochs=3"], tmp_path)
    with pytest.raises(ArchselectError, match=r"^search.max_failures: 2 trials failed in a row "
                       r"\(last: out of memory \(CPU\)"):
        run(cfg)
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials if t.state != TS.WAITING] == [TS.FAIL, TS.FAIL]
    nan, oom = (t.user_attrs["fail_reason"] for t in study.trials[:2])
    assert "FloatingPointError" in nan and ("nan" in nan or "inf" in nan)
    assert oom.startswith("out of memory (CPU)")
    client, exp = _client(tmp_path)
    failed = client.search_runs([exp], "tags.`archselect.state` = 'FAIL'")
    assert sorted(r.data.tags["archselect.fail_reason"] for r in failed) == sorted([nan, oom])
    assert {r.info.status for r in failed} == {"FAILED"}


def test_trial_timeout_stops_a_trial_that_reported_as_pruned(tmp_path: Path) -> None:
    cfg = compose_cfg([*IRIS, *LONG_MLP, "selector.candidates=[mlp]", "search.n_trials=1",
                       "search.trial_timeout=3", "search.study_name=tt"], tmp_path)
    start = time.monotonic()
    with pytest.raises(ArchselectError, match=r"no trial of study 'tt' completed \(0 failed, "
                       r"1 pruned\)"):
        run(cfg)
    assert time.monotonic() - start < 60
    (trial,) = optuna.load_study(study_name="tt", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert trial.state == TS.PRUNED and trial.user_attrs["stopped_by"] == "search.trial_timeout"
    assert 2.5 <= trial.user_attrs["duration_s"] < 20 and trial.user_attrs["epochs"] > 1


def test_same_seed_same_trials_and_metrics_and_the_study_logs_its_environment(
        tmp_path: Path) -> None:
    def once(folder: Path) -> list[tuple]:
        result = run(compose_cfg([*IRIS, "search.max_epochs=3", "search.n_trials=3", "seed=7",
                                  "trainer.deterministic=true", "search.study_name=d",
                                  "tracking.register=false"], folder))
        study = optuna.load_study(study_name="d", storage=f"sqlite:///{folder}/optuna.db")
        client, _ = _client(folder)
        parent = client.get_run(str(result.parent_run_id))
        assert parent.data.params["seed"] == "7" and parent.data.params["deterministic"] == "True"
        assert parent.data.params["version.torch"].startswith("2.")
        assert parent.data.params["version.optuna"] and parent.data.params["data_hash"]
        assert parent.data.tags["archselect.data_hash"] == parent.data.params["data_hash"]
        return [(t.params, t.state, t.value, t.intermediate_values) for t in study.trials]

    first, second = once(tmp_path / "a"), once(tmp_path / "b")
    assert len(first) == 3
    assert first == second


def test_a_resumed_study_continues_the_sampler_instead_of_repeating_it(tmp_path: Path) -> None:
    args = [*IRIS, "search.max_epochs=2", "search.study_name=r", "tracking.register=false"]
    run(compose_cfg([*args, "search.n_trials=3"], tmp_path))  # 2 baselines, 1 sampled
    run(compose_cfg([*args, "search.n_trials=5"], tmp_path))  # resumed: 2 more sampled
    study = optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path}/optuna.db")
    sampled = [t.params for t in study.trials if not t.user_attrs.get("baseline")]
    assert len(sampled) == 3
    assert sampled[1] != sampled[0] and sampled[2] != sampled[0]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _tracking_server(folder: Path) -> Iterator[int]:
    """A real MLflow tracking server on 127.0.0.1, stopped on leaving."""
    import urllib.request

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{folder}/server.db", "--artifacts-destination", str(folder / "served"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        end = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < end, "no MLflow server"
                time.sleep(0.5)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


@pytest.mark.slow
def test_two_workers_share_a_journal_study_and_a_password_is_never_shown(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    # Two real worker processes on one journal study, tracked on a real server whose URI holds
    # a password: the budget is exact, no trial runs twice, the password appears nowhere.
    secret = "s3cret-pw-42"
    journal = tmp_path / "study.journal"
    with _tracking_server(tmp_path) as port:
        uri = f"http://alice:{secret}@127.0.0.1:{port}"
        result = run(compose_cfg([*IRIS, *STEADY_TRIALS, "search.n_trials=4", "search.n_workers=2",
                                  "search.study_name=w",
                                  f"search.storage=journal:///{journal}", f"tracking.uri={uri}"],
                                 tmp_path))
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        study = optuna.load_study(study_name="w",
                                  storage=JournalStorage(JournalFileBackend(str(journal))))
        counted = _counted(study)
        assert len(counted) == 4  # exactly the budget, over both workers
        numbers = [t.number for t in study.trials]
        assert len(numbers) == len(set(numbers))
        assert not [t for t in study.trials if t.state in (TS.RUNNING, TS.WAITING)]
        workers = {t.user_attrs["worker"] for t in counted}
        assert len(workers) == 2, workers  # two processes ran trials
        assert result.model_version == 1

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("archselect-tabular_classification")
        assert exp is not None
        children = client.search_runs([exp.experiment_id],
                                      f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
        assert sorted(int(c.data.tags["archselect.trial"]) for c in children) == sorted(
            t.number for t in counted)
        for r in client.search_runs([exp.experiment_id]):
            assert secret not in repr(r.data.params) + repr(r.data.tags)
        resolved = Path(client.download_artifacts(str(result.parent_run_id),
                                                  "config/resolved.yaml")).read_text()
        assert f"alice:***@127.0.0.1:{port}" in resolved and secret not in resolved
    out, err = capfd.readouterr()  # both workers' output
    assert "alice:***@" in out and secret not in out + err
    # Nothing on disk holds it: the server's store and artifacts, the journal, checkpoints.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
