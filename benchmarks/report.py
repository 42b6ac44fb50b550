"""Assemble ``benchmarks/RESULTS.md`` from the JSON files under ``benchmarks/results/``.

    .venv/bin/python benchmarks/report.py

Every table is generated from the measurements; ``benchmarks/analysis.md`` (written by people,
about what the profiles show) is appended as it is. A benchmark without a result file is listed
as not run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
QUICK = "make bench"


def load(name: str, results: Path = RESULTS) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['when_utc']}; {m['usable_cores']} cores, torch threads {m['torch_threads']}, "
            f"{m['device']} ({m['cpu']}); load average at start {' / '.join(map(str, m['load_average']))} "
            f"(1 / 5 / 15 min); torch {m['torch']}, lightning {m['lightning']}, optuna {m['optuna']}, "
            f"mlflow {m['mlflow']}")


def verdict(v: dict[str, Any]) -> str:
    if v["met"]:
        return "**met**"
    return f"**missed** by {v['missed_by']:.0%} of the goal"


def profile_block(p: dict[str, Any], title: str) -> str:
    pkgs = ", ".join(f"{x['package']} {x['share']:.0%}" for x in p["by_package"][:6])
    steps = "; ".join(f"`{x['function']}` {x['cumulative_s']:.2f}s" for x in p["archselect_cumulative"][:6])
    funcs = "; ".join(f"`{x['function']}` {x['own_s']:.2f}s ({x['calls']} calls)"
                      for x in p["top_functions"][:5])
    imports = f" ({p['imports_s']:.2f}s of it importing modules)" if p.get("imports_s") else ""
    return (f"*{title}* (cProfile, {p['total_s']:.2f}s profiled{imports}): own time by package: {pkgs}. "
            f"archselect steps (cumulative): {steps}. Most own time: {funcs}.\n")


def overhead(d: dict[str, Any]) -> str:
    rows = []
    for name, r in d["rows"].items():
        rows.append([name, r["arch"], r["epochs"], r["n_train"], r["batch_size"],
                     f"{r['archselect_samples_per_s']:,.0f}", f"{r['archselect_fit_samples_per_s']:,.0f}",
                     f"{r['plain_samples_per_s']:,.0f}", f"{r['ratio']:.2f}", f"{r['fit_ratio']:.2f}",
                     verdict(r["verdict"])])
    out = ("Training samples per second over one trial (median of "
           f"{len(next(iter(d['rows'].values()))['reps'])} repetitions; same model class, tensors, "
           "batch size, epochs, optimiser and threads; both validate after every epoch).\n\n")
    out += table(["row", "arch", "epochs", "train samples", "batch", "archselect trial",
                  "archselect fit only", "plain loop", "ratio", "fit-only ratio", f"goal {d['goal']}"],
                 rows)
    for name, r in d["rows"].items():
        if "profile" in r:
            out += "\n" + profile_block(r["profile"], f"{name}: one archselect trial")
    return out


def startup(d: dict[str, Any]) -> str:
    rows = [["bare `" + d["bare_import"] + "`", "", f"{d['bare_import_s']:.2f}", "1.00", ""]]
    for r in d["rows"].values():
        rows.append([f"`{r.get('first_step_command', r['command'])}`", "to first training step",
                     f"{r['first_step_s']:.2f}",
                     f"{r['first_step_ratio']['value']:.2f}", verdict(r["first_step_ratio"])])
        rows.append([f"`{r['command']} dry_run=true`", "whole command", f"{r['dry_run_s']:.2f}",
                     f"{r['dry_run_ratio']['value']:.2f}", verdict(r["dry_run_ratio"])])
    out = (f"Wall seconds from process start, fresh process each time (median of "
           f"{len(d['bare_reps_s'])}).\n\n")
    out += table(["command", "until", "seconds", "x bare import", f"goal {d['goal']}"], rows)
    if d.get("answers"):
        out += "\nAnswered without training (whole command, the same medians):\n\n" + table(
            ["case", "command", "seconds", f"goal {d['answer_goal']}"],
            [[what, f"`{a['command']}`", f"{a['seconds']:.2f}", verdict(a["verdict"])]
             for what, a in d["answers"].items()])
    for name, r in d["rows"].items():
        if "profile" in r:
            out += "\n" + profile_block(r["profile"], f"{name}: start to first training step")
    return out


def bookkeeping(d: dict[str, Any]) -> str:
    rows = []
    for name, r in d["classes"].items():
        p = r["per_trial_s"]
        rows.append([name, r["epochs"], r["trials"], f"{r['trial_s']:.2f}", f"{p['mlflow']:.3f}",
                     f"{p['optuna']:.3f}", f"{p['checkpoint']:.3f}", f"{p['gc']:.3f}",
                     f"{p['setup']:.3f}", f"{p['training']:.2f}", f"{r['bookkeeping_s']:.3f}",
                     f"{r['bookkeeping_share']:.1%}"])
    out = (f"Seconds per trial (`{d['row']}`, trial length set by epochs). Bookkeeping = MLflow + "
           "Optuna (trial calls and the study loop between trials) + checkpoints + the garbage "
           "collection after each trial; set-up = loaders, model and Trainer.\n\n")
    return out + table(["trial class", "epochs", "trials", "trial s", "MLflow", "Optuna", "checkpoints",
                        "gc", "set-up", "training", "bookkeeping", "share"], rows)


def pruning(d: dict[str, Any]) -> str:
    rows = []
    for r in d["runs"]:
        for arm in ("pruner", "no_pruner"):
            a = r[arm]
            test = ", ".join(f"{k} {v:.4f}" for k, v in a["test"].items())
            rows.append([r["seed"], arm.replace("_", " "), a["epochs"], a["pruned"], f"{a['study_s']:.1f}",
                         f"{a['best_val']:.4f}", test,
                         f"{r['epochs_saved']:.0%}" if arm == "pruner" else ""])
    out = (f"`{d['row']}`, {d['trials']} trials per study, the same seed in both arms; metric "
           f"{d['metric']}.\n\n")
    out += table(["seed", "arm", "epochs", "pruned", "study s", "best val", "test", "fewer epochs"], rows)
    return out + (f"\nMedian: {d['epochs_saved']:.0%} fewer epochs with the pruner, best value "
                  f"difference {d['best_val_difference']:+.4f}; goal {d['goal']}: "
                  f"{verdict(d['verdict'])}.\n")


def memory(d: dict[str, Any]) -> str:
    rows = [[d["trials"], d["rss_before_mb"], d["rss_after_first_trial_mb"], d["rss_after_last_trial_mb"],
             f"{d['growth']:+.1%}", f"{d['mb_per_trial']:+.2f}", d["rss_peak_mb"], d["rss_final_mb"],
             verdict(d["verdict"])]]
    return (f"`{d['row']}`, one process (MB of resident memory; states {d['states']}).\n\n"
            + table(["trials", "before", "after trial 1", "after last trial", "growth", "MB / trial",
                     "peak", "after finish", f"goal {d['goal']}"], rows))


def quality(d: dict[str, Any]) -> str:
    rows, skipped = [], []
    for name, r in d["rows"].items():
        if "skipped" in r:
            skipped.append(f"- {name} (`{r['command']}`): skipped: {r['skipped']}")
            continue
        b = r["baseline"]
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in b["test"].items())
        rows.append([name, "classical", "", b["model"], metrics, "", b["machine"]["when_utc"]])
        for minutes, q in sorted(r.get("budgets", {}).items(), key=lambda kv: float(kv[0])):
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in q["test"].items())
            rows.append([name, "archselect", f"{minutes} min", f"best {q['best_arch']} "
                         f"(tried {', '.join(q['archs_tried'])})", metrics,
                         f"{q['trials']} ({q['by_state']['PRUNED']} pruned)", q["machine"]["when_utc"]])
        trivial = ", ".join(f"{k} {v:.4f}" for k, v in b["trivial_test"].items())
        rows.append([name, "trivial", "", b["trivial"], trivial, "", ""])
    out = "Test split of each row's default data, same split for every model.\n\n"
    out += table(["row", "who", "budget", "model", "test metrics", "trials", "measured"], rows)
    return out + ("\n" + "\n".join(skipped) + "\n" if skipped else "")


def heldout(d: dict[str, Any]) -> str:
    import heldout as module

    return ("Each set's study at its row's default budget; the final model and the row's reference "
            "on the study's test split, and for the sets of our own (never used to tune a "
            "default) the registered champion and the reference on a separate test file. "
            "Measured set by set (two single-thread processes side by side on the 2 cores); "
            "each set's time is in `results/heldout.json`.\n\n" + module.table(d["sets"]))


def candidates(d: dict[str, Any]) -> str:
    import candidates as module

    return (f"Each candidate alone on a built-in set: up to {d['trials']} trials, "
            f"{d['timeout_s']} s per study and per trial, no ensemble and no reference; refit "
            "where the row refits. Seconds to its best: the training time of the trials up to "
            "the one that reached the best validation value.\n\n" + module.table(d["sets"]))


def workers(d: dict[str, Any]) -> str:
    import workers as module

    gains = ", ".join(f"{row} {x:.2f}x" for row, x in d["trials_per_hour_after_over_before"].items())
    return (f"Each row's study for {d['minutes']:g} minutes of search, before (one process, "
            "torch's default threads: the default until the selector chose the parallelism) and "
            "after (`search.n_workers=null`, the default now), one arm after the other. Trials "
            f"per hour after / before: {gains}.\n\n" + module.table(d["rows"]))


def scaleout(d: dict[str, Any]) -> str:
    import scaleout as module

    return (f"K commands at once on one PostgreSQL study and one MLflow server "
            f"(`archselect-cluster`), {d['row']}, {d['minutes']:g} minutes of search per arm, "
            "one trial at a time and one torch thread per command, each with its own runs "
            "folder.\n\n" + module.table(d["rows"]))


SECTIONS = [
    ("overhead", "1. Training overhead", overhead, QUICK),
    ("startup", "2. Start-up", startup, QUICK),
    ("bookkeeping", "3. Bookkeeping per trial", bookkeeping, QUICK),
    ("pruning", "4. Pruning", pruning, QUICK),
    ("memory", "5. Memory across trials", memory, QUICK),
    ("quality", "6. Quality per budget", quality,
     "python benchmarks/quality.py --budgets 5,15 --rows text,image,tabular"),
    ("heldout", "7. Every row against its reference, built-in sets and sets of our own", heldout,
     "python benchmarks/heldout.py"),
    ("candidates", "8. Each candidate alone", candidates,
     "python benchmarks/candidates.py --trials 2 --timeout 120"),
    ("workers", "9. Trials side by side", workers, "python benchmarks/workers.py"),
    ("scaleout", "10. Commands on one PostgreSQL study", scaleout,
     "python benchmarks/scaleout.py"),
]


def summary(found: dict[str, dict[str, Any]]) -> list[list[str]]:
    out = []
    if "overhead" in found:
        for name, r in found["overhead"]["rows"].items():
            out.append(["overhead", name, f"ratio {r['ratio']:.2f}", ">= 0.90", verdict(r["verdict"])])
    if "startup" in found:
        for name, r in found["startup"]["rows"].items():
            goal = found["startup"]["goal"].rsplit("<=", 1)[-1].strip()
            for key, what in (("first_step_ratio", "first step"), ("dry_run_ratio", "dry run")):
                out.append(["start-up", f"{name} {what}", f"{r[key]['value']:.2f}x",
                            f"<= {goal}x", verdict(r[key])])
        for what, a in found["startup"].get("answers", {}).items():
            out.append(["answer", what, f"{a['seconds']:.2f} s", "<= 3 s", verdict(a["verdict"])])
    if "pruning" in found:
        d = found["pruning"]
        out.append(["pruning", "epochs saved", f"{d['epochs_saved']:.0%}", ">= 40 %", verdict(d["verdict"])])
    if "memory" in found:
        d = found["memory"]
        out.append(["memory", f"{d['trials']} trials", f"{d['growth']:+.1%}", "< 10 %",
                    verdict(d["verdict"])])
    return out


def main(results: Path = RESULTS, out: Path = HERE / "RESULTS.md") -> None:
    found = {name: d for name, *_ in SECTIONS if (d := load(name, results)) is not None}
    parts = ["# Benchmarks: what archselect costs and what it finds\n",
             "Generated by `python benchmarks/report.py` from `benchmarks/results/*.json`; "
             f"`{QUICK}` re-measures benchmarks 1-5 (about 12 minutes on 2 quiet cores) "
             "and regenerates this file. "
             "Each benchmark prints and stores the machine and its load average when it started: "
             "numbers taken on a busy machine are slower than on a quiet one, and ratios are "
             "measured side by side in the same run.\n"]
    if found:
        parts.append("## Goals\n\n" + table(["benchmark", "case", "measured", "goal", "verdict"],
                                             summary(found)))
    for name, title, render, command in SECTIONS:
        d = found.get(name)
        parts.append(f"## {title}\n")
        if d is None:
            parts.append(f"Not run yet: `{command}`.\n")
            continue
        parts.append(f"Measured {machine_line(d['machine'])}. Command: `{d['command']}`.\n\n"
                     + render(d))
    analysis = HERE / "analysis.md"
    if analysis.is_file():
        parts.append(analysis.read_text())
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
