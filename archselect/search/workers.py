"""Parallel workers on one study, and what makes a study reproducible.

``search.n_workers=K`` starts K-1 worker processes beside this one. Each opens the same study in
the same storage (Optuna's storage coordinates them: trial numbers come from it), runs trials
until the study holds ``search.n_trials``, and writes its trials to the same MLflow parent run.
The command's own process is worker 0: it then finishes the study (test, register). Starting
the same command on another machine with the same RDB storage and study name adds workers there.

Each worker gets its own share of the CPU threads and, where there are several GPUs, its own GPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib import metadata
from typing import Any

from archselect.hardware import HardwareProfile

#: packages whose versions decide a study's numbers; logged with every study
PACKAGES = ("torch", "lightning", "optuna", "optuna-integration", "mlflow", "numpy",
            "scikit-learn", "pandas", "hydra-core", "tokenizers", "transformers", "torchvision")

WORKER_ENV = "ARCHSELECT_WORKER"
STUDY_ENV = "ARCHSELECT_STUDY"


def package_versions() -> dict[str, str]:
    """``version.<package>`` -> installed version, for the study's parent run."""
    out = {"version.python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def thread_share(cores: int, n_workers: int) -> int:
    """CPU threads per worker: the cores split evenly, at least one each."""
    return max(1, cores // max(1, n_workers))


def share_threads(n_threads: int) -> None:
    """Limit this process's torch intra- and inter-op threads."""
    import torch

    torch.set_num_threads(n_threads)
    # Settable only before the first parallel op; intra-op threads are what counts.
    with suppress(RuntimeError):
        torch.set_num_interop_threads(n_threads)


@contextmanager
def spawned(cfg: Any, study_name: str, hw: HardwareProfile) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``search.n_workers - 1`` worker processes for the study; on leaving, wait for them
    (after a signal, pass it on first so their running trials end cleanly)."""
    from omegaconf import OmegaConf

    n = int(cfg.search.n_workers)
    if n <= 1:
        yield []
        return
    threads = thread_share(hw.cpu_cores, n)
    share_threads(threads)
    # The resolved config travels on the worker's stdin: a password in it never touches disk.
    text = OmegaConf.to_yaml(cfg, resolve=True).encode()
    procs = []
    for i in range(1, n):
        env = {**os.environ, WORKER_ENV: str(i), STUDY_ENV: study_name,
               "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if len(hw.gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % len(hw.gpus))
        proc = subprocess.Popen([sys.executable, "-m", "archselect.search.workers"],
                                stdin=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        proc.stdin.write(text)
        proc.stdin.close()
        procs.append(proc)
    try:
        yield procs
    except BaseException:
        stop(procs)
        raise
    finally:
        for proc in procs:
            proc.wait()
    failed = [p.returncode for p in procs if p.returncode]
    if failed:
        print(f"archselect: warning: {len(failed)} worker(s) ended with exit codes {failed}; "
              "their finished trials are in the study", file=sys.stderr)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Pass SIGTERM on to running workers: each ends its trial cleanly and exits."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def work(cfg: Any, index: int, study_name: str) -> int:
    """Body of worker ``index``: the same data and selection, the same study, more trials."""
    from omegaconf import open_dict
    from rich.console import Console

    from archselect.run import _trial_line, prepare
    from archselect.search.study import Objective, open_study, run_search
    from archselect.tracking import Tracker

    with open_dict(cfg):
        cfg.trainer.progress_bar = False  # one bar per terminal: the first worker's
    console = Console(width=140)
    prep = prepare(cfg, Console(quiet=True))
    tracker = Tracker(str(cfg.tracking.uri), str(cfg.tracking.experiment),
                      str(cfg.tracking.artifact_location),
                      system_metrics_interval=cfg.tracking.system_metrics_interval)
    study = open_study(cfg, study_name, prep.selection, prep.spec, tracker=tracker, worker=index)
    tracker.parent_id = study.user_attrs.get("mlflow_parent_run_id")
    objective = Objective(cfg, study_name, prep.selection, prep.dm, prep.spec, prep.hw, tracker,
                          prep.family_cls)
    outcome = run_search(cfg, study, objective, on_trial=_trial_line(console, cfg, f"w{index} "),
                         enqueue=False)
    return 130 if outcome.interrupted else 0


def main() -> None:
    """``python -m archselect.search.workers``: one worker, its config on stdin."""
    from omegaconf import OmegaConf

    from archselect.config import schema  # noqa: F401  (registers the schema)
    from archselect.config.errors import ArchselectError

    index = int(os.environ.get(WORKER_ENV, "1"))
    cfg = OmegaConf.create(sys.stdin.read())
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        share_threads(int(threads))
    try:
        code = work(cfg, index, os.environ[STUDY_ENV])
    except ArchselectError as exc:
        print(f"archselect: error: worker {index}: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
