"""Every core busy by default: trials per hour and the best value reached in a fixed search time,
before and after the selector chose the trials' parallelism, on three rows.

    .venv/bin/python benchmarks/workers.py [--minutes 5] [--rows tabular,forecasting,image]

"before" is what a default run did until the selector decided it: one process, torch's default
threads (``search.n_workers=1 search.threads=<cores>``); "after" is today's default
(``search.n_workers=null``: ``selector.rules.parallel`` picks workers and threads from the data,
the models and the machine). Each arm runs the real command on the row's built-in data with
``search.timeout`` = the given minutes and more trials than fit in it, a journal storage in a
fresh folder, nothing after the search but the test (no reference, refit, ensemble or
registration). Trials per hour are read from the study itself (finished trials over the span from
the first trial's start to the last one's end, over all workers). The two arms of a row run one
after the other, before first. Writes benchmarks/results/workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

ROWS = {
    "tabular": ["task=tabular_classification", "data=breast_cancer"],
    "forecasting": ["task=time_series_forecasting", "data=airline"],
    "image": ["task=image_classification", "data=digits"],
}


def arm(row: str, before: bool, minutes: float) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="archselect-bench-") as tmp:
        journal = Path(tmp) / "study.journal"
        args = [*ROWS[row], "search.n_trials=10000", f"search.timeout={minutes * 60:g}",
                "search.study_name=bench", f"search.storage=journal:///{journal}",
                "selector.references=false", "tracking.register=false", f"runs_dir={tmp}",
                *benchlib.QUIET, *benchlib.ONE_FIT,
                *(["search.n_workers=1", f"search.threads={cores}"] if before else [])]
        load_before = os.getloadavg()[0]
        start = time.monotonic()
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("OMP_NUM_THREADS", None)
        proc = subprocess.run([sys.executable, "-m", "archselect", *args], cwd=tmp,
                              capture_output=True, text=True, env=env)
        command_s = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        rule = next((ln for ln in proc.stdout.splitlines() if "Search: up to" in ln), "")
        found = re.search(r"(?:(\d+) workers x )?(\d+) threads?", rule)
        parallel = (f"{found.group(1) or 1} x {found.group(2)} thread(s)" if found else "")
        study = optuna.load_study(study_name="bench",
                                  storage=JournalStorage(JournalFileBackend(str(journal))))
        done = [t for t in study.trials if t.state.is_finished() and t.datetime_complete
                and t.value is not None]
        span = (max(t.datetime_complete for t in done)  # type: ignore[type-var]
                - min(t.datetime_start for t in done)).total_seconds()  # type: ignore[type-var]
        return {"row": row, "arm": "before" if before else "after",
                "overrides": " ".join(ROWS[row]), "parallel": parallel,
                "workers": len({t.user_attrs.get("worker") for t in done}),
                "trials": len(done), "search_span_s": round(span, 1),
                "trials_per_hour": round(len(done) / span * 3600, 1),
                "best_value": round(float(study.best_value), 4),
                "direction": study.direction.name.lower(),
                "command_s": round(command_s, 1),
                # The machine may be shared: other processes' load skews single runs.
                "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| row | arm | trials side by side | trials | trials/hour | best value | "
             "load avg before, after |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['arm']} | {r['parallel'] or r['workers']} | {r['trials']} | "
              f"{r['trials_per_hour']:,.0f} | {r['best_value']} ({r['direction']}) | "
              f"{r['load_avg_1m']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rows", default=",".join(ROWS))
    args = parser.parse_args()
    info = benchlib.machine()
    benchlib.print_machine(info)
    rows = []
    for row in args.rows.split(","):
        for before in (True, False):
            result = arm(row, before, args.minutes)
            print(json.dumps(result), flush=True)
            rows.append(result)
    gains = {}
    for row in args.rows.split(","):
        b, a = (next(r for r in rows if r["row"] == row and r["arm"] == x)
                for x in ("before", "after"))
        gains[row] = round(a["trials_per_hour"] / b["trials_per_hour"], 2)
    benchlib.write_result("workers", {"minutes": args.minutes, "rows": rows,
                                      "trials_per_hour_after_over_before": gains}, info)
    print(table(rows))
    print(json.dumps(gains))


if __name__ == "__main__":
    main()
