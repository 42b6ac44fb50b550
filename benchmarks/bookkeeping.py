"""Bookkeeping: seconds per trial spent on MLflow, Optuna and checkpointing, as a share of trial
time, for trials of about 1 s, 10 s and 60 s.

    .venv/bin/python benchmarks/bookkeeping.py [--classes 1s,10s,60s] [--trials N]

Each class is one real study (``run(cfg)``: image row, digits, the CNN, stores in a temporary
folder) whose trials differ only in length (epochs). Calls are timed on their way through:
every ``Tracker`` call (MLflow), Optuna's trial calls inside the objective plus the study loop
between objectives (ask/tell, storage), ``Trainer.save_checkpoint`` and dropping checkpoints,
the garbage collection Optuna runs after each trial (``gc_after_trial=True``), and Lightning's
``fit``. Training is ``fit`` minus the bookkeeping done inside it; set-up is the
rest of the objective (data loaders, model, ``Trainer``).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path
from typing import Any

import benchlib

ROW = ["task=image_classification", "data=digits", "selector.candidates=[cnn]",
       # every trial runs its full length: no pruner, no early stop
       "~search.pruner.n_startup_trials", "~search.pruner.n_warmup_steps",
       "search.pruner._target_=optuna.pruners.NopPruner", "tracking.register=false",
       *benchlib.ONE_FIT]
# Trial lengths on the development machine (digits CNN, ~0.25 s an epoch when quiet).
CLASSES: dict[str, dict[str, int]] = {
    "1s": {"epochs": 4, "trials": 5},
    "10s": {"epochs": 40, "trials": 3},
    "60s": {"epochs": 240, "trials": 1},
}
BOOKKEEPING = ("mlflow", "optuna", "checkpoint", "gc")


def probe_study(overrides: list[str]) -> tuple[benchlib.Probe, Any]:
    """Run one study with every bookkeeping call timed."""
    import lightning.pytorch as pl
    import optuna

    from archselect.search import study as study_module
    from archselect.search.objective import Objective
    from archselect.tracking import Tracker

    probe = benchlib.Probe()
    probe.wrap(Objective, "__call__", "objective", region="objective")
    probe.wrap(pl.Trainer, "fit", "fit", region="fit")
    probe.wrap(study_module, "run_search", "study")
    for name in ("start_trial", "end_trial", "log_metrics", "log_params", "set_tags"):
        probe.wrap(Tracker, name, "mlflow")
    for name in ("report", "should_prune", "set_user_attr", "suggest_categorical",
                 "suggest_float", "suggest_int"):
        probe.wrap(optuna.trial.Trial, name, "optuna")
    probe.wrap(gc, "collect", "gc")  # the study runs with gc_after_trial=True
    probe.wrap(pl.Trainer, "save_checkpoint", "checkpoint")
    probe.wrap(Objective, "_drop_checkpoint", "checkpoint")
    with probe, tempfile.TemporaryDirectory() as tmp:
        result = benchlib.run_study(overrides, Path(tmp))
    return probe, result


def breakdown(probe: benchlib.Probe, n: int) -> dict[str, Any]:
    """Seconds per trial by where they went, and bookkeeping's share of the trial."""
    sec = probe.seconds

    def spent(where: str) -> float:
        return sum(sec[c][where] for c in BOOKKEEPING)

    wall = probe.total("study")
    # Between objectives, besides the calls timed there: Optuna's ask/tell, storage, callbacks.
    loop = wall - probe.total("objective") - spent("outside")
    parts = {
        "mlflow": probe.total("mlflow"),
        "optuna": probe.total("optuna") + loop,
        "checkpoint": probe.total("checkpoint"),
        "gc": probe.total("gc"),
        "training": probe.total("fit") - spent("fit"),
        "setup": probe.total("objective") - probe.total("fit") - spent("objective"),
    }
    bookkeeping = sum(parts[c] for c in BOOKKEEPING)
    return {
        "trial_s": round(wall / n, 3),
        "per_trial_s": {k: round(v / n, 4) for k, v in parts.items()},
        "bookkeeping_s": round(bookkeeping / n, 4),
        "bookkeeping_share": round(bookkeeping / wall, 4) if wall else 0.0,
        "bookkeeping_inside_fit_s": round(spent("fit") / n, 4),
        "mlflow_calls_per_trial": round(probe.calls["mlflow"] / n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--trials", type=int, default=None, help="trials per class (overrides)")
    args = parser.parse_args()
    info = benchlib.machine()
    benchlib.print_machine(info)
    out: dict[str, Any] = {"row": " ".join(ROW), "classes": {}}
    for name in args.classes.split(","):
        spec = CLASSES[name]
        n = args.trials or spec["trials"]
        epochs = spec["epochs"]
        probe, result = probe_study([*ROW, f"search.n_trials={n}", f"search.max_epochs={epochs}",
                                     f"search.patience={epochs}"])
        done = len(result.outcome.records)
        if done != n:
            raise RuntimeError(f"class {name}: {done} trials finished, expected {n}")
        row = {"epochs": epochs, "trials": n, **breakdown(probe, n)}
        out["classes"][name] = row
        print(f"{name}: trial {row['trial_s']:.2f}s, bookkeeping {row['bookkeeping_s']:.3f}s "
              f"({row['bookkeeping_share']:.1%}): " + ", ".join(
                  f"{k} {v:.3f}s" for k, v in row["per_trial_s"].items()), flush=True)
    benchlib.write_result("bookkeeping", out, info)


if __name__ == "__main__":
    main()
