"""The classification family: cross-entropy, accuracy and macro-F1 from torchmetrics."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from archselect.architectures import build
from archselect.data.base import DataSpec
from archselect.tasks import families


@families.register("classification")
class ClassificationModule(pl.LightningModule):
    """Any registered architecture trained as a classifier.

    Built from names and plain values only, so ``save_hyperparameters`` records everything and
    ``load_from_checkpoint`` rebuilds the same model.

    Args:
        arch: registry name of the architecture.
        arch_kwargs: the builder's keyword arguments.
        optim: ``lr`` and ``weight_decay`` for AdamW (cosine-annealed over ``max_epochs``).
        spec: the DataSpec as a dict.
        max_epochs: length of the learning-rate schedule.
    """

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], optim: dict[str, Any],
                 spec: dict[str, Any], max_epochs: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = DataSpec(**spec)
        self.model: nn.Module = build(arch, self.spec, **arch_kwargs)
        n = self.spec.num_classes
        self.loss = nn.CrossEntropyLoss()
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=n, average="macro")
        self.test_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.test_f1 = MulticlassF1Score(num_classes=n, average="macro")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)

    def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(batch["input_ids"], batch["attention_mask"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self._logits(batch)
        loss = self.loss(logits, batch["labels"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {self.global_step}")
        self.train_acc(logits, batch["labels"])
        bs = len(batch["labels"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=bs)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self._logits(batch)
        bs = len(batch["labels"])
        self.val_acc(logits, batch["labels"])
        self.val_f1(logits, batch["labels"])
        self.log("val_loss", self.loss(logits, batch["labels"]), batch_size=bs)
        self.log("val_acc", self.val_acc, batch_size=bs)
        self.log("val_f1", self.val_f1, batch_size=bs)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self._logits(batch)
        bs = len(batch["labels"])
        self.test_acc(logits, batch["labels"])
        self.test_f1(logits, batch["labels"])
        self.log("test_acc", self.test_acc, batch_size=bs)
        self.log("test_f1", self.test_f1, batch_size=bs)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int
                     ) -> dict[str, torch.Tensor]:
        # Loaders may group rows by length, so predictions travel with their labels.
        return {"preds": self._logits(batch).argmax(-1), "labels": batch["labels"]}

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=float(self.hparams["optim"]["lr"]),
                                weight_decay=float(self.hparams["optim"]["weight_decay"]))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(int(self.hparams["max_epochs"]), 1)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
