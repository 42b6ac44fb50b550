"""Quality per budget: the best test metric archselect finds in a time budget, next to a strong
classical baseline on the same split. Long: minutes per row and budget, so not in ``make bench``.

    .venv/bin/python benchmarks/quality.py --budgets 5,15 --rows text,image,tabular

For each row and budget: ``archselect task=<row> search.timeout=<budget>`` (the row's own data,
search space and epochs; trials until the wall) and the classical model fitted on the same
train split (settings picked on the validation split), both scored on the test split by the
row's own metrics. Results merge into ``results/quality.json`` row by row, so rows and budgets
can be run at different times; each entry keeps the machine it was measured on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import numpy as np


def text_baseline(dm: Any) -> tuple[str, np.ndarray]:
    from text_baselines import tfidf_logreg

    return "TF-IDF (word 1-2 grams) + logistic regression", tfidf_logreg(dm.texts, dm.labels)


def image_baseline(dm: Any) -> tuple[str, np.ndarray]:
    from sklearn.svm import SVC

    x = {s: dm.images[s].flatten(1).float().numpy() / 255.0 for s in ("train", "val", "test")}
    preds = benchlib.best_on_val([SVC(C=c, gamma="scale") for c in (1.0, 10.0, 100.0)], x, dm.labels)
    return "SVC (RBF) on pixels, C picked on val", preds


def tabular_baseline(dm: Any) -> tuple[str, np.ndarray]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    classes = dm.target_kind == "classes"
    make = HistGradientBoostingClassifier if classes else HistGradientBoostingRegressor
    preds = benchlib.best_on_val([make(learning_rate=lr, random_state=dm.seed)
                                  for lr in (0.03, 0.1, 0.3)], dm.x, dm.y, maximize_f1=classes)
    return "HistGradientBoosting, learning rate picked on val", preds


def ets_baseline(dm: Any) -> tuple[str, np.ndarray]:
    """Exponential smoothing (statsmodels ETS), refitted at every forecast origin on the history
    before it; trend and season picked on the validation windows by MAE."""
    import warnings

    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    spec = dm.prepare()
    h, m = spec.horizon, spec.season_length
    series = dm.values[:, 0]

    def forecasts(split: str, trend: str | None, seasonal: str | None) -> np.ndarray:
        out = []
        for o in dm.origins[split]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = ExponentialSmoothing(series[:o], trend=trend, seasonal=seasonal,
                                           seasonal_periods=m if seasonal else None).fit()
            out.append(fit.forecast(h))
        return np.asarray(out)

    options = [(t, s) for t in (None, "add") for s in ((None, "add") if m > 1 else (None,))]
    truth = dm.targets("val").numpy()
    best = min(options, key=lambda o: float(np.abs(forecasts("val", *o) - truth).mean()))
    return (f"ETS (trend {best[0]}, season {best[1]}; picked on val), refitted per origin",
            forecasts("test", *best))


def series_knn_baseline(dm: Any) -> tuple[str, np.ndarray]:
    """k-nearest neighbours on the flattened, standardised series (1-NN Euclidean is the archive's
    reference classifier); k picked on val."""
    from sklearn.neighbors import KNeighborsClassifier

    x = {s: ((dm.x[s] - dm.mean) / dm.std).reshape(len(dm.x[s]), -1) for s in ("train", "val", "test")}
    preds = benchlib.best_on_val([KNeighborsClassifier(n_neighbors=k) for k in (1, 3, 5)], x, dm.y)
    return "k-NN (Euclidean) on the series, k picked on val", preds


# One place for the rows. A row whose task is not available yet is skipped with its reason.
ROWS: dict[str, dict[str, Any]] = {
    "text": {"overrides": ["task=text_classification"], "baseline": text_baseline},
    "image": {"overrides": ["task=image_classification", "data=digits"], "baseline": image_baseline},
    "tabular": {"overrides": ["task=tabular_classification", "data=breast_cancer"],
                "baseline": tabular_baseline},
    "tabular_regression": {"overrides": ["task=tabular_regression", "data=diabetes"],
                           "baseline": tabular_baseline},
    "series": {"overrides": ["task=time_series_forecasting"], "baseline": ets_baseline},
    "series_classification": {"overrides": ["task=time_series_classification"],
                              "baseline": series_knn_baseline},
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
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        cfg = benchlib.compose(row["overrides"], Path(tmp))
        dm, family = benchlib.datamodule(cfg)
        start = time.perf_counter()
        label, preds = row["baseline"](dm)
        seconds = time.perf_counter() - start
        targets = dm.targets("test")
        preds_t = torch.as_tensor(np.asarray(preds), dtype=targets.dtype)
        spec = dm.prepare()
        own = dm.baseline("test")  # e.g. seasonal naive, which needs the history
        trivial_name, trivial = own if own is not None else family.trivial(
            dm.targets("train"), len(targets), spec)
        return {"model": label, "seconds": round(seconds, 2),
                "test": {k: round(v, 4) for k, v in family.evaluate(preds_t, targets, spec).items()},
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
