"""One Lightning fit of one configuration, and the predictions of its weights: what a trial does
once per fold, and what the finish step's refit does on train + val.

A configuration is a candidate with values for its searched parameters (``Configuration``); the
LightningModule is built from it by name (the task family's contract), so a refit rebuilds exactly
what the trial trained.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from archselect.config.schema import SearchConfig, TrainerConfig
from archselect.data.base import BaseDataModule, DataSpec, View
from archselect.hardware import HardwareProfile, device_count
from archselect.selector import Candidate
from archselect.tracking import epoch_metrics

#: batches per Lightning training step where the data and the family take blocks (tables,
#: series: ``BaseDataModule.blocks``, ``FamilyModule.trains_blocks``)
BLOCK = 32


@dataclass(frozen=True)
class TrialSettings:
    """What one fit reads of the config."""

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


@dataclass(frozen=True)
class Configuration:
    """One candidate with values for its searched parameters: what a trial trains and a refit
    trains again."""

    arch: str
    model: dict[str, Any]
    optim: dict[str, Any]
    data: dict[str, Any]
    option: str | None
    max_epochs: int

    @classmethod
    def of(cls, cand: Candidate, values: dict[str, Any]) -> Configuration:
        """``cand`` with ``values`` (the trial's parameters, without the ``<arch>.`` prefix)."""
        model, optim, data = cand.split(values)
        return cls(arch=cand.name, model=model, optim=optim, data=data, option=cand.option,
                   max_epochs=cand.max_epochs)

    def module(self, family_cls: Any, spec: DataSpec) -> pl.LightningModule:
        """A fresh LightningModule of this configuration."""
        optim = {k: self.optim[k] for k in ("lr", "weight_decay", "class_weight",
                                            "label_smoothing", "schedule", "optimizer")
                 if k in self.optim}
        return family_cls(arch=self.arch, arch_kwargs=self.model, optim=optim,
                          spec=spec.to_dict(), max_epochs=self.max_epochs, data=dict(self.data))


class _Launcher(_MultiProcessingLauncher):
    """Lightning's process launcher, carrying rank 0's callback states and trained epochs back;
    the processes' library messages go to the study's log file, as the command's do."""

    log_file: str | None = None

    def _wrapping_function(self, *args: Any, **kwargs: Any) -> None:
        from archselect.logs import library_log

        with ExitStack() as stack, warnings.catch_warnings():
            if self.log_file:
                stack.enter_context(library_log(Path(self.log_file)))
            warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            super()._wrapping_function(*args, **kwargs)

    def get_extra_results(self, trainer: pl.Trainer) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        extra["archselect"] = [c.rank_zero_state() if hasattr(c, "rank_zero_state") else None
                               for c in trainer.callbacks]  # type: ignore[attr-defined]
        extra["archselect_epoch"] = trainer.current_epoch
        return extra

    def update_main_process_results(self, trainer: pl.Trainer, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        for callback, state in zip(trainer.callbacks,  # type: ignore[attr-defined]
                                   extra.get("archselect", []), strict=False):
            if hasattr(callback, "restore_rank_zero") and state is not None:
                callback.restore_rank_zero(state)
        # the epochs trained (trials and refits count them)
        trainer.fit_loop.epoch_progress.current.completed = extra["archselect_epoch"]


class SpawnedDDP(DDPStrategy):
    """One trial on several processes: Lightning's DDP, its processes started by
    ``torch.multiprocessing`` (spawned: a fresh interpreter each, handed the trainer, the module
    and the data; not a second start of the command, which would run a study of its own), gloo on
    CPUs and NCCL on GPUs. A callback with ``rank_zero_state()`` gets rank 0's state back in
    ``restore_rank_zero(state)`` when the fit ends; the trained epochs come back too."""

    def __init__(self, accelerator: str) -> None:
        super().__init__(process_group_backend="gloo" if accelerator == "cpu" else "nccl",
                         start_method="spawn")

    def _configure_launcher(self) -> None:
        launcher = _Launcher(self, start_method="spawn")
        # the study's log file, where this process's library messages go (archselect.logs)
        launcher.log_file = next((h.baseFilename for h in logging.getLogger(
            "lightning.pytorch").handlers if isinstance(h, logging.FileHandler)), None)
        self._launcher = launcher


class EpochRecorder(pl.Callback):
    """Under DDP, in the trial's processes: rank 0's values of each epoch (validation values
    after validation; training means and the learning rate at the end of the training epoch),
    carried back to the command's process, which hands them to the callbacks that write to the
    stores (``replay``): the MLflow epoch logger and the pruner's reports."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, str, dict[str, float]]] = []

    def rank_zero_state(self) -> Any:
        return self.epochs

    def restore_rank_zero(self, state: Any) -> None:
        self.epochs = list(state)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.epochs.append((int(trainer.current_epoch), "val",
                                epoch_metrics(trainer, pl_module, "val")))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs.append((int(trainer.current_epoch), "train",
                            epoch_metrics(trainer, pl_module, "train")))


class BestEpoch(pl.Callback):
    """Keeps the weights of the best epoch (``path``, weights only) and every validation metric
    there: what a trial's value, its tie-breaks and a refit's epoch count come from.

    The best epoch is the one with the best ``monitor``; among epochs that equal it (a saturated
    metric, e.g. a macro-F1 of 1.0 on a few rows) the one with the lowest ``val_loss``, so that
    the weights and the epoch count are not those of the first epoch to get there.
    """

    def __init__(self, monitor: str, mode: str, path: Path) -> None:
        self.monitor, self.mode, self.path = monitor, mode, path
        self.value: float | None = None
        self.epoch: int | None = None
        self.metrics: dict[str, float] = {}

    def _better(self, value: float, loss: float | None) -> bool:
        if self.value is None:
            return True
        if value != self.value:
            return value > self.value if self.mode == "max" else value < self.value
        held = self.metrics.get("val_loss")
        return (self.monitor != "val_loss" and loss is not None and held is not None
                and loss < held)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        found = trainer.callback_metrics.get(self.monitor)
        if found is None:
            return
        value = float(found)
        if not math.isfinite(value):
            return
        loss = trainer.callback_metrics.get("val_loss")
        if self._better(value, None if loss is None else float(loss)):
            self.value, self.epoch = value, int(trainer.current_epoch)
            self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                            if k.startswith("val_") and v.numel() == 1}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.path, weights_only=True)

    def rank_zero_state(self) -> Any:
        return self.value, self.epoch, self.metrics

    def restore_rank_zero(self, state: Any) -> None:
        self.value, self.epoch, self.metrics = state


class FoldPruning(pl.Callback):
    """Reports ``monitor`` to the Optuna trial after each validation, at step ``offset + epoch``
    (fold ``f`` of a cross-validated trial reports from ``f * max_epochs``, so the pruner compares
    the same fold and epoch across trials), and prunes when the pruner says so.

    A trial on several processes (DDP) is not pruned mid-way: its processes do not write to the
    study; its values are reported when the fit ends (``replay``)."""

    def __init__(self, trial: optuna.Trial, monitor: str, offset: int = 0) -> None:
        self.trial, self.monitor, self.offset = trial, monitor, offset

    def replay(self, epoch: int, stage: str, metrics: dict[str, float]) -> None:
        """An epoch of a DDP fit, after it ended."""
        if stage == "val" and self.monitor in metrics:
            self.trial.report(metrics[self.monitor], step=self.offset + epoch)

    def replayed(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """A DDP fit's epochs were all replayed."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        step = self.offset + int(trainer.current_epoch)
        self.trial.report(float(value), step=step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch} ({self.monitor} "
                                     f"{float(value):.4g})")


@dataclass
class Fitted:
    """One fit: the trainer, the module (its last weights), the checkpoint of its best (or, with
    nothing to validate on, its last) weights, and the best epoch's metrics."""

    trainer: pl.Trainer
    module: pl.LightningModule
    checkpoint: Path | None
    best: BestEpoch | None
    n_params: int = 0


def fit(config: Configuration, *, dm: BaseDataModule, view: View | None,
        settings: TrialSettings, hw: HardwareProfile, family_cls: Any, folder: Path,
        seed: int, batch_size: int, accumulate: int = 1, epochs: int | None = None,
        max_time: float | None = None, callbacks: list[pl.Callback] | None = None,
        validate: bool = True) -> Fitted:
    """Train ``config`` once on the rows ``view`` names (None: the train split, validated on the
    val split).

    Args:
        config: what to build and how to train it.
        dm: the prepared data (pointed at ``view`` while fitting, then back at the splits).
        view: the rows to train and validate on; a refit's view holds nothing out.
        settings: the trial settings (monitor, patience, trainer flags).
        hw: accelerator and precision.
        family_cls: the task family's LightningModule class.
        folder: where the checkpoint goes (``best.ckpt``, or ``last.ckpt`` without validation).
        seed: seeds torch, numpy and the loaders' workers.
        batch_size: the batch size (the trial may halve it after a CUDA out-of-memory error).
        accumulate: gradient accumulation steps.
        epochs: epochs to train (default: the configuration's ``max_epochs``).
        max_time: seconds before Lightning stops the fit (None: no limit).
        callbacks: more callbacks (pruning, the MLflow epoch logger, a progress bar).
        validate: False trains for ``epochs`` without early stopping or validation (a refit).

    Raises:
        KeyboardInterrupt: when a signal stopped the fit.
    """
    from lightning.pytorch.callbacks import EarlyStopping

    from archselect.architectures import count_parameters

    spec = dm.for_trial(config.option, batch_size=batch_size, num_workers=settings.num_workers,
                        **config.data)
    pl.seed_everything(seed, workers=True, verbose=False)
    module = config.module(family_cls, spec)
    own: list[pl.Callback] = []
    best = None
    if validate:
        best = BestEpoch(settings.monitor, settings.mode, folder / "best.ckpt")
        own = [EarlyStopping(monitor=settings.monitor, mode=settings.mode,
                             patience=settings.patience), best]
    dm.view = view
    n_devices = device_count(settings.devices)
    given = list(callbacks or [])
    replayed: list[Any] = []
    recorder = None
    if n_devices > 1:
        # DDP: what writes to the stores stays here and is handed rank 0's epochs after the
        # fit; no progress bar (the processes would draw one each).
        replayed = [c for c in given if hasattr(c, "replay")]
        recorder = EpochRecorder()
        given = [c for c in given if not hasattr(c, "replay")
                 and not isinstance(c, pl.callbacks.ProgressBar)] + [recorder]
    try:
        n_batches = max(len(dm.train_dataloader()), 1)
        if (dm.blocks and getattr(module, "trains_blocks", False) and accumulate == 1
                and n_devices == 1 and n_batches > 1
                and settings.limit_train_batches in (None, 1.0)):  # a limit counts batches
            # a table's or a series' batches, BLOCK at a time per Lightning step
            blocked: Any = module
            blocked.train_in_blocks(n_batches, settings.gradient_clip_val)
            dm.block = BLOCK
            n_batches = -(-n_batches // BLOCK)  # Lightning's steps: the blocks
        trainer = pl.Trainer(
            max_epochs=epochs or config.max_epochs, accelerator=hw.accelerator,
            max_time=None if max_time is None else timedelta(seconds=max(max_time, 1.0)),
            devices=settings.devices,
            strategy=SpawnedDDP(hw.accelerator) if n_devices > 1 else "auto",
            precision=hw.precision,  # type: ignore[arg-type]
            deterministic=settings.deterministic,
            # a module that steps its own optimisers (a GAN) clips nothing by the trainer
            gradient_clip_val=(settings.gradient_clip_val if module.automatic_optimization
                               else None),
            accumulate_grad_batches=accumulate if module.automatic_optimization else 1,
            callbacks=[*own, *given], logger=False, enable_model_summary=False,
            enable_progress_bar=any(isinstance(c, pl.callbacks.ProgressBar) for c in given),
            enable_checkpointing=False, num_sanity_val_steps=0,
            limit_val_batches=1.0 if validate else 0,
            log_every_n_steps=min(50, n_batches),
            limit_train_batches=(1.0 if settings.limit_train_batches is None
                                 else settings.limit_train_batches),
            default_root_dir=str(folder),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
            warnings.filterwarnings("ignore", ".*val_dataloader.*")
            try:
                trainer.fit(module, datamodule=dm)
            except SystemExit:
                # Lightning turns Ctrl-C (and SIGTERM) into SystemExit after its own clean-up.
                raise KeyboardInterrupt from None
    finally:
        dm.view = None
        dm.block = 1
    if recorder is not None:
        for epoch in recorder.epochs:
            for callback in replayed:
                callback.replay(*epoch)
        for callback in replayed:
            callback.replayed(trainer, module)
    if trainer.interrupted:
        raise KeyboardInterrupt
    path: Path | None
    if validate:
        assert best is not None
        path = best.path if best.epoch is not None else None
    else:
        path = folder / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=True)
    return Fitted(trainer=trainer, module=module, checkpoint=path, best=best,
                  n_params=count_parameters(module.model))  # type: ignore[arg-type]


@dataclass
class Predictions:
    """A model's predictions of some rows, in row order: its ``scores`` (class probabilities or
    values, what ensembles average), the ``targets``, and the decoded ``preds``."""

    scores: torch.Tensor
    targets: torch.Tensor
    preds: torch.Tensor


def predict(module: pl.LightningModule, loader: Any, hw: HardwareProfile) -> Predictions:
    """Run ``module`` over ``loader`` (in its order) with the accelerator and precision of
    ``hw``."""
    trainer = pl.Trainer(accelerator=hw.accelerator, devices=1,
                         precision=hw.precision,  # type: ignore[arg-type]
                         logger=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs: Any = trainer.predict(module, dataloaders=loader)
    return Predictions(scores=torch.cat([o["scores"].float() for o in outputs]),
                       targets=torch.cat([o["targets"] for o in outputs]),
                       preds=torch.cat([o["preds"] for o in outputs]))


def load_weights(module: pl.LightningModule, checkpoint: Path) -> pl.LightningModule:
    """``module`` with the weights of a (weights-only) checkpoint."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    return module
