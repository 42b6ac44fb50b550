"""``run(cfg)``: one study end to end. The only module that knows the whole flow.

config -> validate -> load + profile data -> profile hardware -> select -> search -> finish -> report.
Nothing is written to the stores until the config, the data and the selection have been checked.
"""

from __future__ import annotations

import errno
import json
import logging
import time
import uuid
import warnings
from collections import Counter
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console

from archselect import report
from archselect.config.errors import ArchselectError, ConfigError, ContinuousTarget
from archselect.config.schema import ArchselectConfig
from archselect.config.validate import typed, validate
from archselect.data.base import BaseDataModule, DataSpec, open_datamodule
from archselect.hardware import (
    HardwareProfile,
    device_count,
    package_versions,
    profile_hardware,
)
from archselect.locks import held, study_lock
from archselect.logs import library_log, log_path
from archselect.search.trials import StudyOutcome
from archselect.secrets import mask_secrets
from archselect.selector import Selection, continuous_target_rule, resolve_task, select
from archselect.signals import interrupt_on_signals

#: the study's user attribute that says which command finished it, with how many trials
FINISHED = "archselect_finished"
#: a write that failed because of the disk (full, read-only, over quota, failing), not the study
DISK_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO)


@dataclass
class RunResult:
    """What ``run`` returns (tests and callers read it)."""

    study_name: str
    selection: Selection
    spec: DataSpec
    hardware: HardwareProfile
    dry_run: bool = False
    outcome: StudyOutcome | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    baseline_name: str = ""
    #: what was tested and registered: ``trial 3 (mlp)``, or an ensemble's members and weights
    final_model: str = ""
    #: trial number -> weight of the final model's members
    weights: dict[int, float] = field(default_factory=dict)
    #: the row's classical reference and its test metrics (``selector.references``)
    reference_name: str = ""
    reference_metrics: dict[str, float] = field(default_factory=dict)
    #: how the final model compares with the reference on the test split (one phrase)
    comparison: str = ""
    #: the output rule chosen on validation, in words (translation: the memory's fallback)
    output_rule: str = ""
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    parent_run_id: str | None = None
    model_uri: str | None = None
    model_version: int | None = None
    champion: str = ""
    onnx_uri: str | None = None
    model_name: str = ""
    #: the tracking store (absolute) and experiment the study went to
    tracking_uri: str = ""
    experiment: str = ""
    #: the whole command's seconds, and its final line (what ``output=quiet`` prints)
    total_s: float = 0.0
    final_line: str = ""
    #: where the libraries' own messages of the study went (absolute)
    log_file: str = ""

    @property
    def model_ref(self) -> str | None:
        """The registered model's URI (``models:/<name>/<version>``), or the run's model."""
        return (f"models:/{self.model_name}/{self.model_version}" if self.model_version
                else self.model_uri)

    def summary(self) -> dict[str, Any]:
        """What the command did, as plain data (``output=json`` prints it)."""
        out: dict[str, Any] = {"study": self.study_name, "task": self.selection.task.name,
                               "dry_run": self.dry_run}
        if self.dry_run:
            return {**out, "selection": self.selection.to_dict()}
        o = self.outcome
        best = o.best if o is not None else None
        return {**out, "stopped_by": o.stopped_by if o is not None else "",
                "seconds": round(self.total_s, 1),
                "search_seconds": round(o.elapsed_s, 1) if o is not None else 0.0,
                "trials": dict(Counter(r.state for r in (o.records if o is not None else []))),
                "monitor": self.selection.task.monitor,
                "best_trial": None if best is None else {
                    "number": best.number, "arch": best.arch, "value": best.value},
                "final_model": self.final_model, "test_metrics": self.test_metrics,
                "baseline": {"name": self.baseline_name, "metrics": self.baseline_metrics},
                "reference": {"name": self.reference_name, "metrics": self.reference_metrics},
                "comparison": self.comparison, "model_uri": self.model_ref,
                "model_version": self.model_version, "champion": self.champion or None,
                "parent_run_id": self.parent_run_id, "onnx_uri": self.onnx_uri,
                "tracking_uri": mask_secrets(self.tracking_uri), "experiment": self.experiment,
                "log_file": self.log_file}


def quiet_libraries() -> None:
    """Lightning's info lines and the libraries' future warnings stay out of the output."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # Adagrad on fastText's sparse embedding gradients (which torch builds well-formed).
    warnings.filterwarnings("ignore", ".*Sparse invariant checks are implicitly disabled.*")
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)


@dataclass
class Prepared:
    """The checked config's data, hardware and selection: what every worker of a study needs."""

    family_cls: Any
    dm: BaseDataModule
    spec: DataSpec
    hw: HardwareProfile
    selection: Selection


def open_data(conf: ArchselectConfig, kind: str, family_cls: Any, cache_dir: Path
              ) -> BaseDataModule:
    """The data module of ``kind`` for the config's ``data`` node (nothing read yet), drawing
    images of a class where ``task.conditional`` asks (image generation only)."""
    dm = open_datamodule(conf.data, kind, seed=conf.seed, cache_dir=cache_dir,
                         target_kind=family_cls.target_kind)
    if conf.task.conditional:
        if not hasattr(dm, "conditional"):
            raise ConfigError("task.conditional", f"{conf.task.name} has no classes to draw; only "
                              "image_generation draws images of a class", given=True,
                              allowed=[False], fix="drop task.conditional=true")
        dm.conditional = True
    return dm


def prepare(conf: ArchselectConfig, console: Console) -> Prepared:
    """validate -> load + profile data -> profile hardware -> select. Writes to no store."""
    from archselect.tasks import families

    quiet_libraries()
    task = resolve_task(conf.task, conf.selector.table)
    validate(conf)
    cache_dir = Path(conf.runs_dir).expanduser() / "cache"

    family_cls = families.get(task.family)
    dm = open_data(conf, task.data_kind, family_cls, cache_dir)
    notes: list[str] = []
    with console.status("Loading and profiling the data..."):
        try:
            spec = dm.prepare()
        except ContinuousTarget as exc:
            switched = continuous_target_rule(task, conf.selector.rules.continuous_target,
                                              conf.selector.table, exc.finding)
            if switched is None:
                raise
            task, note = switched
            notes.append(note)
            family_cls = families.get(task.family)
            dm = open_data(conf, task.data_kind, family_cls, cache_dir)
            spec = dm.prepare()
    hw = profile_hardware(conf.trainer.accelerator, conf.trainer.precision)
    selection = select(task, conf.selector, conf.arch, conf.search.max_epochs, spec, hw, notes,
                       refit=conf.search.refit, n_workers=conf.search.n_workers,
                       threads=conf.search.threads, n_trials=conf.search.n_trials,
                       deterministic=conf.trainer.deterministic,
                       devices=device_count(conf.trainer.devices))
    return Prepared(family_cls, dm, spec, hw, selection)


def study_name_for(conf: ArchselectConfig, suffix: str = "") -> str:
    """``search.study_name``, or ``<task>-<data>`` (and the file's or folder's name where the data
    is the user's: two files under one task are two studies) plus ``suffix`` (a multirun job's
    overrides)."""
    if conf.search.study_name:
        return conf.search.study_name
    path = conf.data.get("path")
    stem = f"-{Path(str(path)).expanduser().stem}" if path else ""
    return f"{conf.task.name}-{conf.data.get('name')}{stem}{suffix}"


def run(cfg: Any, console: Console | None = None, study_suffix: str = "") -> RunResult:
    """Run one study end to end and return what it found.

    Args:
        cfg: the composed config (``archselect --cfg job`` shows it).
        console: where the report goes (default: the terminal, 140 columns when piped).
        study_suffix: added to the default study name (the CLI's multirun jobs).

    Raises:
        ArchselectError: for anything the user can fix (bad config, bad data, ...).
    """
    started = time.monotonic()
    if console is None:
        console = report.terminal()
    conf = typed(cfg)
    if conf.output != "text":  # quiet or json: no progress bars either
        conf.trainer.progress_bar = False
    prep = prepare(conf, console)
    dm, spec, hw, selection = prep.dm, prep.spec, prep.hw, prep.selection
    task = selection.task
    if task.name != conf.task.name:
        # A rule switched the task: what is named after ${task.name} (study, experiment, model)
        # follows the task that runs, in a new config; the one given is not changed.
        cfg = OmegaConf.merge(cfg, {"task": {"name": task.name, "monitor": task.monitor,
                                             "direction": task.direction}})
        conf = typed(cfg)
    search = conf.search
    study_name = study_name_for(conf, study_suffix)
    sel_report = report.selection_dict(spec, hw, selection, study_name, dm.profile_lines())
    report.print_selection(console, sel_report)
    result = RunResult(study_name=study_name, selection=selection, spec=spec, hardware=hw,
                       tracking_uri=report.absolute_uri(conf.tracking.uri),
                       experiment=conf.tracking.experiment,
                       model_name=conf.tracking.model_name)
    console.print(report.budget_line(search.n_trials, search.timeout, search.trial_timeout,
                                     search.max_epochs, search.patience, task.monitor,
                                     search.storage))
    if conf.dry_run:
        result.final_line = "[bold]dry_run=true[/]: nothing trained, nothing written to the stores."
        console.print(result.final_line)
        result.dry_run = True
        result.total_s = time.monotonic() - started
        return result

    from mlflow.exceptions import MlflowException
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    from archselect.search.storage import storage_error
    from archselect.tracking import store_error

    received: list[str] = []
    try:
        with interrupt_on_signals(received):  # SIGTERM / SIGHUP end it as cleanly as Ctrl-C
            _study(cfg, conf, prep, result, study_name, sel_report, console, started)
    except MlflowException as exc:  # the tracking store failed under the study
        raise store_error(exc, conf.tracking.uri) from None
    except (StorageInternalError, SQLAlchemyError) as exc:  # the study's store did
        raise storage_error(exc, conf.search.storage) from None
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        raise ArchselectError(
            f"runs_dir: cannot write{where} ({exc.strerror}); the finished trials are kept in "
            "the study; fix: free space on that disk (or set runs_dir / "
            "tracking.artifact_location to another one), then run the same command again"
        ) from None
    return result


def _study(cfg: Any, conf: ArchselectConfig, prep: Prepared, result: RunResult, study_name: str,
           sel_report: dict[str, Any], console: Console, started: float) -> None:
    """The part that writes: open the stores, search, finish (test, register), report."""
    from archselect.finish import finish, log_optuna_plots
    from archselect.search import workers
    from archselect.search.fit import TrialSettings
    from archselect.search.objective import Objective, SearchProgress, checkpoint_folder, study_key
    from archselect.search.storage import check_storage, wait_for_running
    from archselect.search.study import open_study, run_search, sampler_and_pruner
    from archselect.search.trials import counted, records
    from archselect.tracking import Tracker

    family_cls, dm, spec, hw, selection = (prep.family_cls, prep.dm, prep.spec, prep.hw,
                                           prep.selection)
    task, search = selection.task, conf.search
    runs_dir = Path(conf.runs_dir).expanduser()
    # Sampler, pruner and storage are checked, then the tracking store: a bad value in either
    # must not leave an empty study or experiment behind. Commands started at once in one folder
    # take turns to create the stores, and commands on one study (on other machines too, through
    # a PostgreSQL or MySQL storage) to create the study's parent run.
    sampler_and_pruner(search)
    check_storage(search.storage)
    runs_dir.mkdir(parents=True, exist_ok=True)
    key = study_key(study_name, search.storage)
    with held(runs_dir), study_lock(search.storage, f"start {study_name}", None, wait=True):
        tracker = Tracker.open(conf.tracking)
        study = open_study(search, study_name, selection, spec, tracker=tracker)
        parent = tracker.start_study(study_name, {
            "archselect.task": task.name, "archselect.data": str(conf.data.get("name")),
            "archselect.data_hash": spec.data_hash,
            "mlflow.note.content": f"archselect study {study_name}: {task.name} on "
            f"{conf.data.get('name')}, candidates "
            f"{', '.join(c.name for c in selection.candidates)}",
        }, resume_run_id=study.user_attrs.get("mlflow_parent_run_id"))
        study.set_user_attr("mlflow_parent_run_id", parent)
        finished_before = study.user_attrs.get(FINISHED)
    result.parent_run_id = parent
    logs = ExitStack()  # the libraries' own messages go to the study's log file from here
    result.log_file = str(logs.enter_context(library_log(log_path(runs_dir, study_name)))
                          .resolve())
    status = "FAILED"
    try:
        tracker.log_text(mask_secrets(OmegaConf.to_yaml(cfg, resolve=True)), "config/resolved.yaml")
        tracker.log_text(report.selection_markdown(sel_report), "selection/report.md")
        tracker.log_text(json.dumps(sel_report, indent=2, default=str), "selection/report.json")
        tracker.log_params(parent, {"seed": conf.seed, "task": task.name,
                                    "data": conf.data.get("name"), "data_hash": spec.data_hash,
                                    "storage": search.storage, "study": study_name,
                                    "deterministic": conf.trainer.deterministic,
                                    **package_versions()})
        _log_dataset(tracker, conf.data, spec)
        settings = TrialSettings.of(search, conf.trainer, monitor=task.monitor, mode=task.mode,
                                    seed=conf.seed, checkpoints=checkpoint_folder(
                                        conf.runs_dir, study_name, search.storage))
        objective = Objective(settings, study_name, selection, dm, hw, tracker, family_cls,
                              SearchProgress())
        reference = None
        if conf.selector.references:
            reference = _reference(prep, objective, settings, tracker, console)
        console.rule(f"Search: up to {search.n_trials} trials, timeout {search.timeout}s, "
                     + (f"{selection.workers} workers x " if selection.workers > 1 else "")
                     + f"{selection.threads} thread{'s' * (selection.threads > 1)}")
        with workers.spawned(selection.workers, selection.threads,
                             OmegaConf.to_yaml(cfg, resolve=True), study_name, hw) as procs:
            outcome = run_search(search, study, objective, selection.candidates,
                                 on_trial=report.trial_line(console, task.monitor))
            if outcome.interrupted:
                workers.stop(procs)
        # Other commands on the study (here or on other machines) may still run trials: the
        # study is finished with all of them.
        heartbeats = search.heartbeat_interval is not None and not search.storage.startswith(
            "journal:")
        others = 0 if outcome.interrupted else wait_for_running(
            study, tracker, lambda line: console.print(line, soft_wrap=True),
            heartbeats=heartbeats)
        if procs or others:  # other workers' last trials ended after this one's loop
            outcome.records = records(study)
        result.outcome = outcome
        rows = report.leaderboard(outcome, task.monitor, reference)
        report.print_leaderboard(console, rows, task.monitor)
        tracker.log_text(report.leaderboard_csv(rows), "leaderboard/leaderboard.csv")
        tracker.log_text(report.leaderboard_html(rows, study_name, task.monitor),
                         "leaderboard/leaderboard.html")
        log_optuna_plots(tracker, study)
        if outcome.stopped_by == "environment":
            raise ArchselectError(
                f"search: stopped by the machine, not by a trial: {outcome.last_failure}; that "
                "trial is not counted; fix: free the disk or repair the store it names, then run "
                "the same command again to resume")
        best = outcome.best
        if outcome.stopped_by == "search.max_failures":
            message = (f"search.max_failures: {search.max_failures} trials failed in a row "
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
        with study_lock(search.storage, f"finish {study_name}",
                        runs_dir / "locks" / f"{key}.finish.lock", wait=False) as mine:
            finished = study.user_attrs.get(FINISHED)
            if not mine or (finished is not None and finished != finished_before
                            and finished.get("trials") == counted(study)):
                # another command on this study is testing and registering it, or did so after
                # this one started, with every trial this one sees
                console.print(f"Study {study_name} is being finished by another process; this "
                              "one ran its trials and stops here.", soft_wrap=True)
                status = "RUNNING"
                return
            done = finish(outcome, selection=selection, dm=dm, hw=hw, tracker=tracker,
                          console=console, family_cls=family_cls, settings=settings,
                          tracking=conf.tracking, export=conf.export,
                          ensemble_rounds=search.ensemble_rounds, reference=reference,
                          register_references=conf.selector.register_references)
            study.set_user_attr(FINISHED, {"trials": counted(study), "by": uuid.uuid4().hex,
                                           "version": done.model_version})
        result.test_metrics, result.baseline_name = done.test_metrics, done.baseline_name
        result.baseline_metrics, result.model_uri = done.baseline_metrics, done.model_uri
        result.model_version, result.champion = done.model_version, done.champion
        result.onnx_uri = done.onnx_uri
        result.final_model, result.weights = done.model_name, done.weights
        result.reference_name = reference.name if reference is not None else ""
        result.reference_metrics = dict(reference.test_metrics) if reference is not None else {}
        result.comparison, result.output_rule = done.comparison, done.output_rule
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status != "RUNNING":
            with suppress(Exception):  # a store that failed cannot record the end either
                tracker.end_study(status)
        logs.close()
    result.total_s = time.monotonic() - started
    result.final_line = report.summary_line(outcome, result.final_model, result.test_metrics,
                                            conf.tracking.model_name, result.model_version,
                                            result.model_uri, conf.tracking.uri,
                                            conf.tracking.experiment, result.comparison,
                                            total_s=result.total_s)
    console.print(result.final_line, soft_wrap=True)  # one line, so the command can be copied


def _reference(prep: Prepared, objective: Any, settings: Any, tracker: Any,
               console: Console) -> Any:
    """The row's classical reference, fitted on the rows the trials are scored on (read back
    when the study resumes), said in one line and logged to the parent run."""
    from archselect.references import study_reference

    task = prep.selection.task
    with console.status("Fitting the classical reference..."):
        reference = study_reference(prep.dm, prep.family_cls, task, objective.views,
                                    prep.selection.refit, settings.checkpoints)
    if reference is None:
        return None
    spread = f" ± {reference.val_std:.4f} over the folds" if len(objective.views) > 1 else ""
    console.print(f"Reference: {reference.name} ({reference.setting}): {task.monitor} "
                  f"{reference.val_value:.4f} on "
                  f"validation{spread} ({reference.seconds:.0f}s); not a candidate, shown beside "
                  "the networks", soft_wrap=True)
    parent = tracker.parent_id
    tracker.set_tags(parent, {"archselect.reference": reference.name})
    tracker.log_metrics(parent, {f"reference_{task.monitor}": reference.val_value,
                                 **{f"reference_test_{k}": v
                                    for k, v in reference.test_metrics.items()}})
    return reference


def _log_dataset(tracker: Any, data: dict[str, Any], spec: DataSpec) -> None:
    """The study's data as an MLflow dataset input: its name, hash (digest) and profile."""
    path = data.get("path")
    source = str(path) if path else (f"archselect built-in data {data.get('name')} "
                                     f"({data.get('source')})")
    tracker.log_dataset(name=str(data.get("name")), digest=spec.data_hash, source=source,
                        profile={"kind": spec.kind, "num_classes": spec.num_classes,
                                 "class_names": spec.class_names, **spec.profile})
