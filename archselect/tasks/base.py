"""What every task family shares: building from names, the optimiser, the batch format.

A batch is ``{"inputs": {name: tensor}, "target": tensor}``; the architecture is called as
``model(**batch["inputs"])``, so families know nothing about text, images or tables.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from archselect.architectures import build
from archselect.data.base import DataSpec
from archselect.registry import Registry

#: task families by the name the table's rows give (``selector.table.<task>.family``); every
#: module of this package registers its own.
families: Registry[Any] = Registry("task family", "selector.table.<task>.family",
                                   package="archselect.tasks")


class FamilyModule(pl.LightningModule):
    #: what the family's targets are: ``"classes"`` or ``"continuous"``
    target_kind = "classes"
    #: the test metric that decides whether a new model beats the registered champion, and its
    #: direction; empty: ``task.monitor`` without ``val_``, in ``task.direction``
    test_metric = ""
    test_direction = ""

    """Any registered architecture, built from names and plain values only.

    ``save_hyperparameters`` records everything, so ``load_from_checkpoint`` rebuilds the model.

    Args:
        arch: registry name of the architecture.
        arch_kwargs: the builder's keyword arguments.
        optim: ``lr`` and ``weight_decay`` for AdamW (cosine-annealed over ``max_epochs``).
        spec: the DataSpec as a dict.
        max_epochs: length of the learning-rate schedule.
        data: the trial's data settings (augmentation, a tokenizer layout, an image size):
            the test and the served model read the data as the model was trained on it.
    """

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], optim: dict[str, Any],
                 spec: dict[str, Any], max_epochs: int,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = DataSpec(**spec)
        self.model: nn.Module = build(arch, self.spec, **arch_kwargs)
        #: torchmetrics objects logged once per epoch by name (``train_*``, ``val_*``); the
        #: family updates them in its steps
        self.epoch_metrics: dict[str, Any] = {}
        self._sums: dict[str, dict[str, tuple[Any, int]]] = {"train": {}, "val": {}}
        self._values: dict[str, dict[str, torch.Tensor]] = {}
        #: while training in blocks (``train_in_blocks``): batches per epoch, the clipping norm
        #: and the schedule's interval
        self._blocks: tuple[int, float | None] | None = None
        self._interval = "epoch"

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**inputs)

    def outputs(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(**batch["inputs"])

    # -- epoch values: logged once per epoch ---------------------------------------------------
    # Lightning's ``self.log`` walks its whole collection of results on every call (about half a
    # millisecond on a CPU): more than a small model's training step. The steps add their values
    # here; each is the mean over the epoch's rows. The validation values are logged once, at the
    # end of the epoch (early stopping, the best epoch and the pruner read them there); the
    # training values are read from ``epoch_values`` by the epoch logger, nothing else needs them.
    def add_means(self, n: int, **values: torch.Tensor) -> None:
        """Add a batch's values (``train_*`` or ``val_*``, each the mean over its ``n`` rows)
        to the epoch's means."""
        for name, value in values.items():
            sums = self._sums[name.split("_", 1)[0]]
            total, rows = sums.get(name, (0.0, 0))
            sums[name] = (total + value.detach().float() * n, rows + n)

    def epoch_values(self, stage: str) -> dict[str, torch.Tensor]:
        """This epoch's values of ``stage`` (``train`` or ``val``): the means added and the
        ``epoch_metrics`` updated, computed once."""
        done = self._values.get(stage)
        if done is None:
            done = {name: total / count for name, (total, count) in self._sums[stage].items()}
            for name, metric in self.epoch_metrics.items():
                if name.startswith(f"{stage}_") and metric.update_count:
                    done[name] = metric.compute()
            self._values[stage] = done
        return done

    def _start_epoch(self, stage: str) -> None:
        self._sums[stage] = {}
        self._values.pop(stage, None)
        for name, metric in self.epoch_metrics.items():
            if name.startswith(f"{stage}_"):
                metric.reset()

    def _log_epoch(self, stage: str) -> None:
        several = self.trainer.world_size > 1
        for name, value in self.epoch_values(stage).items():
            self.log(name, value, sync_dist=several)

    def on_train_epoch_start(self) -> None:
        self._start_epoch("train")

    def on_validation_epoch_start(self) -> None:
        self._start_epoch("val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def check_loss(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {self.global_step}")

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        settings = self.hparams["optim"]
        opt: torch.optim.Optimizer
        if settings.get("optimizer", "adamw") == "adagrad":  # takes sparse embedding gradients
            opt = torch.optim.Adagrad(params, lr=float(settings["lr"]),
                                      weight_decay=float(settings["weight_decay"]))
        else:
            opt = torch.optim.AdamW(params, lr=float(settings["lr"]),
                                    weight_decay=float(settings["weight_decay"]))
        if settings.get("schedule", "cosine") == "onecycle":
            # Warm-up to lr over the first 30% of the steps, then annealing (Smith 2018).
            steps = (int(self.trainer.max_epochs or 1) * self._blocks[0] if self._blocks
                     else int(self.trainer.estimated_stepping_batches))
            cycle = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=float(settings["lr"]), total_steps=max(steps, 1),
                pct_start=0.3)
            self._interval = "step"
            return {"optimizer": opt, "lr_scheduler": {"scheduler": cycle, "interval": "step"}}
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(int(self.hparams["max_epochs"]), 1)
        )
        self._interval = "epoch"
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # -- blocks: several optimiser steps in one Lightning step ---------------------------------
    #: whether the family's ``training_step`` hands a block (a list of batches) to
    #: ``train_block``
    trains_blocks = False

    def train_in_blocks(self, batches_per_epoch: int, clip: float | None) -> None:
        """Train on blocks of batches (``data.base.Blocks``): one optimiser step per batch, as
        Lightning would take them, while Lightning's per-step machinery (hooks, callbacks,
        progress, the closure) runs once per block. For tables and short series a batch's
        arithmetic takes less time than that machinery; the steps, their order and their
        results are the same."""
        self.automatic_optimization = False
        self._blocks = (batches_per_epoch, clip)

    def train_block(self, block: list[dict[str, Any]]) -> None:
        """The optimiser steps of one block: the family's ``training_step`` per batch, then
        backward, clipping (``trainer.gradient_clip_val``), the step and a per-step schedule."""
        assert self._blocks is not None
        clip = self._blocks[1]
        opt: Any = self.optimizers()
        scheduler: Any = self.lr_schedulers() if self._interval == "step" else None
        for i, batch in enumerate(block):
            loss: Any = self.training_step(batch, i)
            opt.zero_grad()
            self.manual_backward(loss)
            if clip:
                self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            opt.step()
            if scheduler is not None:
                scheduler.step()

    def on_train_epoch_end(self) -> None:
        if self._blocks is not None and self._interval == "epoch":
            scheduler: Any = self.lr_schedulers()
            scheduler.step()  # what Lightning does for an automatically optimised module

    # -- what the finish step asks of a family ------------------------------------------------
    @staticmethod
    def decode(outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> predictions (class indices, or values)."""
        raise NotImplementedError

    @staticmethod
    def evaluate(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, float]:
        """Test metrics of predictions."""
        raise NotImplementedError

    @staticmethod
    def trivial(train_targets: torch.Tensor, n: int, spec: DataSpec) -> tuple[str, torch.Tensor]:
        """The trivial baseline's name and its ``n`` predictions."""
        raise NotImplementedError

    @staticmethod
    def figures(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, Any]:
        """Matplotlib figures of the best model on the test split, by artifact name."""
        return {}

    # -- what ensembles and cross-validation ask of a family -----------------------------------
    @staticmethod
    def scores(outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs -> what an ensemble averages (class probabilities, or values)."""
        return outputs

    @classmethod
    def decode_scores(cls, scores: torch.Tensor) -> torch.Tensor:
        """Averaged scores -> predictions (class indices, or values)."""
        return cls.decode(scores)

    @staticmethod
    def monitor_value(scores: torch.Tensor, targets: torch.Tensor, spec: DataSpec,
                      monitor: str) -> float:
        """The monitored validation metric (``val_f1``, ``val_rmse``, ...) of scores, as the
        family's ``validation_step`` computes it over a whole split."""
        raise NotImplementedError

    @staticmethod
    def combine_outputs(outputs: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
        """An ensemble's raw outputs from its members' (what the codec decodes): the weighted
        mean, which is the weighted mean of values in the target's units (their scaling is
        linear)."""
        return sum((w * o for w, o in zip(weights, outputs, strict=True)),
                   torch.zeros_like(outputs[0]))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        # Loaders may group rows by length, so predictions travel with their targets.
        out = self.outputs(batch)
        return {"preds": self.decode(out), "targets": batch["target"], "scores": self.scores(out)}
