"""``run(cfg)``: one study end to end. The only module that knows the whole flow.

compose config -> validate -> load + profile data -> profile hardware -> select -> search -> finish.
Nothing is written to the stores until the config, the data and the selection have been checked.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict
from rich.console import Console

from archselect.config.errors import ArchselectError, ConfigError, ContinuousTarget
from archselect.config.validate import validate
from archselect.data.base import DataSpec
from archselect.hardware import HardwareProfile, profile_hardware
from archselect.selector import Selection, select, table_row
from archselect.tracking import mask_secrets


@dataclass
class RunResult:
    """What ``run`` returns (tests and callers read it)."""

    study_name: str
    selection: Selection
    spec: DataSpec
    hardware: HardwareProfile
    dry_run: bool = False
    outcome: Any = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    baseline_name: str = ""
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    parent_run_id: str | None = None
    model_uri: str | None = None
    model_version: int | None = None
    champion: str = ""
    onnx_uri: str | None = None


def _quiet_libraries() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)


def study_name_for(cfg: Any) -> str:
    """``search.study_name``, or ``<task>-<data>``; a multirun job adds its own overrides."""
    if cfg.search.study_name:
        return str(cfg.search.study_name)
    name = f"{cfg.task.name}-{cfg.data.name}"
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            swept = _swept_keys()
            mine = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") in swept]
            name += f"[{','.join(mine) if mine else f'job{hc.job.num}'}]"
    except ValueError:  # not under @hydra.main (tests, the Python API)
        pass
    return name


def _swept_keys() -> set[str]:
    """Keys the command line sweeps over (``a=1,2``, ``range(...)``, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # not our command line (e.g. under another launcher)
        return set()
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


@dataclass
class Prepared:
    """The checked config's data, hardware and selection: what every worker of a study needs."""

    family_cls: Any
    dm: Any
    spec: DataSpec
    hw: HardwareProfile
    selection: Selection


def prepare(cfg: Any, console: Console) -> Prepared:
    """validate -> load + profile data -> profile hardware -> select. Writes to no store."""
    _quiet_libraries()
    row = table_row(cfg)
    validate(cfg, row["data_kind"])

    from archselect.data import data_sources, datamodules
    from archselect.tasks import families

    family_cls = families.get(row["family"])
    kind = row["data_kind"]
    source_kind = data_sources.meta(str(cfg.data.source)).get("kind")
    if source_kind not in (None, kind):
        raise ConfigError("data", f"the {cfg.data.name!r} data holds {source_kind} data, but task "
                          f"{cfg.task.name} reads {kind} data", given=str(cfg.data.name),
                          fix=f"choose a {kind} data set or data=csv")
    runs_dir = Path(str(cfg.runs_dir)).expanduser()
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    dm = datamodules.get(kind)(data_cfg, seed=int(cfg.seed), cache_dir=runs_dir / "cache",
                               target_kind=family_cls.target_kind)
    switched = None
    with console.status("Loading and profiling the data..."):
        try:
            spec = dm.prepare()
        except ContinuousTarget as exc:
            rule = cfg.selector.rules.get("continuous_target")
            if rule is None or str(cfg.task.name) != str(rule["from"]):
                raise
            # The table's rule: such a target selects the regression row by itself.
            switched = (f"{cfg.task.name} -> {rule.to}: {str(exc).split('; fix')[0]}; "
                        f"monitoring {rule.monitor} ({rule.direction})")
            with open_dict(cfg):
                cfg.task.name, cfg.task.monitor = str(rule.to), str(rule.monitor)
                cfg.task.direction = str(rule.direction)
            row = table_row(cfg)
            family_cls = families.get(row["family"])
            dm = datamodules.get(kind)(data_cfg, seed=int(cfg.seed), cache_dir=runs_dir / "cache",
                                       target_kind=family_cls.target_kind)
            spec = dm.prepare()
    hw = profile_hardware(OmegaConf.to_container(cfg.trainer, resolve=True))  # type: ignore[arg-type]
    selection = select(cfg, spec, hw)
    if switched:
        selection.notes.insert(0, switched)
    return Prepared(family_cls, dm, spec, hw, selection)


def run(cfg: Any, console: Console | None = None) -> RunResult:
    """Run one study end to end and return what it found.

    Raises:
        ArchselectError: for anything the user can fix (bad config, bad data, ...).
    """
    if console is None:
        # Piped output (logs, CI) gets a wide table instead of rich's 80-column default.
        console = Console() if sys.stdout.isatty() else Console(width=140)
    prep = prepare(cfg, console)
    family_cls, dm, spec, hw, selection = (prep.family_cls, prep.dm, prep.spec, prep.hw,
                                           prep.selection)
    study_name = study_name_for(cfg)

    from archselect import report

    sel_report = report.selection_dict(spec, hw, selection, study_name, dm.profile_lines())
    report.print_selection(console, sel_report)
    result = RunResult(study_name=study_name, selection=selection, spec=spec, hardware=hw)
    console.print(
        f"Budget: {cfg.search.n_trials} trials in the study, timeout {cfg.search.timeout}s, "
        f"trial timeout {cfg.search.trial_timeout}s, at most "
        f"{cfg.search.max_epochs} epochs per trial (early stopping after {cfg.search.patience} "
        f"epochs without gain on {cfg.task.monitor}); storage {mask_secrets(str(cfg.search.storage))}"
    )
    if bool(cfg.dry_run):
        console.print("[bold]dry_run=true[/]: nothing trained, nothing written to the stores.")
        result.dry_run = True
        return result

    from archselect.search import workers
    from archselect.search.study import (
        Objective,
        check_storage,
        open_study,
        records,
        run_search,
        sampler_and_pruner,
    )
    from archselect.tracking import Tracker

    # Sampler, pruner and storage are checked, then the tracking store: a bad value in either
    # must not leave an empty study or experiment behind.
    sampler_and_pruner(cfg)
    check_storage(cfg.search.storage)
    tracker = Tracker(str(cfg.tracking.uri), str(cfg.tracking.experiment),
                      str(cfg.tracking.artifact_location),
                      system_metrics_interval=cfg.tracking.system_metrics_interval)
    study = open_study(cfg, study_name, selection, spec, tracker=tracker)
    parent = tracker.start_study(study_name, {
        "archselect.task": selection.task, "archselect.data": str(cfg.data.name),
        "archselect.data_hash": spec.data_hash,
        "mlflow.note.content": f"archselect study {study_name}: {selection.task} on "
        f"{cfg.data.name}, candidates {', '.join(c.name for c in selection.candidates)}",
    }, resume_run_id=study.user_attrs.get("mlflow_parent_run_id"))
    study.set_user_attr("mlflow_parent_run_id", parent)
    result.parent_run_id = parent
    status = "FAILED"
    try:
        resolved = mask_secrets(OmegaConf.to_yaml(cfg, resolve=True))
        tracker.log_text(resolved, "config/resolved.yaml")
        tracker.log_text(report.selection_markdown(sel_report), "selection/report.md")
        tracker.log_text(json.dumps(sel_report, indent=2, default=str), "selection/report.json")
        tracker.log_params(parent, {"seed": cfg.seed, "task": selection.task,
                                    "data": cfg.data.name, "data_hash": spec.data_hash,
                                    "storage": cfg.search.storage, "study": study_name,
                                    "deterministic": cfg.trainer.deterministic,
                                    **workers.package_versions()})
        _log_dataset(tracker, cfg, spec)
        objective = Objective(cfg, study_name, selection, dm, spec, hw, tracker, family_cls)
        console.rule(f"Search: up to {cfg.search.n_trials} trials, timeout {cfg.search.timeout}s"
                     + (f", {cfg.search.n_workers} workers" if cfg.search.n_workers > 1 else ""))
        with workers.spawned(cfg, study_name, hw) as procs:
            outcome = run_search(cfg, study, objective, on_trial=_trial_line(console, cfg))
            if outcome.interrupted:
                workers.stop(procs)
        if procs:  # the other workers' last trials ended after this one's loop
            outcome.records = records(study)
        result.outcome = outcome
        monitor = str(cfg.task.monitor)
        rows = report.leaderboard(outcome, monitor)
        report.print_leaderboard(console, rows, monitor)
        tracker.log_text(report.leaderboard_csv(rows), "leaderboard/leaderboard.csv")
        tracker.log_text(report.leaderboard_html(rows, study_name, monitor),
                         "leaderboard/leaderboard.html")
        _log_optuna_plots(tracker, study)
        best = outcome.best
        if outcome.stopped_by == "search.max_failures":
            message = (f"search.max_failures: {cfg.search.max_failures} trials failed in a row "
                       f"(last: {outcome.last_failure}); fix: see the reasons above, then rerun "
                       "the same command to resume, or raise search.max_failures")
            if best is None:
                raise ArchselectError(message)
            console.print(f"[bold yellow]Stopped[/]: {message}", soft_wrap=True)
        if best is None:
            raise ArchselectError(
                f"search: no trial of study {study_name!r} completed "
                f"({sum(r.state == 'FAIL' for r in outcome.records)} failed, "
                f"{sum(r.state == 'PRUNED' for r in outcome.records)} pruned); the reasons are in "
                "the leaderboard above; fix: check the data and budgets (search.max_epochs)"
            )
        _finish(cfg, result, best, dm, hw, tracker, console, family_cls)
        status = "FINISHED"
    finally:
        tracker.end_study(status)
    console.print(
        f"[bold green]Done[/] in {outcome.elapsed_s:.0f}s (stopped by {outcome.stopped_by}). "
        f"Best: trial {best.number} {best.arch}, test "
        + ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items()) + ". " + (
            f"Model registered as [bold]{cfg.tracking.model_name}[/] version "
            f"{result.model_version}. " if result.model_version else
            f"Model logged at {result.model_uri} (tracking.register=false). ")
        + _dashboard_hint(str(cfg.tracking.uri), str(cfg.tracking.experiment)),
        soft_wrap=True,  # one line, so the command can be copied
    )
    return result


def _dashboard_hint(uri: str, experiment: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"Dashboard: open {mask_secrets(uri)} (experiment {experiment})"
    return (f"Dashboard: mlflow ui --backend-store-uri {mask_secrets(uri)} --host 127.0.0.1 "
            f"(then open the experiment {experiment})")


def _trial_line(console: Console, cfg: Any, prefix: str = "") -> Any:
    monitor = str(cfg.task.monitor)

    def on_trial(study: Any, trial: Any) -> None:
        value = f"{monitor}={trial.value:.4f}" if trial.value is not None else ""
        reason = trial.user_attrs.get("fail_reason", "")
        console.print(f"{prefix}trial {trial.number:>3} {trial.params.get('arch', '?'):<18} "
                      f"{trial.state.name:<8} {value} {reason}".rstrip())

    return on_trial


def _log_dataset(tracker: Any, cfg: Any, spec: DataSpec) -> None:
    """The study's data as an MLflow dataset input: its name, hash (digest) and profile."""
    path = cfg.data.get("path")
    source = str(path) if path else f"archselect built-in data {cfg.data.name} ({cfg.data.source})"
    tracker.log_dataset(name=str(cfg.data.name), digest=spec.data_hash, source=source,
                        profile={"kind": spec.kind, "num_classes": spec.num_classes,
                                 "class_names": spec.class_names, **spec.profile})


def _log_optuna_plots(tracker: Any, study: Any) -> None:
    """Optuna's history, parameter importances and parallel coordinates: each as a PNG
    (matplotlib), and all three on one interactive, self-contained HTML page (plotly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as ovp
    from optuna.visualization import matplotlib as ovm

    plots: dict[str, tuple[Any, Any]] = {
        "history": (ovm.plot_optimization_history, ovp.plot_optimization_history),
        "param_importances": (ovm.plot_param_importances, ovp.plot_param_importances),
        "parallel_coordinate": (ovm.plot_parallel_coordinate, ovp.plot_parallel_coordinate),
    }
    sections: list[str] = []
    for name, (png, html) in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = png(study)
                # plotly.js is embedded once, with the first plot: the page works offline.
                sections.append(html(study).to_html(include_plotlyjs=not sections,
                                                    full_html=False))
            fig: Any = ax.figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            tracker.log_figure(fig, f"optuna/{name}.png")
            plt.close(fig)
        except Exception as exc:  # e.g. too few completed trials: say so instead of a picture
            tracker.log_text(f"not drawn: {exc}\n", f"optuna/{name}.txt")
    if sections:
        tracker.log_text("<!doctype html><html><head><meta charset='utf-8'><title>Optuna plots"
                         "</title></head><body>" + "".join(sections) + "</body></html>\n",
                         "optuna/plots.html")


def _finish(cfg: Any, result: RunResult, best: Any, dm: Any, hw: HardwareProfile,
            tracker: Any, console: Console, family_cls: Any) -> None:
    """Test the best trial's checkpoint, log and register it as a pyfunc model."""
    import lightning.pytorch as pl
    import matplotlib.pyplot as plt
    import torch
    from mlflow.models import infer_signature

    from archselect import report
    from archselect.architectures import architectures
    from archselect.serving import pip_requirements

    if not best.checkpoint or not Path(best.checkpoint).is_file():
        raise ArchselectError(
            f"finish: the checkpoint of best trial {best.number} is missing ({best.checkpoint}); "
            "fix: keep runs_dir/checkpoints, or start a new study (search.study_name=...)"
        )
    module = family_cls.load_from_checkpoint(best.checkpoint, map_location="cpu")
    hp = module.hparams
    resolve = architectures.meta(hp["arch"]).get("resolve")
    dm.for_trial(resolve(hp["arch_kwargs"]) if resolve else None, batch_size=128, num_workers=0)
    trainer = pl.Trainer(accelerator=hw.accelerator, devices=1,
                         precision=hw.precision,  # type: ignore[arg-type]
                         logger=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs: Any = trainer.predict(module, dataloaders=dm.test_dataloader())
    preds = torch.cat([o["preds"] for o in outputs])
    targets = torch.cat([o["targets"] for o in outputs])
    spec = module.spec
    result.test_metrics = family_cls.evaluate(preds, targets, spec)
    own = dm.baseline("test")  # e.g. seasonal naive, which needs the series' history
    result.baseline_name, trivial = own if own is not None else family_cls.trivial(
        dm.targets("train"), len(targets), spec)
    result.baseline_metrics = family_cls.evaluate(trivial, targets, spec)
    report.print_test(console, best, result.test_metrics, result.baseline_name,
                      result.baseline_metrics)
    tracker.log_metrics(tracker.parent_id, {
        **{f"test_{k}": v for k, v in result.test_metrics.items()},
        **{f"baseline_test_{k}": v for k, v in result.baseline_metrics.items()},
        f"best_{cfg.task.monitor}": float(best.value), "best_trial": best.number,
    })
    tracker.set_tags(tracker.parent_id, {"archselect.best_arch": best.arch,
                                         "archselect.best_trial": best.number,
                                         "archselect.baseline": result.baseline_name})
    figures = {**family_cls.figures(preds, targets, spec), **dm.extra_figures(preds, targets)}
    for name, fig in figures.items():
        tracker.log_figure(fig, name)
        plt.close(fig)

    with tempfile.TemporaryDirectory() as tmp:
        bundle = dm.serving_bundle(best.checkpoint, _family_name(family_cls), Path(tmp))
        with warnings.catch_warnings(record=True):  # MLflow's hint on integer columns
            signature = infer_signature(bundle.input_example, bundle.output_example)
        if bundle.input_schema is not None:
            signature.inputs = bundle.input_schema
        with console.status("Logging and registering the best model..."):
            result.model_uri, result.model_version = tracker.log_model(
                bundle.python_model, artifacts=bundle.artifacts, signature=signature,
                input_example=bundle.input_example, code_paths=[str(Path(__file__).parent)],
                pip_requirements=pip_requirements(),
                register_as=str(cfg.tracking.model_name) if cfg.tracking.register else None,
            )
    if result.model_version is not None:
        _crown(cfg, result, family_cls, tracker, console)
    if bool(cfg.export.onnx):
        result.onnx_uri = _export_onnx(cfg, module, dm, tracker, console)


def _crown(cfg: Any, result: RunResult, family_cls: Any, tracker: Any, console: Console) -> None:
    """Move the champion alias to the new version only if it beats the holder on the same split."""
    metric = family_cls.test_metric or str(cfg.task.monitor).removeprefix("val_")
    if metric not in result.test_metrics:
        result.champion = (f"{cfg.tracking.champion_alias} not considered: the test metrics "
                           f"({', '.join(result.test_metrics)}) have no {metric!r}")
    else:
        result.champion = tracker.update_champion(
            str(cfg.tracking.model_name), int(result.model_version or 0),
            alias=str(cfg.tracking.champion_alias), metric=metric,
            value=result.test_metrics[metric],
            direction=family_cls.test_direction or str(cfg.task.direction),
            data_hash=result.spec.data_hash)
    tracker.set_tags(tracker.parent_id, {"archselect.champion": result.champion})
    console.print(f"Champion: {result.champion}", soft_wrap=True)


def _export_onnx(cfg: Any, module: Any, dm: Any, tracker: Any, console: Console) -> str | None:
    """``export.onnx=true``: the best model as ONNX, checked with onnxruntime, logged next to the
    pyfunc. An architecture that cannot be exported is said in one line, not skipped silently."""
    from importlib.metadata import version

    from archselect.export import export_onnx

    arch = str(module.hparams["arch"])
    inputs = next(iter(dm.test_dataloader()))["inputs"]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = export_onnx(module, inputs, Path(tmp) / "model.onnx",
                               float(cfg.export.onnx_tolerance))
        except RuntimeError as exc:
            line = f"export.onnx: the best model ({arch}) was not exported: {exc}"
            tracker.set_tags(tracker.parent_id, {"archselect.onnx": line})
            tracker.log_text(line + "\n", "onnx/NOT_EXPORTED.txt")
            console.print(f"[yellow]{line}[/]", soft_wrap=True)
            return None
        uri = tracker.log_onnx(done.path, input_example=done.example, signature=done.signature(),
                               pip_requirements=[f"onnx=={version('onnx')}",
                                                 f"onnxruntime=={version('onnxruntime')}"])
    line = (f"ONNX model logged at {uri} (inputs {', '.join(done.input_names)}; onnxruntime "
            f"matches PyTorch within {done.max_abs_diff:.1e})")
    tracker.set_tags(tracker.parent_id, {"archselect.onnx": line})
    tracker.log_metrics(tracker.parent_id, {"onnx_max_abs_diff": done.max_abs_diff})
    console.print(line, soft_wrap=True)
    return uri


def _family_name(family_cls: Any) -> str:
    from archselect.tasks import families

    return next(n for n in families.names() if families.get(n) is family_cls)
