"""One trial: pick an architecture and its hyperparameters, one Lightning fit, one MLflow run."""

from __future__ import annotations

import re
import shutil
import time
import warnings
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import optuna

from archselect.config.schema import SearchConfig, TrainerConfig
from archselect.data.base import BaseDataModule
from archselect.hardware import HardwareProfile
from archselect.hashing import stable_hash
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
from archselect.selector import Candidate, Selection
from archselect.space import suggest
from archselect.tracking import Tracker


@dataclass(frozen=True)
class TrialSettings:
    """What one trial reads of the config."""

    n_trials: int
    patience: int
    seed: int
    trial_timeout: float | None
    monitor: str
    mode: str
    devices: Any
    deterministic: bool
    gradient_clip_val: float | None
    num_workers: int
    progress_bar: bool
    limit_train_batches: float | None
    checkpoints: Path

    @classmethod
    def of(cls, search: SearchConfig, trainer: TrainerConfig, *, monitor: str, mode: str,
           seed: int, checkpoints: Path) -> TrialSettings:
        """The settings from the ``search`` and ``trainer`` sections and the task's monitor."""
        return cls(n_trials=search.n_trials, patience=search.patience, seed=seed,
                   trial_timeout=search.trial_timeout, monitor=monitor, mode=mode,
                   devices=trainer.devices, deterministic=trainer.deterministic,
                   gradient_clip_val=trainer.gradient_clip_val, num_workers=trainer.num_workers,
                   progress_bar=trainer.progress_bar,
                   limit_train_batches=trainer.limit_train_batches, checkpoints=checkpoints)


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
        model_kw, optim, data_opts = cand.split(values)
        trial.set_user_attr("max_epochs", cand.max_epochs)
        try:
            run_id = self.tracker.start_trial(
                self.study_name, trial.number, cand.name,
                {**{f"model.{k}": v for k, v in model_kw.items()},
                 **{f"optim.{k}": v for k, v in optim.items()},
                 **{f"data.{k}": v for k, v in data_opts.items()}, "max_epochs": cand.max_epochs},
            )
        except Exception as exc:
            raise self._environment(trial, None, exc) from exc
        trial.set_user_attr("mlflow_run_id", run_id)
        start = time.monotonic()
        trainer = None
        try:
            batch_size, accumulate = int(optim["batch_size"]), 1
            while True:
                try:
                    trainer, ckpt = self._fit(trial, cand, model_kw, optim, data_opts, run_id,
                                              batch_size, accumulate)
                    break
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
            fit_s = time.monotonic() - start
            trial.set_user_attr("epochs", int(trainer.current_epoch))
            trial.set_user_attr("duration_s", round(fit_s, 2))
            score = ckpt.best_model_score
            timed_out = s.trial_timeout is not None and fit_s >= s.trial_timeout
            if timed_out and score is None:
                raise TimeoutError(f"search.trial_timeout ({s.trial_timeout:g}s) reached "
                                   "before the trial's first validation")
            if score is None or not bool(score.isfinite()):
                raise FloatingPointError(f"{s.monitor} was never finite")
            if timed_out:
                trial.set_user_attr("stopped_by", "search.trial_timeout")
                raise optuna.TrialPruned(f"search.trial_timeout ({s.trial_timeout:g}s) "
                                         f"stopped it after {int(trainer.current_epoch)} epochs")
            value = float(score)
            trial.set_user_attr("checkpoint", str(ckpt.best_model_path))
            self.tracker.end_trial(run_id, "COMPLETE", metrics={
                f"best_{s.monitor}": value, "n_params": float(trial.user_attrs["n_params"]),
                "duration_s": fit_s, "epochs": trainer.current_epoch,
            })
            return value
        except optuna.TrialPruned as exc:
            epochs = int(trainer.current_epoch) + 1 if trainer is not None else 0
            trial.set_user_attr("epochs", epochs)
            trial.set_user_attr("duration_s", round(time.monotonic() - start, 2))
            self.tracker.end_trial(run_id, "PRUNED", reason=str(exc) or None, metrics={
                "duration_s": time.monotonic() - start, "epochs": epochs})
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

    def _fit(self, trial: optuna.Trial, cand: Candidate, model_kw: dict[str, Any],
             optim: dict[str, Any], data_opts: dict[str, Any], run_id: str, batch_size: int,
             accumulate: int) -> tuple[Any, Any]:
        """One Lightning fit; returns the trainer and its checkpoint callback."""
        import lightning.pytorch as pl
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
        from optuna_integration import PyTorchLightningPruningCallback

        from archselect.architectures import count_parameters

        s = self.settings
        dm = self.datamodule
        spec = dm.for_trial(cand.option, batch_size=batch_size, num_workers=s.num_workers,
                            **data_opts)
        pl.seed_everything(s.seed + trial.number, workers=True, verbose=False)
        module = self.family_cls(
            arch=cand.name, arch_kwargs=model_kw,
            optim={"lr": optim["lr"], "weight_decay": optim["weight_decay"]},
            spec=spec.to_dict(), max_epochs=cand.max_epochs,
        )
        trial.set_user_attr("n_params", count_parameters(module.model))
        ckpt = ModelCheckpoint(dirpath=s.checkpoints / f"trial-{trial.number}",
                               filename="best", monitor=s.monitor, mode=s.mode, save_top_k=1,
                               save_weights_only=True)
        callbacks: list[pl.Callback] = [
            EarlyStopping(monitor=s.monitor, mode=s.mode, patience=s.patience),
            ckpt,
            self.tracker.epoch_logger(run_id),
        ]
        if not trial.user_attrs.get("baseline"):
            # Baselines are the reference each candidate gets: they run to the end.
            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=s.monitor))
        if s.progress_bar:
            callbacks.append(StudyProgressBar(self.progress.done, self.progress.total,
                                              self.progress.deadline))
        n_batches = max(len(dm.train_dataloader()), 1)
        trainer = pl.Trainer(
            max_epochs=cand.max_epochs, accelerator=self.hw.accelerator,
            # search.trial_timeout bounds one trial; it keeps the best checkpoint it reached.
            max_time=(None if s.trial_timeout is None else timedelta(seconds=s.trial_timeout)),
            devices=s.devices,
            precision=self.hw.precision,  # type: ignore[arg-type]
            deterministic=s.deterministic,
            gradient_clip_val=s.gradient_clip_val,
            accumulate_grad_batches=accumulate,
            callbacks=callbacks, logger=False, enable_model_summary=False,
            enable_progress_bar=s.progress_bar,
            num_sanity_val_steps=0, log_every_n_steps=min(50, n_batches),
            limit_train_batches=1.0 if s.limit_train_batches is None else s.limit_train_batches,
            default_root_dir=str(s.checkpoints),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
            try:
                trainer.fit(module, datamodule=dm)
            except SystemExit:
                # Lightning turns Ctrl-C (and SIGTERM) into SystemExit after its own clean-up.
                raise KeyboardInterrupt from None
        if trainer.interrupted:
            raise KeyboardInterrupt
        return trainer, ckpt

    def _free_memory(self, number: int) -> None:
        import gc

        import torch

        self._drop_checkpoint(number)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _drop_checkpoint(self, number: int) -> None:
        shutil.rmtree(self.settings.checkpoints / f"trial-{number}", ignore_errors=True)
