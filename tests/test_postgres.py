"""A study on a real PostgreSQL server (Debian's PostgreSQL, a throwaway cluster on 127.0.0.1 and
a free port, stopped by the test): the command creates the study once, two worker processes share
it, the budget is exact and every trial number is unique.

Where PostgreSQL is missing (``make`` installs it where it runs as root) the test is skipped with a
message, except in CI (``CI`` set), where it fails: CI must run it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from helpers import NETWORKS_ONLY, ONE_WORKER, STEADY_TRIALS, compose_cfg

from archselect.run import run

IRIS = ["task=tabular_classification", "data=iris", ONE_WORKER, NETWORKS_ONLY, "trainer.progress_bar=false",
        "search.max_epochs=60", "search.patience=60",
        "selector.rules.cross_validation.max_samples=0"]


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL URL of a cluster made for this test (initdb and pg_ctl as the ``postgres``
    user: initdb refuses root)."""
    pg = _pg_bin()
    runuser = shutil.which("runuser")
    if pg is None or runuser is None or os.geteuid() != 0:
        message = "PostgreSQL (initdb, pg_ctl) as root with runuser is needed"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run it")
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="archselect-pg-"))
    folder.chmod(0o755)
    shutil.chown(folder, "postgres")
    data = folder / "data"

    def as_postgres(*args: str) -> None:
        subprocess.run([runuser, "-u", "postgres", "--", *args], check=True,
                       capture_output=True, timeout=120)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    try:
        as_postgres(str(pg / "initdb"), "-D", str(data), "-A", "trust", "-E", "UTF8",
                    "--no-locale")
        as_postgres(str(pg / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                    "-o", f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([runuser, "-u", "postgres", "--", str(pg / "pg_ctl"), "-D", str(data),
                        "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.study
def test_two_workers_share_a_postgresql_study(tmp_path: Path, postgres: str) -> None:
    result = run(compose_cfg([*IRIS, *STEADY_TRIALS, "search.n_trials=4", "search.n_workers=2",
                              "search.study_name=pg", f"search.storage={postgres}"], tmp_path))
    study = optuna.load_study(study_name="pg", storage=postgres)
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                   optuna.trial.TrialState.PRUNED)]
    assert len(done) == 4  # exactly the budget, over both workers
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert len({t.user_attrs["worker"] for t in done}) == 2  # two processes ran trials
    assert result.model_version == 1


def test_a_psycopg2_url_opens_the_same_study_storage(postgres: str) -> None:
    # postgresql:// is psycopg 3; postgresql+psycopg2:// (as other tools write it) works too.
    from archselect.search.storage import check_storage, make_storage

    legacy = postgres.replace("postgresql://", "postgresql+psycopg2://")
    assert check_storage(legacy) == legacy
    storage = make_storage(legacy, heartbeat_interval=None, grace_period=60)
    optuna.create_study(study_name="drivers", storage=storage).enqueue_trial({"x": 1})
    again = optuna.load_study(study_name="drivers", storage=postgres)
    assert len(again.trials) == 1
