"""Trials per hour with 1 vs 2 worker processes on one study (torch threads split between them),
and, to tell the two effects apart, 1 worker limited to 1 thread.

    .venv/bin/python benchmarks/workers.py [--trials 16] [--epochs 30] [--repeats 1]

Runs the real command, ``archselect task=tabular_classification data=breast_cancer`` with the
MLP only, a fixed number of epochs per trial (no early stopping, no pruning: every trial does
the same work), once per worker count, each in a fresh folder with a journal storage. The
search span is read from the study itself: first trial start to last trial end, over all
workers. Writes benchmarks/results/workers.json and workers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from archselect.search.workers import thread_share as _share


def thread_share(n_workers: int) -> int:
    """The torch threads archselect gives each of ``n_workers`` workers on this machine."""
    return _share(len(os.sched_getaffinity(0)), n_workers)


def one(n_workers: int, trials: int, epochs: int, threads: int | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="archselect-bench-") as tmp:
        journal = Path(tmp) / "study.journal"
        args = ["task=tabular_classification", "data=breast_cancer", "selector.candidates=[mlp]",
                f"search.n_trials={trials}", f"search.max_epochs={epochs}",
                f"search.patience={epochs}", "search.timeout=null", "search.trial_timeout=null",
                "search.pruner._target_=optuna.pruners.NopPruner",
                "~search.pruner.n_startup_trials", "~search.pruner.n_warmup_steps",
                f"search.n_workers={n_workers}", "search.study_name=bench",
                f"search.storage=journal:///{journal}", "tracking.register=false",
                "trainer.progress_bar=false", f"runs_dir={tmp}", *benchlib.ONE_FIT]
        load_before = os.getloadavg()[0]
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "archselect", *args], cwd=tmp,
                              capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1",
                                   **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
        command_s = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        study = optuna.load_study(study_name="bench",
                                  storage=JournalStorage(JournalFileBackend(str(journal))))
        done = [t for t in study.trials if t.state.is_finished() and t.datetime_complete
                and not t.user_attrs.get("surplus")]
        span = (max(t.datetime_complete for t in done)  # type: ignore[type-var]
                - min(t.datetime_start for t in done)).total_seconds()  # type: ignore[type-var]
        workers = {t.user_attrs.get("worker") for t in done}
        return {"n_workers": n_workers, "threads_per_worker": threads or thread_share(n_workers),
                "trials": len(done), "workers_that_ran_trials": len(workers),
                "search_span_s": round(span, 1), "command_s": round(command_s, 1),
                # The machine is shared: other processes' load skews single runs.
                "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "trials_per_hour": round(len(done) / span * 3600, 1),
                "mean_trial_s": round(sum(float(t.user_attrs.get("duration_s", 0)) for t in done)
                                      / len(done), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        for n, threads in ((1, None), (2, None), (1, 1)):
            row = one(n, args.trials, args.epochs, threads)
            print(json.dumps(row))
            rows.append(row)
    import psutil

    summary = {}
    for n, t in ((1, thread_share(1)), (2, thread_share(2)), (1, 1)):
        rates = sorted(r["trials_per_hour"] for r in rows
                       if (r["n_workers"], r["threads_per_worker"]) == (n, t))
        summary[f"{n}_workers_{t}_threads_median_trials_per_hour"] = rates[len(rates) // 2]
    print(json.dumps(summary))
    result = {"machine": {"cpu_cores": len(os.sched_getaffinity(0)),
                          "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                          "python": platform.python_version()},
              "trials": args.trials, "epochs_per_trial": args.epochs, "summary": summary,
              "runs": rows}
    folder = Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    (folder / "workers.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| workers | threads each | trials | search span (s) | trials/hour | mean trial (s) "
             "| load avg before, after |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['n_workers']} | {r['threads_per_worker']} | {r['trials']} | {r['search_span_s']} | "
              f"{r['trials_per_hour']} | {r['mean_trial_s']} | {r['load_avg_1m']} |"
              for r in rows]
    (folder / "workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
