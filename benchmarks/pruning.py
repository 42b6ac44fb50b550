"""Pruning: the same study (same seed, same trial budget) with the row's pruner and with Optuna's
NopPruner: total epochs trained, wall time, best validation value and test metric.

    .venv/bin/python benchmarks/pruning.py [--seeds 42,43,44] [--trials 12]

Goal: at least 40 % fewer epochs with the pruner, at an equal best value. Baseline trials (one
per candidate, run first) are never pruned; early stopping stays on in both arms.
"""

from __future__ import annotations

import argparse
from typing import Any

import benchlib

GOAL = 0.40
ROW = ["task=tabular_classification", "data=breast_cancer", "search.max_epochs=40",
       "tracking.register=false", *benchlib.ONE_FIT]
NO_PRUNER = ["~search.pruner.n_startup_trials", "~search.pruner.n_warmup_steps",
             "search.pruner._target_=optuna.pruners.NopPruner"]


def study(seed: int, trials: int, pruner: bool) -> dict[str, Any]:
    found = benchlib.study_summary([*ROW, f"seed={seed}", f"search.n_trials={trials}",
                                    *([] if pruner else NO_PRUNER)])
    return {**found, "pruned": found["by_state"]["PRUNED"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    info = benchlib.machine()
    benchlib.print_machine(info)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        on, off = study(seed, args.trials, True), study(seed, args.trials, False)
        saved = 1 - on["epochs"] / off["epochs"]
        runs.append({"seed": seed, "pruner": on, "no_pruner": off, "epochs_saved": round(saved, 4)})
        print(f"seed {seed}: pruner {on['epochs']} epochs {on['study_s']}s best {on['best_val']} "
              f"({on['pruned']} pruned); no pruner {off['epochs']} epochs {off['study_s']}s best "
              f"{off['best_val']}; {saved:.0%} fewer epochs", flush=True)
    saved = benchlib.median([r["epochs_saved"] for r in runs])

    def med(arm: str, key: str) -> float:
        return round(benchlib.median([r[arm][key] for r in runs]), 4)

    out = {
        "row": " ".join(ROW), "trials": args.trials, "metric": "val_f1 (maximize)",
        "goal": f">= {GOAL:.0%} fewer epochs at an equal best value",
        "median": {arm: {k: med(arm, k) for k in ("epochs", "study_s", "best_val", "pruned")}
                   for arm in ("pruner", "no_pruner")},
        "epochs_saved": round(saved, 4),
        "best_val_difference": round(med("pruner", "best_val") - med("no_pruner", "best_val"), 4),
        "verdict": benchlib.verdict(saved, GOAL, higher_is_better=True), "runs": runs,
    }
    print(f"median: {saved:.0%} fewer epochs with the pruner (goal >= {GOAL:.0%}); best value "
          f"difference {out['best_val_difference']:+.4f}", flush=True)
    benchlib.write_result("pruning", out, info)


if __name__ == "__main__":
    main()
