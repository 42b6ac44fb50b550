"""``python -m archselect.worker``: one extra search worker of a study (``search.n_workers``).

Its config arrives on stdin (resolved YAML: a password in it never touches disk), its number and
study in ``ARCHSELECT_WORKER`` / ``ARCHSELECT_STUDY``. It prepares the same data and selection,
opens the same study and runs trials until the study holds ``search.n_trials``; the command that
started it finishes the study.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import replace

from omegaconf import OmegaConf
from rich.console import Console

from archselect import report
from archselect.config.errors import ArchselectError
from archselect.config.validate import typed
from archselect.run import prepare
from archselect.search.fit import TrialSettings
from archselect.search.objective import Objective, SearchProgress, checkpoint_folder
from archselect.search.study import open_study, run_search
from archselect.search.workers import PARENT_ENV, STUDY_ENV, WORKER_ENV, share_threads
from archselect.tracking import Tracker


def work(config_yaml: str, index: int, study_name: str) -> int:
    """Worker ``index`` of the study: the same data and selection, the same study, more trials.
    Returns its exit code (130 when a signal stopped it)."""
    conf = typed(OmegaConf.create(config_yaml))
    prep = prepare(conf, Console(quiet=True))
    task = prep.selection.task
    tracker = Tracker.open(conf.tracking)
    study = open_study(conf.search, study_name, prep.selection, prep.spec, tracker=tracker,
                       worker=index)
    tracker.parent_id = study.user_attrs.get("mlflow_parent_run_id")
    settings = TrialSettings.of(conf.search, conf.trainer, monitor=task.monitor, mode=task.mode,
                                seed=conf.seed,
                                checkpoints=checkpoint_folder(conf.runs_dir, study_name,
                                                              conf.search.storage))
    # One progress bar per terminal: the command's own worker's.
    settings = replace(settings, progress_bar=False)
    objective = Objective(settings, study_name, prep.selection, prep.dm, prep.hw, tracker,
                          prep.family_cls, SearchProgress())
    outcome = run_search(conf.search, study, objective, prep.selection.candidates,
                         on_trial=report.trial_line(
                             Console(width=140, quiet=conf.output != "text"), task.monitor,
                             f"w{index} "),
                         enqueue=False)
    return 130 if outcome.interrupted else 0


def exit_with_parent(interval: float = 2.0) -> None:
    """A worker whose command is gone (killed with SIGKILL, a lost terminal) stops its running
    trial as a signal would, and exits, instead of training on unseen. The command's process id
    comes in ``ARCHSELECT_PARENT`` (it may be gone before this module has imported), else it is
    the process that started this one."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="archselect-parent-watch", daemon=True).start()


def main() -> None:
    """Read the config from stdin, share the threads the parent chose, run, exit."""
    exit_with_parent()
    index = int(os.environ.get(WORKER_ENV, "1"))
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        share_threads(int(threads))
    try:
        code = work(sys.stdin.read(), index, os.environ[STUDY_ENV])
    except ArchselectError as exc:
        print(f"archselect: error: worker {index}: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
