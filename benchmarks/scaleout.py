"""Studies across worker commands: trials per hour with 1, 2 and 3 commands on one PostgreSQL study
and one MLflow tracking server (``archselect-cluster up``), each command a separate process with
its own runs folder, as on separate machines.

    .venv/bin/python benchmarks/scaleout.py [--minutes 2] [--commands 1,2,3]

Each arm starts a fresh cluster, then K commands at once on the tabular row's built-in data
(breast_cancer), one trial at a time and one torch thread each (``search.n_workers=1
search.threads=1``), with more trials than fit in ``search.timeout``; the trials are read from the
study (finished trials over the span from the first start to the last end). On this 2-core
machine a third command shares the cores with the other two: it gains from the time the others
spend waiting on the two servers between trials. Writes benchmarks/results/scaleout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import optuna

from archselect.cluster import down, up

ROW = ["task=tabular_classification", "data=breast_cancer"]


def arm(k: int, minutes: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="archselect-scaleout-") as tmp:
        cluster = up(Path(tmp) / "cluster")
        try:
            args = [*ROW, "search.n_trials=100000", f"search.timeout={minutes * 60:g}",
                    "search.study_name=bench", f"search.storage={cluster.storage}",
                    f"tracking.uri={cluster.tracking}", "selector.references=false",
                    "tracking.register=false", "search.n_workers=1", "search.threads=1",
                    *benchlib.QUIET, *benchlib.ONE_FIT]
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            env.pop("OMP_NUM_THREADS", None)
            load_before = os.getloadavg()[0]
            start = time.monotonic()
            procs = []
            for i in range(k):
                folder = Path(tmp) / f"command{i}"
                folder.mkdir()
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "archselect", *args, f"search.worker={i}",
                     f"runs_dir={folder}"], cwd=folder, env=env, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            for p in procs:
                _, err = p.communicate()
                if p.returncode != 0:
                    raise SystemExit(err[-3000:])
            command_s = time.monotonic() - start
            study = optuna.load_study(study_name="bench", storage=cluster.storage)
            done = [t for t in study.trials if t.state.is_finished() and t.datetime_complete
                    and t.value is not None]
            span = (max(t.datetime_complete for t in done)  # type: ignore[type-var]
                    - min(t.datetime_start for t in done)).total_seconds()  # type: ignore[type-var]
            numbers = [t.number for t in study.trials]
            return {"commands": k, "workers_with_trials": len({t.user_attrs.get("worker")
                                                               for t in done}),
                    "trials": len(done), "unique_numbers": len(numbers) == len(set(numbers)),
                    "search_span_s": round(span, 1),
                    "trials_per_hour": round(len(done) / span * 3600, 1),
                    "best_value": round(float(study.best_value), 4),
                    "command_s": round(command_s, 1),
                    "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
        finally:
            down(Path(tmp) / "cluster", purge=True)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| commands on the study | trials | trials/hour | x one command | best val_f1 | "
             "load avg before, after |", "|---|---|---|---|---|---|"]
    one = rows[0]["trials_per_hour"]
    lines += [f"| {r['commands']} | {r['trials']} | {r['trials_per_hour']:,.0f} | "
              f"{r['trials_per_hour'] / one:.2f} | {r['best_value']} | {r['load_avg_1m']} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--commands", default="1,2,3")
    args = parser.parse_args()
    info = benchlib.machine()
    benchlib.print_machine(info)
    rows = []
    for k in (int(x) for x in args.commands.split(",")):
        result = arm(k, args.minutes)
        print(json.dumps(result), flush=True)
        rows.append(result)
    benchlib.write_result("scaleout", {"minutes": args.minutes, "row": " ".join(ROW),
                                       "rows": rows}, info)
    print(table(rows))


if __name__ == "__main__":
    main()
