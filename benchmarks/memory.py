"""Memory: resident set size across 30 short trials in one process (tabular row, iris).

    .venv/bin/python benchmarks/memory.py [--trials 30]

RSS (psutil) is read after every trial (when its MLflow child run ends) and sampled every 20 ms
for the peak. Growth is RSS after the last trial against RSS after the first one; goal < 10 %.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
from pathlib import Path
from typing import Any

import benchlib

GOAL = 0.10
ROW = ["task=tabular_classification", "data=iris", "search.max_epochs=5", "search.patience=5",
       "tracking.register=false", *benchlib.ONE_FIT]
MB = 1024 * 1024


def main() -> None:
    import psutil

    from archselect.tracking import Tracker

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    info = benchlib.machine()
    benchlib.print_machine(info)
    proc = psutil.Process()
    after_trial: list[float] = []
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss / MB)

    sampler = threading.Thread(target=sample, daemon=True)
    start_rss = proc.memory_info().rss / MB
    with benchlib.Probe() as probe, tempfile.TemporaryDirectory() as tmp:
        probe.wrap(Tracker, "end_trial", "end_trial")
        probe.after["end_trial"].append(lambda: after_trial.append(proc.memory_info().rss / MB))
        sampler.start()
        result = benchlib.run_study([*ROW, f"search.n_trials={args.trials}"], Path(tmp))
        final = proc.memory_info().rss / MB
        stop.set()
        sampler.join()
    if len(after_trial) != args.trials:
        raise RuntimeError(f"{len(after_trial)} trials ended, expected {args.trials}")
    growth = after_trial[-1] / after_trial[0] - 1
    # MB per trial after the first: a leak grows steadily, a one-off cost does not.
    n = len(after_trial) - 1
    xs = list(range(1, n + 1))
    mean_x, mean_y = sum(xs) / n, sum(after_trial[1:]) / n
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, after_trial[1:], strict=True))
             / sum((x - mean_x) ** 2 for x in xs)) if n > 1 else 0.0
    out: dict[str, Any] = {
        "row": " ".join(ROW), "trials": args.trials,
        "states": {s: sum(r.state == s for r in result.outcome.records)
                   for s in ("COMPLETE", "PRUNED", "FAIL")},
        "rss_before_mb": round(start_rss, 1), "rss_after_first_trial_mb": round(after_trial[0], 1),
        "rss_after_last_trial_mb": round(after_trial[-1], 1),
        "rss_final_mb": round(final, 1), "rss_peak_mb": round(peak[0], 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "growth": round(growth, 4), "mb_per_trial": round(slope, 3),
        "rss_after_each_trial_mb": [round(v, 1) for v in after_trial],
        "goal": f"growth (after last trial / after first trial - 1) < {GOAL:.0%}",
        "verdict": benchlib.verdict(growth, GOAL, higher_is_better=False),
    }
    print(f"RSS after trial 1 {after_trial[0]:.0f} MB, after trial {args.trials} "
          f"{after_trial[-1]:.0f} MB ({growth:+.1%}, {slope:+.2f} MB/trial), peak {peak[0]:.0f} MB, "
          f"after the run {final:.0f} MB; goal < {GOAL:.0%}", flush=True)
    benchlib.write_result("memory", out, info)


if __name__ == "__main__":
    main()
