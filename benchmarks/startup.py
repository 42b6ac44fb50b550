"""Start-up: wall time from the command's start to the first training step, and of a whole
``dry_run=true`` command, against a bare ``import torch, lightning, optuna, mlflow``; and how fast
a config error, an unknown task and ``--help`` are answered.

    .venv/bin/python benchmarks/startup.py [--reps 3] [--rows tabular,text,image,forecasting]

Every measurement is a fresh process. The first-step run is the ``archselect`` command itself
(``archselect.cli.main`` with the row's overrides) in a process that notes the time of the first
training batch and exits there (the classical reference, fitted before the first trial, is off:
it is the study's work, not start-up). Goals: both at most 1.2x the bare import; an answer in
under 3 s.
One extra run per row that misses under cProfile says where the time before the first step goes
(by package).
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

GOAL = 1.2
ANSWER_GOAL = 3.0
BARE = "import torch, lightning, optuna, mlflow"
# One place for the rows: the command's overrides (stores go to a fresh folder each time).
ROWS: dict[str, list[str]] = {
    "tabular": ["task=tabular_classification", "data=iris"],
    "text": ["task=text_classification"],
    "image": ["task=image_classification", "data=digits"],
    "forecasting": ["task=time_series_forecasting", "data=airline"],
}
# The row's classical reference is fitted before the first trial (the text row's TF-IDF model
# tunes its C for about 30 s on 2 cores): the study's work, not start-up, so it is off here.
NO_REFERENCE = ["selector.references=false"]
# Commands answered without training: (what, arguments, the exit code they must end with).
ANSWERS: list[tuple[str, list[str], int]] = [
    ("--help", ["--help"], 0),
    ("unknown task", ["task=bogus"], 2),
    ("misspelt key", ["task=tabular_classification", "serch.n_trials=3"], 2),
    ("bad value", ["task=tabular_classification", "search.n_trials=many"], 2),
    ("missing file", ["task=tabular_classification", "data=csv", "data.path=nope.csv"], 2),
    ("misspelt candidate", ["task=image_classification", "selector.candidates=[resnt]"], 2),
]

# Runs in the child: the archselect command, stopped at its first training batch.
CHILD = r"""
import json, os, sys, time
stamp, profile_to = sys.argv[1], sys.argv[2]
prof = None
if profile_to:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()

def first_step(self, batch, batch_idx):
    now = time.time()
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile_to)
    with open(stamp, "w") as fh:
        fh.write(json.dumps({"first_step": now}))
    os._exit(0)

from lightning.pytorch import LightningModule
LightningModule.on_train_batch_start = first_step
sys.argv = ["archselect", *sys.argv[3:]]
from archselect.cli import main
main()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def bare_import() -> float:
    start = time.time()
    subprocess.run([sys.executable, "-c", BARE], check=True, env=_env())
    return time.time() - start


def dry_run(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        subprocess.run([sys.executable, "-m", "archselect", *overrides, "dry_run=true",
                        f"runs_dir={tmp}", *benchlib.QUIET], check=True, env=_env(),
                       stdout=subprocess.DEVNULL)
        return time.time() - start


def answer(args: list[str], code: int) -> float:
    """Seconds until ``archselect <args>`` has answered (and exited with ``code``)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        proc = subprocess.run([sys.executable, "-m", "archselect", *args], cwd=tmp, env=_env(),
                              capture_output=True, text=True)
        took = time.time() - start
    if proc.returncode != code:
        raise RuntimeError(f"archselect {' '.join(args)} exited {proc.returncode}, not {code}: "
                           f"{proc.stderr.strip()[-500:]}")
    return took


def first_step(overrides: list[str], profile_to: str = "") -> float:
    with tempfile.TemporaryDirectory() as tmp:
        stamp = Path(tmp) / "stamp.json"
        start = time.time()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(stamp), profile_to, *overrides,
                               *NO_REFERENCE, f"runs_dir={tmp}/runs", *benchlib.QUIET], env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not stamp.is_file():
            raise RuntimeError(f"no training step was reached (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-500:]}")
        return float(json.loads(stamp.read_text())["first_step"]) - start


def main() -> None:
    import pstats

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    info = benchlib.machine()
    benchlib.print_machine(info)
    bare_import()  # warm the file cache once, untimed, so every timed run starts alike
    bare = [bare_import() for _ in range(args.reps)]
    base = benchlib.median(bare)
    print(f"bare import: median {base:.2f}s of {[round(b, 2) for b in bare]}", flush=True)
    out: dict[str, Any] = {"goal": f"start-up / bare import <= {GOAL}", "bare_import": BARE,
                           "bare_import_s": round(base, 3), "bare_reps_s": [round(b, 3) for b in bare],
                           "rows": {}, "answer_goal": f"seconds <= {ANSWER_GOAL:g}", "answers": {}}
    for what, cli_args, code in ANSWERS:
        times = [answer(cli_args, code) for _ in range(args.reps)]
        took = benchlib.median(times)
        out["answers"][what] = {"command": "archselect " + " ".join(cli_args),
                                "seconds": round(took, 3), "reps_s": [round(t, 3) for t in times],
                                "verdict": benchlib.verdict(took, ANSWER_GOAL,
                                                            higher_is_better=False)}
        print(f"{what}: answered in {took:.2f}s; goal <= {ANSWER_GOAL:g}s", flush=True)
    for name in args.rows.split(","):
        overrides = ROWS[name]
        steps = [first_step(overrides) for _ in range(args.reps)]
        drys = [dry_run(overrides) for _ in range(args.reps)]
        step, dry = benchlib.median(steps), benchlib.median(drys)
        row: dict[str, Any] = {
            "command": "archselect " + " ".join(overrides),
            "first_step_command": "archselect " + " ".join([*overrides, *NO_REFERENCE]),
            "first_step_s": round(step, 3), "dry_run_s": round(dry, 3),
            "first_step_reps_s": [round(s, 3) for s in steps],
            "dry_run_reps_s": [round(s, 3) for s in drys],
            "first_step_ratio": benchlib.verdict(step / base, GOAL, higher_is_better=False),
            "dry_run_ratio": benchlib.verdict(dry / base, GOAL, higher_is_better=False),
        }
        print(f"{name}: first training step {step:.2f}s ({step / base:.2f}x), dry run {dry:.2f}s "
              f"({dry / base:.2f}x); goal <= {GOAL}x", flush=True)
        missed = not (row["first_step_ratio"]["met"] and row["dry_run_ratio"]["met"])
        if missed and not args.no_profile:
            with tempfile.TemporaryDirectory() as tmp:
                stats_file = str(Path(tmp) / "startup.prof")
                first_step(overrides, stats_file)
                row["profile"] = benchlib.summarise_profile(pstats.Stats(stats_file))
        out["rows"][name] = row
    benchlib.write_result("startup", out, info)


if __name__ == "__main__":
    main()
