"""What the user reads: the selection report, the leaderboard, test metrics, summary files."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archselect.data.base import DataSpec
from archselect.hardware import HardwareProfile
from archselect.search.trials import StudyOutcome
from archselect.secrets import mask_secrets
from archselect.selector import Selection


def selection_dict(spec: DataSpec, hw: HardwareProfile, selection: Selection,
                   study_name: str, profile_lines: list[tuple[str, str]]) -> dict[str, Any]:
    """The selection report as JSON-ready data."""
    return {"study": study_name, "data_profile": spec.profile, "hardware": hw.to_dict(),
            "selection": selection.to_dict(), "profile_lines": profile_lines}


def selection_markdown(report: dict[str, Any]) -> str:
    """The selection report as markdown (an MLflow artifact)."""
    prof, hw, sel = report["data_profile"], report["hardware"], report["selection"]
    lines = [f"# Selection report: {sel['task']} ({sel['family']})", "",
             f"Study: `{report['study']}`", "", "## Data profile", ""]
    lines += [f"- {k}: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in prof.items()]
    lines += ["", "## Hardware profile", ""]
    lines += [f"- {k}: {json.dumps(v) if isinstance(v, list) else v}" for k, v in hw.items()]
    lines.append(f"- trials side by side: {sel['workers']} x {sel['threads']} torch thread(s): "
                 f"{sel['parallel']}")
    lines += ["", "## Candidates (simple -> recommended)", ""]
    for i, c in enumerate(sel["candidates"], 1):
        lines.append(f"{i}. **{c['name']}** (max {c['max_epochs']} epochs): " + "; ".join(c["reasons"]))
        for k, v in c["space"].items():
            lines.append(f"   - `{k}`: {v} (baseline {({**c['model'], **c['optim'], **c['data']})[k]})")
    if sel["dropped"]:
        lines += ["", "## Dropped", ""]
        lines += [f"- {k}: {v}" for k, v in sel["dropped"].items()]
    if sel["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in sel["notes"]]
    return "\n".join(lines) + "\n"


def budget_line(n_trials: int, timeout: float | None, trial_timeout: float | None,
                max_epochs: int, patience: int, monitor: str, storage: str) -> str:
    """The study's budget, as printed before the search."""
    def seconds(value: float | None) -> str:
        return "none" if value is None else f"{value:g}s"

    return (f"Budget: {n_trials} trials in the study, timeout {seconds(timeout)}, trial timeout "
            f"{seconds(trial_timeout)}, at most {max_epochs} epochs per trial (early stopping after "
            f"{patience} epochs without gain on {monitor}); storage {mask_secrets(storage)}")


def trial_line(console: Console, monitor: str, prefix: str = "") -> Any:
    """An Optuna callback printing one line per finished trial (``prefix``: the worker)."""

    def on_trial(study: Any, trial: Any) -> None:
        value = f"{monitor}={trial.value:.4f}" if trial.value is not None else ""
        reason = trial.user_attrs.get("fail_reason", "")
        console.print(f"{prefix}trial {trial.number:>3} {trial.params.get('arch', '?'):<18} "
                      f"{trial.state.name:<8} {value} {reason}".rstrip())

    return on_trial


def summary_line(outcome: StudyOutcome, model: str, test: dict[str, float],
                 model_name: str, model_version: int | None, model_uri: str | None,
                 tracking_uri: str, experiment: str, comparison: str = "",
                 total_s: float | None = None) -> str:
    """The last line: the command's time (and the search's), what stopped the study, the final
    model (``model``: what was tested) and its test metrics, how it compares with the
    reference, its URI and how to load it, the dashboard."""
    uri = absolute_uri(tracking_uri)
    loaded = (f"models:/{model_name}/{model_version}" if model_version else model_uri)
    registered = (f"Model registered as [bold]{model_name}[/] version {model_version}"
                  if model_version else f"Model logged at {model_uri} (tracking.register=false)")
    load = (f"; load it: MLFLOW_TRACKING_URI={mask_secrets(uri)} then "
            f"mlflow.pyfunc.load_model(\"{loaded}\"). " if loaded else ". ")
    took = (f"{total_s:.0f}s (the search {outcome.elapsed_s:.0f}s)" if total_s is not None
            else f"{outcome.elapsed_s:.0f}s")
    return (f"[bold green]Done[/] in {took}, stopped by {outcome.stopped_by}. "
            f"Final model: {model}, test "
            + ", ".join(f"{k} {v:.4f}" for k, v in test.items()) + ". "
            + (f"{comparison[:1].upper()}{comparison[1:]}. " if comparison else "") + registered
            + load + dashboard_hint(uri, experiment))


def terminal(**options: Any) -> Console:
    """The console for stdout: piped output (logs, CI) gets 140 columns instead of rich's
    80-column default."""
    return Console(**options) if sys.stdout.isatty() else Console(width=140, **options)


def absolute_uri(uri: str) -> str:
    """A SQLite tracking URI with an absolute path (a relative one only works from the folder
    the command ran in)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        from pathlib import Path

        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def dashboard_hint(uri: str, experiment: str) -> str:
    """How to open the study in MLflow's dashboard."""
    if uri.startswith(("http://", "https://")):
        return f"Dashboard: open {mask_secrets(uri)} (experiment {experiment})"
    return (f"Dashboard: mlflow ui --backend-store-uri {mask_secrets(absolute_uri(uri))} "
            f"--host 127.0.0.1 (then open the experiment {experiment})")


def print_selection(console: Console, report: dict[str, Any]) -> None:
    """Print the data profile, the hardware profile and the candidates with their reasons."""
    hw, sel = report["hardware"], report["selection"]
    # escaped: a multirun job's study name ends in its overrides, "[search.n_trials=2]", which
    # rich would otherwise read as markup and drop
    console.rule(f"[bold]archselect[/] {sel['task']} ({sel['description']}) · study "
                 f"{escape(report['study'])}")
    data = Table(title="Data profile", show_header=False, title_justify="left")
    for label, text in report["profile_lines"]:
        data.add_row(label, text)
    console.print(data)
    gpus = ", ".join(f"{g['name']} {g['memory_gb']} GB{' bf16' if g['bf16'] else ''}"
                     for g in hw["gpus"]) or "none"
    hwt = Table(title="Hardware profile", show_header=False, title_justify="left")
    hwt.add_row("CPU", f"{hw['cpu_cores']} cores, {hw['memory_gb']} GB RAM")
    hwt.add_row("GPUs", gpus)
    hwt.add_row("training on", f"{hw['accelerator']}, precision {hw['precision']}")
    hwt.add_row("trials", f"{sel['workers']} at a time, {sel['threads']} torch "
                f"thread{'s' * (sel['threads'] > 1)} each: {sel['parallel']}")
    console.print(hwt)
    cand = Table(title="Candidates (simple -> recommended)", title_justify="left")
    for col in ("#", "architecture", "why", "search space"):
        cand.add_column(col)
    for i, c in enumerate(sel["candidates"], 1):
        space = "\n".join(f"{k}: {v}" for k, v in c["space"].items()) or "fixed"
        cand.add_row(str(i), c["name"], "\n".join(c["reasons"]), space)
    for name, why in sel["dropped"].items():
        cand.add_row("-", f"[dim]{name}[/]", f"[dim]dropped: {why}[/]", "")
    console.print(cand)
    for note in sel["notes"]:
        console.print(f"[dim]- {note}[/]")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def leaderboard(outcome: StudyOutcome, monitor: str, reference: Any = None
                ) -> list[dict[str, Any]]:
    """Trials ranked by their monitored value (completed first; ties by validation loss, then
    fewer parameters), as plain rows; the classical ``reference`` (if any) as a row of its own
    where its validation value ranks it (it holds no rank: it is not a trial)."""
    done = outcome.ranked()
    rest = sorted((r for r in outcome.records if r not in done), key=lambda r: r.number)
    rows = []
    ref_row = None
    if reference is not None:
        ref_row = {"rank": "", "trial": "ref", "arch": "reference: " + reference.name,
                   "params": f"{reference.setting} (picked on validation)",
                   monitor: round(float(reference.val_value), 4),
                   "state": "REFERENCE", "epochs": "", "seconds": round(reference.seconds, 1),
                   "n_params": None, "reason": ""}
    maximize = outcome.direction == "maximize"
    for rank, r in enumerate([*done, *rest], 1):
        if ref_row is not None and (r.value is None or (
                reference.val_value > r.value if maximize else reference.val_value < r.value)):
            rows.append(ref_row)
            ref_row = None
        rows.append({
            "rank": rank if r.value is not None else "",
            "trial": r.number, "arch": r.arch + (" (baseline)" if r.baseline else ""),
            "params": ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items()),
            monitor: None if r.value is None else round(float(r.value), 4),
            "state": r.state, "epochs": r.epochs, "seconds": round(r.duration_s, 1),
            "n_params": r.n_params, "reason": r.reason or "",
        })
    if ref_row is not None:
        rows.append(ref_row)
    return rows


def print_leaderboard(console: Console, rows: list[dict[str, Any]], monitor: str) -> None:
    table = Table(title="Leaderboard", title_justify="left")
    for col in ("rank", "trial", "architecture", "key hyperparameters", monitor, "state",
                "epochs", "time"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = r["state"] + (f" ({r['reason'][:60]})" if r["reason"] else "")
        cells = (str(r["rank"]), str(r["trial"]), r["arch"], r["params"],
                 "" if r[monitor] is None else f"{r[monitor]:.4f}", state, str(r["epochs"]),
                 f"{r['seconds']:.0f}s")
        table.add_row(*(f"[italic]{c}[/]" for c in cells) if r["state"] == "REFERENCE"
                      else cells)
    console.print(table)


def print_test(console: Console, model: str, test: dict[str, float], baseline_name: str,
               baseline: dict[str, float], reference: dict[str, float] | None = None) -> None:
    """The final model's test metrics beside the trivial baseline's and the classical
    reference's (``model`` names what was tested)."""
    table = Table(title=f"Test split: {model}", title_justify="left")
    table.add_column("metric")
    table.add_column("final model")
    if reference is not None:
        table.add_column("reference")
    table.add_column(baseline_name)
    for k, v in test.items():
        ref = [f"{reference.get(k, float('nan')):.4f}"] if reference is not None else []
        table.add_row(k, f"{v:.4f}", *ref, f"{baseline.get(k, float('nan')):.4f}")
    console.print(table)


def leaderboard_html(rows: list[dict[str, Any]], study_name: str, monitor: str) -> str:
    """The leaderboard as a standalone HTML table (the MLflow UI shows it in place)."""
    import html

    import pandas as pd

    table = pd.DataFrame(rows).to_html(index=False, na_rep="", border=0, classes="board")
    title = html.escape(f"Leaderboard of study {study_name} (ranked by {monitor})")
    style = ("body{font-family:sans-serif;margin:1em}.board{border-collapse:collapse}"
             ".board td,.board th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{style}</style></head><body><h3>{title}</h3>{table}</body></html>\n")


def leaderboard_csv(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    return str(pd.DataFrame(rows).to_csv(index=False))
