"""Parallel workers on one study: start them, share the CPU threads, pass signals on.

``search.n_workers=K`` starts K-1 worker processes (``python -m archselect.worker``) beside this
one. Each opens the same study in the same storage (Optuna's storage coordinates them: trial
numbers come from it), runs trials until the study holds ``search.n_trials``, and writes its
trials to the same MLflow parent run. The command's own process is worker 0: it then finishes the
study (test, register). Starting the same command on another machine with the same RDB storage
and study name adds workers there.

Each worker trains on the torch threads the selector chose (``selector.rules.parallel``; one each for
small models) and, where there are several GPUs, its own GPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from archselect.hardware import HardwareProfile

WORKER_ENV = "ARCHSELECT_WORKER"
STUDY_ENV = "ARCHSELECT_STUDY"
#: the process id of the command that started the worker: the worker exits when it is gone
PARENT_ENV = "ARCHSELECT_PARENT"


def share_threads(n_threads: int) -> None:
    """Limit this process's torch intra- and inter-op threads."""
    import torch

    torch.set_num_threads(n_threads)
    # Settable only before the first parallel op; intra-op threads are what counts.
    with suppress(RuntimeError):
        torch.set_num_interop_threads(n_threads)


@contextmanager
def spawned(n_workers: int, threads: int, config_yaml: str, study_name: str,
            hw: HardwareProfile) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``n_workers - 1`` worker processes for the study, each reading the resolved config
    ``config_yaml`` on its stdin (a password in it never touches disk) and training on
    ``threads`` torch threads, as this process does while inside; on leaving, wait for them
    (after a signal, pass it on first so their running trials end cleanly)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # a notebook's own threads come back after the study
    try:
        with _started(n_workers, threads, config_yaml, study_name, hw) as procs:
            yield procs
    finally:
        torch.set_num_threads(before)


@contextmanager
def _started(n_workers: int, threads: int, config_yaml: str, study_name: str,
             hw: HardwareProfile) -> Iterator[list[subprocess.Popen[bytes]]]:
    if n_workers <= 1:
        yield []
        return
    procs = []
    for i in range(1, n_workers):
        env = {**os.environ, WORKER_ENV: str(i), STUDY_ENV: study_name,
               PARENT_ENV: str(os.getpid()), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if len(hw.gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % len(hw.gpus))
        proc = subprocess.Popen([sys.executable, "-m", "archselect.worker"],
                                stdin=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        proc.stdin.write(config_yaml.encode())
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
