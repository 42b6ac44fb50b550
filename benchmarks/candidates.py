"""Each candidate of each row on its own, on every built-in data set: how long it takes to reach
its best validation value, and the test score of what it reaches.

    .venv/bin/python benchmarks/candidates.py [--sets NAME,NAME] [--trials 3] [--timeout 300]

For every set and every candidate the row's selector keeps for it (a candidate a rule drops is
recorded with the rule's reason), one real study restricted to that candidate
(``selector.candidates=[name]``): its baseline trial first, then the sampler's, up to ``--trials``
trials or ``--timeout`` seconds, at the row's own budgets otherwise (cross-validation for small
data, refit). No ensemble, so the test score is the candidate's best trial (refitted where the row
refits), and no reference (``benchmarks/heldout.py`` sets the networks beside it).

Reported per candidate: the best validation value, the seconds of training until the trial that
reached it ended (trial durations summed in trial order, the study's bookkeeping left out), the
test metric of the row, and the parameter count. Results merge into ``results/candidates.json``
set by set; ``results/candidates.md`` is the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

# The built-in sets, by row (the overrides that pick them).
SETS: dict[str, list[str]] = {
    "rotten_tomatoes": ["task=text_classification"],
    "digits": ["task=image_classification", "data=digits"],
    "fashion_mnist": ["task=image_classification", "data=fashion_mnist"],
    "iris": ["task=tabular_classification", "data=iris"],
    "wine": ["task=tabular_classification", "data=wine"],
    "breast_cancer": ["task=tabular_classification", "data=breast_cancer"],
    "diabetes": ["task=tabular_regression", "data=diabetes"],
    "sunspots": ["task=time_series_forecasting", "data=sunspots"],
    "co2": ["task=time_series_forecasting", "data=co2"],
    "airline": ["task=time_series_forecasting", "data=airline"],
    "gunpoint": ["task=time_series_classification", "data=gunpoint"],
    "basic_motions": ["task=time_series_classification", "data=basic_motions"],
    "arrow_head": ["task=time_series_classification", "data=arrow_head"],
}


def selection(overrides: list[str]) -> Any:
    """The row's selection for the set (a dry run): candidates kept, and those dropped."""
    with tempfile.TemporaryDirectory() as tmp:
        return benchlib.run_study([*overrides, "dry_run=true"], Path(tmp)).selection


def one(overrides: list[str], name: str, trials: int, timeout: int) -> dict[str, Any]:
    """One candidate alone on one set."""
    from archselect.tasks import families

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = benchlib.run_study(
            [*overrides, f"selector.candidates=[{name}]", f"search.n_trials={trials}",
             f"search.timeout={timeout}", f"search.trial_timeout={timeout}",
             "search.ensemble_rounds=0",
             "selector.references=false", f"search.study_name=candidate-{name}"], Path(tmp))
        wall = time.perf_counter() - start
    records = sorted(result.outcome.records, key=lambda r: r.number)
    best = result.outcome.best
    spent, to_best = 0.0, 0.0
    for r in records:
        spent += r.duration_s
        if best is not None and r.number == best.number:
            to_best = spent
    metric = str(families.get(result.selection.task.family).test_metric)
    return {
        "metric": metric, "test": round(float(result.test_metrics.get(metric, float("nan"))), 4),
        "test_metrics": {k: round(float(v), 4) for k, v in result.test_metrics.items()},
        "best_val": None if best is None else round(float(best.value), 4),
        "monitor": result.selection.task.monitor,
        "seconds_to_best": round(to_best, 1), "training_s": round(spent, 1),
        "command_s": round(wall, 1), "trials": len(records),
        "by_state": {s: sum(r.state == s for r in records) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "n_params": None if best is None else best.n_params,
        "best_params": {} if best is None else best.params,
        "final_model": result.final_model,
    }


def table(sets: dict[str, Any]) -> str:
    """The Markdown table: one row per set and candidate."""
    lines = ["| set | candidate | best validation | seconds to its best | test | parameters | "
             "trials (pruned) |", "|---|---|---|---|---|---|---|"]
    for set_name, entry in sets.items():
        for cand, e in entry["candidates"].items():
            if "dropped" in e:
                lines.append(f"| {set_name} | {cand} | dropped: {e['dropped']} | | | | |")
            elif "error" in e and "completed (0 failed" in e["error"]:
                lines.append(f"| {set_name} | {cand} | no trial finished within the per-trial "
                             "cap (its first epochs take longer) | | | | |")
            elif "error" in e:
                lines.append(f"| {set_name} | {cand} | error: {e['error']} | | | | |")
            else:
                lines.append(
                    f"| {set_name} | {cand} | {e['monitor']} {e['best_val']} | "
                    f"{e['seconds_to_best']:.0f} s | {e['metric']} {e['test']} | "
                    f"{e['n_params'] or ''} | {e['trials']} ({e['by_state']['PRUNED']}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="all", help="all, or set names separated by commas")
    parser.add_argument("--trials", type=int, default=3, help="trials per candidate study")
    parser.add_argument("--timeout", type=int, default=300, help="search.timeout per study (s)")
    args = parser.parse_args()
    names = list(SETS) if args.sets == "all" else args.sets.split(",")
    unknown = [n for n in names if n not in SETS]
    if unknown:
        parser.error(f"--sets: unknown {', '.join(unknown)}; expected some of {', '.join(SETS)}")
    info = benchlib.machine()
    benchlib.print_machine(info)
    for set_name in names:
        overrides = SETS[set_name]
        sel = selection(overrides)
        entry: dict[str, Any] = {"row": sel.task.name, "candidates": {}}
        for cand in sel.candidates:
            try:
                entry["candidates"][cand.name] = one(overrides, cand.name, args.trials,
                                                     args.timeout)
            except Exception as exc:  # one candidate's failure is a row of the table
                entry["candidates"][cand.name] = {
                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            print(f"{set_name} {cand.name}: {json.dumps(entry['candidates'][cand.name])[:300]}",
                  flush=True)
            write(set_name, entry, args.trials, args.timeout, info)
        for cand_name, why in sel.dropped.items():
            entry["candidates"][cand_name] = {"dropped": why}
        write(set_name, entry, args.trials, args.timeout, info)


def write(set_name: str, entry: dict[str, Any], trials: int, timeout: int,
          info: dict[str, Any]) -> None:
    """Merge one set's entry into ``results/candidates.json`` (re-read first: another process
    may be measuring other sets) and rewrite the table."""
    path = benchlib.RESULTS / "candidates.json"
    sets: dict[str, Any] = json.loads(path.read_text()).get("sets", {}) if path.is_file() else {}
    sets[set_name] = {**entry, "machine": benchlib.machine()}
    benchlib.write_result("candidates", {"sets": sets, "trials": trials, "timeout_s": timeout},
                          info)
    (benchlib.RESULTS / "candidates.md").write_text(table(sets))


if __name__ == "__main__":
    main()
