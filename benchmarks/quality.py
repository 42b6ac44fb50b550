"""Quality per budget: the best test metric archselect finds in a time budget, next to a strong
classical baseline on the same split. Long: minutes per row and budget, so not in ``make bench``.

    .venv/bin/python benchmarks/quality.py --budgets 5,15 --rows text,image,tabular

For each row and budget: ``archselect task=<row> search.timeout=<budget>`` (the row's own data,
search space and epochs; trials until the wall) and the row's classical reference
(``archselect/references.py``) fitted on the same train split (its setting picked on the
validation split), both scored on the test split by the row's own metrics. Results merge into
``results/quality.json`` row by row, so rows and budgets
can be run at different times; each entry keeps the machine it was measured on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import benchlib

# One place for the rows. A row whose task is not available yet is skipped with its reason.
ROWS: dict[str, dict[str, Any]] = {
    "text": {"overrides": ["task=text_classification"]},
    "image": {"overrides": ["task=image_classification", "data=digits"]},
    "tabular": {"overrides": ["task=tabular_classification", "data=breast_cancer"]},
    "tabular_regression": {"overrides": ["task=tabular_regression", "data=diabetes"]},
    "series": {"overrides": ["task=time_series_forecasting"]},
    "series_classification": {"overrides": ["task=time_series_classification"]},
}


def available(overrides: list[str]) -> str | None:
    """None if the row's task runs here, else the one-line reason it does not."""
    from archselect.config.errors import ArchselectError
    from archselect.config.validate import check_row

    with tempfile.TemporaryDirectory() as tmp:
        try:
            cfg = benchlib.compose(overrides, Path(tmp))
            check_row(str(cfg.task.name), cfg.selector.table)
        except ArchselectError as exc:
            return str(exc)
        except Exception as exc:  # e.g. a task file that does not compose yet
            return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def baseline_entry(name: str, row: dict[str, Any]) -> dict[str, Any]:
    """The row's classical reference (archselect's own, ``archselect/references.py``) fitted on
    the train split, its setting picked on the val split, scored on the test split."""
    from archselect.config.validate import typed
    from archselect.references import fit_reference
    from archselect.selector import resolve_task

    with tempfile.TemporaryDirectory() as tmp:
        cfg = benchlib.compose(row["overrides"], Path(tmp))
        dm, family = benchlib.datamodule(cfg)
        conf = typed(cfg)
        task = resolve_task(conf.task, conf.selector.table)
        ref = fit_reference(dm, family, task, [None], refit=False)
        if ref is None:
            raise ValueError(f"{name}: the row has no reference")
        spec = dm.prepare()
        targets = dm.targets("test")
        own = dm.baseline("test")  # e.g. seasonal naive, which needs the history
        trivial_name, trivial = own if own is not None else family.trivial(
            dm.targets("train"), len(targets), spec)
        return {"model": f"{ref.name} ({ref.setting}, picked on val)",
                "seconds": round(ref.seconds, 2),
                "test": {k: round(v, 4) for k, v in ref.test_metrics.items()},
                "trivial": trivial_name,
                "trivial_test": {k: round(v, 4) for k, v in
                                 family.evaluate(trivial, targets, spec).items()},
                "splits": spec.profile.get("splits")}


def archselect_entry(row: dict[str, Any], minutes: float) -> dict[str, Any]:
    return benchlib.study_summary([*row["overrides"], f"search.timeout={int(minutes * 60)}",
                                   "search.n_trials=100000", "tracking.register=false"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", default="5,15", help="minutes, comma-separated")
    parser.add_argument("--rows", default="text,image,tabular,tabular_regression,series,"
                        "series_classification")
    args = parser.parse_args()
    unknown = sorted(set(args.rows.split(",")) - set(ROWS))
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; expected some of: {', '.join(ROWS)}")
    info = benchlib.machine()
    benchlib.print_machine(info)
    path = benchlib.RESULTS / "quality.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    rows: dict[str, Any] = previous.get("rows", {})
    for name in args.rows.split(","):
        row = ROWS[name]
        reason = available(row["overrides"])
        if reason:
            print(f"{name}: skipped ({reason})", flush=True)
            rows[name] = {"command": "archselect " + " ".join(row["overrides"]), "skipped": reason,
                          "machine": info}
            continue
        entry = rows.get(name, {})
        entry.pop("skipped", None)
        entry["command"] = "archselect " + " ".join(row["overrides"])
        entry["baseline"] = {**baseline_entry(name, row), "machine": info}
        print(f"{name}: {entry['baseline']['model']}: {entry['baseline']['test']}", flush=True)
        budgets = entry.setdefault("budgets", {})
        for minutes in (float(b) for b in args.budgets.split(",")):
            found = archselect_entry(row, minutes)
            budgets[f"{minutes:g}"] = {**found, "machine": benchlib.machine()}
            print(f"{name}, {minutes:g} min: archselect {found['test']} (best {found['best_arch']}, "
                  f"{found['trials']} trials)", flush=True)
        rows[name] = entry
    benchlib.write_result("quality", {"rows": rows}, info)


if __name__ == "__main__":
    main()
