"""Study storage: URLs, opening them, and finding the trials of workers that died.

Dead trials are found two ways: on the same machine, by the ``host:pid`` each trial records; on
RDB storages, by Optuna's heartbeats (any worker fails a trial whose heartbeat stopped).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import optuna

from archselect.config.errors import ConfigError, store_failure
from archselect.config.validate import writable_folder
from archselect.search.trials import KILLED_REASON, TS
from archselect.secrets import mask_secrets
from archselect.tracking import Tracker

ALLOWED = ("sqlite:///path.db, journal:///path.log, postgresql://user:pw@host/db, "
           "mysql+pymysql://...")


def storage_file(url: str) -> Path | None:
    """The local file behind a SQLite or journal storage URL (None for a server)."""
    if url.startswith("journal:///"):
        return Path(url.removeprefix("journal:///")).expanduser()
    if url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        return Path(database).expanduser() if database and database != ":memory:" else None
    return None


def check_storage(url: Any) -> str:
    """Check that the study storage can be opened, writing nothing: a local file's folder must be
    writable, a database server must answer."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("search.storage", "not a storage URL", given=url, allowed=ALLOWED)
    try:
        path = storage_file(url)
    except Exception as exc:
        raise ConfigError("search.storage", f"not a storage URL ({type(exc).__name__})",
                          given=mask_secrets(url), allowed=ALLOWED) from None
    if path is not None:
        if not writable_folder(path.parent) or (path.exists() and not os.access(path, os.W_OK)):
            raise ConfigError("search.storage", "its file cannot be written",
                              given=mask_secrets(url), fix="point it into a writable folder")
        return url
    if url.startswith(("sqlite:", "journal:")):
        raise ConfigError("search.storage", "names no file", given=mask_secrets(url),
                          allowed=ALLOWED)
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        raise storage_error(exc, url) from None
    return url


def storage_error(exc: BaseException, url: str) -> ConfigError:
    """A storage failure as one line naming ``search.storage``."""
    return store_failure("search.storage", "cannot open the study storage", exc, url,
                         "check the URL, the server (and its driver), the path")


def make_storage(url: str, *, heartbeat_interval: int | None, grace_period: int,
                 on_stale: Callable[[optuna.Study, Any], None] | None = None
                 ) -> optuna.storages.BaseStorage:
    """The study storage: a journal file, or an RDB with heartbeats so that any worker fails the
    trials of a worker that died (another machine, a SIGKILL) after ``grace_period`` seconds."""
    url = check_storage(url)
    path = storage_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url,
                # Several local workers on one SQLite file wait for its lock instead of failing.
                engine_kwargs=({"connect_args": {"timeout": 60}} if url.startswith("sqlite:")
                               else None),
                heartbeat_interval=heartbeat_interval,
                grace_period=None if heartbeat_interval is None else grace_period,
                heartbeat_stale_trial_callback=on_stale,
            )
        except (IntegrityError, ProgrammingError):
            # Commands started together on an empty database each create Optuna's tables; all
            # but one fail on a unique key (PostgreSQL's enum type). The tables exist then.
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str, started: Any) -> bool:
    """Whether the local process that owns a trial still runs (a foreign host counts as alive:
    the heartbeat judges those)."""
    import psutil

    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        proc = psutil.Process(int(pid))
        # A recycled pid belongs to a process started after the trial.
        return started is None or proc.create_time() <= started.timestamp() + 1.0
    except psutil.Error:
        return False


def close_killed_run(tracker: Tracker | None, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """End the MLflow run of a trial whose worker died, as KILLED with the reason."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if tracker is None or not run_id:
        return
    with suppress(Exception):  # the run was deleted meanwhile: nothing to close
        tracker.end_trial(str(run_id), "KILLED", reason=why)


def reap_dead_trials(study: optuna.Study, tracker: Tracker | None) -> list[int]:
    """Fail the RUNNING trials of local workers that no longer exist (SIGKILL, a crash), now
    rather than after the heartbeat's grace period, and close their MLflow runs."""
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
        owner = str(t.user_attrs.get("worker", ""))
        if not owner or _alive(owner, t.datetime_start):
            continue
        try:
            study.tell(t.number, state=TS.FAIL)
        except (RuntimeError, ValueError):  # another worker reaped it first
            continue
        close_killed_run(tracker, t, f"worker {owner} died mid-trial; {KILLED_REASON}")
        reaped.append(t.number)
    return reaped


def wait_for_running(study: optuna.Study, tracker: Tracker | None,
                     say: Callable[[str], None], *, heartbeats: bool, poll: float = 1.0) -> int:
    """Wait until no trial of the study runs (trials of other commands on the study, on this
    machine or others), failing those whose worker died meanwhile (by process here, by heartbeat
    on an RDB), so that the study is finished with every trial it holds. Without heartbeats a
    trial of another machine cannot be judged and is not waited for. Returns how many trials
    were waited for."""
    waited: set[int] = set()
    here = socket.gethostname()
    while True:
        reap_dead_trials(study, tracker)
        with suppress(Exception):  # storages without heartbeats have nothing to fail
            optuna.storages.fail_stale_trials(study)
        running = [t for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,))
                   if heartbeats or str(t.user_attrs.get("worker", "")).rpartition(":")[0]
                   in ("", here)]
        if not running:
            return len(waited)
        if not waited:
            say(f"Waiting for {len(running)} trial(s) of other workers on study "
                f"{study.study_name} to end (trials "
                f"{', '.join(str(t.number) for t in running)})")
        waited.update(t.number for t in running)
        time.sleep(poll)
