"""One trial: pick an architecture and its hyperparameters, one Lightning fit (or one per fold of
a cross-validation), one MLflow run."""

from __future__ import annotations

import re
import shutil
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from archselect.data.base import BaseDataModule, View
from archselect.hardware import HardwareProfile
from archselect.hashing import stable_hash
from archselect.search.fit import (
    Configuration,
    Fitted,
    FoldPruning,
    TrialSettings,
    fit,
    load_weights,
    predict,
)
from archselect.search.progress import StudyProgressBar
from archselect.search.storage import worker_id
from archselect.search.trials import (
    KILLED_REASON,
    EnvironmentFault,
    Surplus,
    TrialFailed,
    cuda_oom,
    environment_fault,
    fail_reason,
    taken,
)
from archselect.selector import Selection
from archselect.space import suggest
from archselect.tracking import Tracker


@dataclass
class SearchProgress:
    """How far the study is, shared by the search loop (which updates it) and the trials (whose
    progress bar shows it)."""

    done: int = 0
    total: int = 0
    deadline: float | None = None


def study_key(study_name: str, storage: str) -> str:
    """A file name for a study of a storage (its name made safe, and the storage's hash)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", study_name)
    return f"{safe}-{stable_hash(storage)[:8]}"


def checkpoint_folder(runs_dir: str, study_name: str, storage: str) -> Path:
    """Where a study's trials keep their best checkpoints (one folder per study and storage)."""
    return Path(runs_dir) / "checkpoints" / study_key(study_name, storage)


class Objective:
    """One trial: pick an architecture and its hyperparameters, fit, report the best value.

    Args:
        settings: what the trial reads of the config.
        study_name: the study (named on the trial's MLflow run).
        selection: the candidates and their spaces.
        datamodule: the prepared data.
        hw: the hardware profile (accelerator, precision).
        tracker: the study's MLflow writer.
        family_cls: the task family's LightningModule class.
        progress: the study's progress, for the progress bar.
    """

    def __init__(self, settings: TrialSettings, study_name: str, selection: Selection,
                 datamodule: BaseDataModule, hw: HardwareProfile, tracker: Tracker,
                 family_cls: type, progress: SearchProgress) -> None:
        self.settings = settings
        self.study_name = study_name
        self.candidates = {c.name: c for c in selection.candidates}
        self.datamodule = datamodule
        self.hw = hw
        self.tracker = tracker
        self.family_cls = family_cls
        self.progress = progress
        #: the folds every trial fits (the selection's cross-validation), or the one plain split
        self.views: list[View | None] = (list(datamodule.folds(selection.folds))
                                         if selection.folds > 1 else [None])

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.settings
        trial.set_user_attr("worker", worker_id())
        if taken(trial.study, below=trial.number) >= s.n_trials:
            # Another worker filled the budget between this worker's check and its ask.
            trial.set_user_attr("surplus", True)
            raise Surplus(f"the study already has its {s.n_trials} trials")
        arch = trial.suggest_categorical("arch", list(self.candidates))
        cand = self.candidates[str(arch)]
        values = suggest(trial, cand.name, cand.space)
        config = Configuration.of(cand, values)
        trial.set_user_attr("max_epochs", cand.max_epochs)
        try:
            run_id = self.tracker.start_trial(
                self.study_name, trial.number, cand.name,
                {**{f"model.{k}": v for k, v in config.model.items()},
                 **{f"optim.{k}": v for k, v in config.optim.items()},
                 **{f"data.{k}": v for k, v in config.data.items()}, "max_epochs": cand.max_epochs,
                 **({"cv_folds": len(self.views)} if len(self.views) > 1 else {})},
            )
        except Exception as exc:
            raise self._environment(trial, None, exc) from exc
        trial.set_user_attr("mlflow_run_id", run_id)
        start = time.monotonic()
        epochs_run = 0
        try:
            folds: list[dict[str, Any]] = []
            for f, view in enumerate(self.views):
                left = (None if s.trial_timeout is None
                        else s.trial_timeout - (time.monotonic() - start))
                if left is not None and left <= 0:
                    break
                fitted = self._fit_fold(trial, config, run_id, f, view, left)
                epochs_run += int(fitted.trainer.current_epoch)
                best = fitted.best
                if best is None or best.value is None or fitted.checkpoint is None:
                    if s.trial_timeout is not None and time.monotonic() - start >= s.trial_timeout:
                        if not folds:
                            raise TimeoutError(f"search.trial_timeout ({s.trial_timeout:g}s) "
                                               "reached before the trial's first validation")
                        break
                    raise FloatingPointError(f"{s.monitor} was never finite")
                folds.append(self._fold_record(f, view, fitted))
                if s.trial_timeout is not None and time.monotonic() - start >= s.trial_timeout:
                    break
            fit_s = time.monotonic() - start
            trial.set_user_attr("epochs", epochs_run)
            trial.set_user_attr("duration_s", round(fit_s, 2))
            trial.set_user_attr("n_params", folds[0]["n_params"] if folds else 0)
            if len(folds) < len(self.views) or (
                    s.trial_timeout is not None and fit_s >= s.trial_timeout):
                trial.set_user_attr("stopped_by", "search.trial_timeout")
                raise optuna.TrialPruned(
                    f"search.trial_timeout ({s.trial_timeout:g}s) stopped it after {epochs_run} "
                    "epochs" + (f" ({len(folds)} of {len(self.views)} folds)"
                                if len(self.views) > 1 else ""))
            value = self._keep(trial, folds)
            self.tracker.end_trial(run_id, "COMPLETE", metrics={
                f"best_{s.monitor}": value, "n_params": float(trial.user_attrs["n_params"]),
                "duration_s": fit_s, "epochs": epochs_run,
                **({f"cv_std_{s.monitor}": float(trial.user_attrs["value_std"])}
                   if len(folds) > 1 else {}),
            })
            return value
        except optuna.TrialPruned as exc:
            trial.set_user_attr("epochs", epochs_run + 1)
            trial.set_user_attr("duration_s", round(time.monotonic() - start, 2))
            self.tracker.end_trial(run_id, "PRUNED", reason=str(exc) or None, metrics={
                "duration_s": time.monotonic() - start, "epochs": epochs_run + 1})
            self._drop_checkpoint(trial.number)
            raise
        except KeyboardInterrupt:
            self.tracker.end_trial(run_id, "KILLED", reason=f"interrupted (Ctrl-C or SIGTERM); "
                                   f"{KILLED_REASON}")
            self._drop_checkpoint(trial.number)
            raise
        except Exception as exc:
            if environment_fault(exc):
                raise self._environment(trial, run_id, exc) from exc
            reason = fail_reason(exc)
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("duration_s", round(time.monotonic() - start, 2))
            self.tracker.end_trial(run_id, "FAIL", reason=reason)
            self._drop_checkpoint(trial.number)
            raise TrialFailed(reason) from exc

    def _fit_fold(self, trial: optuna.Trial, config: Configuration, run_id: str, fold: int,
                  view: View | None, max_time: float | None) -> Fitted:
        """One fit of the trial (fold ``fold`` of its cross-validation, or its only one); a CUDA
        out-of-memory error is retried once at half the batch with twice the accumulation."""
        s = self.settings
        batch_size = int(trial.user_attrs.get("batch_size", config.optim["batch_size"]))
        accumulate = int(trial.user_attrs.get("accumulate", 1))
        offset = fold * config.max_epochs
        while True:
            callbacks: list[Any] = [self.tracker.epoch_logger(run_id, step_offset=offset,
                                                              latency=fold == 0)]
            if not trial.user_attrs.get("baseline"):
                # Baselines are the reference each candidate gets: they run to the end.
                callbacks.append(FoldPruning(trial, s.monitor, offset=offset))
            if s.progress_bar:
                callbacks.append(StudyProgressBar(self.progress.done, self.progress.total,
                                                  self.progress.deadline))
            try:
                return fit(config, dm=self.datamodule, view=view, settings=s, hw=self.hw,
                           family_cls=self.family_cls,
                           folder=self._folder(trial.number) / f"fold-{fold}",
                           seed=s.seed + trial.number, batch_size=batch_size,
                           accumulate=accumulate, max_time=max_time, callbacks=callbacks)
            except Exception as exc:
                if not (cuda_oom(exc) and accumulate == 1 and batch_size > 1):
                    raise
                # Once: half the batch, twice the accumulation, the same effective batch.
                note = (f"CUDA out of memory at batch size {batch_size}; retried at "
                        f"{batch_size // 2} with gradient accumulation 2")
                trial.set_user_attr("oom_retry", note)
                self.tracker.set_tags(run_id, {"archselect.oom_retry": note})
                self._free_memory(trial.number)
                batch_size, accumulate = batch_size // 2, 2
                trial.set_user_attr("batch_size", batch_size)
                trial.set_user_attr("accumulate", accumulate)

    def _fold_record(self, fold: int, view: View | None, fitted: Fitted) -> dict[str, Any]:
        """What a fold leaves: its best value, epoch and metrics, and its validation predictions
        with their rows of the pool (saved beside the checkpoint, for ensembles)."""
        assert fitted.best is not None and fitted.checkpoint is not None
        dm = self.datamodule
        dm.view = view
        try:
            preds = predict(load_weights(fitted.module, fitted.checkpoint),
                            dm.ordered_loader("check"), self.hw)
        finally:
            dm.view = None
        n_train, n_val = dm.pool_sizes()
        rows = view.check if view is not None else np.arange(n_train, n_train + n_val)
        return {"fold": fold, "value": fitted.best.value, "epoch": fitted.best.epoch,
                "metrics": fitted.best.metrics, "checkpoint": str(fitted.checkpoint),
                "n_params": fitted.n_params, "rows": rows, "predictions": preds}

    def _keep(self, trial: optuna.Trial, folds: list[dict[str, Any]]) -> float:
        """The trial's value (the mean over its folds), its spread, best epochs and metrics as
        user attributes; the best fold's checkpoint kept, the others removed; the validation
        predictions of every fold saved in row order of the pool (``val_predictions.pt``)."""
        values = np.array([f["value"] for f in folds], dtype=np.float64)
        pick = int(values.argmax() if self.settings.mode == "max" else values.argmin())
        trial.set_user_attr("checkpoint", folds[pick]["checkpoint"])
        trial.set_user_attr("best_epochs", [int(f["epoch"]) for f in folds])
        keys = set.intersection(*(set(f["metrics"]) for f in folds))
        trial.set_user_attr("val_metrics", {k: round(float(np.mean([f["metrics"][k]
                                                                   for f in folds])), 6)
                                            for k in sorted(keys)})
        trial.set_user_attr("value_std", round(float(values.std()), 6))
        if len(folds) > 1:
            trial.set_user_attr("fold_values", [round(float(v), 6) for v in values])
        order = np.argsort(np.concatenate([f["rows"] for f in folds]), kind="stable")
        saved = {"rows": np.concatenate([f["rows"] for f in folds])[order],
                 **{k: torch.cat([getattr(f["predictions"], k) for f in folds])[order]
                    for k in ("scores", "targets")}}
        path = self._folder(trial.number) / "val_predictions.pt"
        torch.save(saved, path)
        trial.set_user_attr("val_predictions", str(path))
        for i, f in enumerate(folds):
            if i != pick:
                shutil.rmtree(Path(f["checkpoint"]).parent, ignore_errors=True)
        return float(values.mean())

    def _environment(self, trial: optuna.Trial, run_id: str | None,
                     exc: BaseException) -> EnvironmentFault:
        """The trial stopped by its environment: recorded (where the stores still answer) without
        a fail_reason, so it is not counted, and raised on so that the study stops."""
        reason = fail_reason(exc)
        with suppress(Exception):  # the store that failed may be the study's own
            trial.set_user_attr("environment_failure", reason)
        if run_id is not None:
            with suppress(Exception):
                self.tracker.end_trial(run_id, "KILLED", reason=f"not counted: {reason}")
        self._drop_checkpoint(trial.number)
        return EnvironmentFault(reason)

    def _folder(self, number: int) -> Path:
        return self.settings.checkpoints / f"trial-{number}"

    def _free_memory(self, number: int) -> None:
        import gc

        import torch

        self._drop_checkpoint(number)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _drop_checkpoint(self, number: int) -> None:
        shutil.rmtree(self._folder(number), ignore_errors=True)
