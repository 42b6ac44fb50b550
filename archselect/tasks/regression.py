"""The regression family: MSE loss on standardised targets; RMSE, MAE and R^2 in target units."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from archselect.data.base import DataSpec
from archselect.tasks.base import FamilyModule, families


@families.register("regression")
class RegressionModule(FamilyModule):
    """Any registered architecture with one output, trained to predict a number.

    Targets arrive standardised with training-split statistics (``spec.target_mean`` /
    ``spec.target_std``); metrics and predictions are reported back in the target's own units.
    """

    target_kind = "continuous"
    test_metric = "rmse"
    test_direction = "minimize"
    trains_blocks = True

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], optim: dict[str, Any],
                 spec: dict[str, Any], max_epochs: int,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(arch, arch_kwargs, optim, spec, max_epochs, data)
        self.loss = nn.MSELoss()
        self.val_rmse = MeanSquaredError(squared=False)
        self.val_mae = MeanAbsoluteError()
        self.epoch_metrics = {"val_rmse": self.val_rmse, "val_mae": self.val_mae}

    def _units(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.spec.target_std + self.spec.target_mean

    def outputs(self, batch: dict[str, Any]) -> torch.Tensor:
        # float32 before un-standardising: half precision would round or overflow target units.
        return self(**batch["inputs"]).float().reshape(-1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if isinstance(batch, list):  # a block of batches (FamilyModule.train_block)
            self.train_block(batch)
            return None
        pred, y = self.outputs(batch), batch["target"]
        # An architecture may bring its own criterion (TabM trains each member on its own).
        own: Any = getattr(self.model, "training_loss", None)
        loss = own(pred, y) if own is not None else None
        if loss is None:
            loss = self.loss(pred, y)
        self.check_loss(loss)
        self.add_means(len(y), train_loss=loss)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pred, y = self.outputs(batch), batch["target"]
        self.val_rmse.update(self._units(pred), self._units(y))
        self.val_mae.update(self._units(pred), self._units(y))
        self.add_means(len(y), val_loss=self.loss(pred, y))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        units = self._units(self.outputs(batch))
        return {"preds": units, "targets": self._units(batch["target"]), "scores": units}

    @staticmethod
    def monitor_value(scores: torch.Tensor, targets: torch.Tensor, spec: DataSpec,
                      monitor: str) -> float:
        err = scores.float() - targets.float()
        if monitor == "val_rmse":
            return float(err.pow(2).mean().sqrt())
        if monitor == "val_mae":
            return float(err.abs().mean())
        if monitor == "val_loss":  # MSE on standardised values, as training computes it
            return float((err / spec.target_std).pow(2).mean())
        raise ValueError(f"task.monitor: {monitor!r} is not a regression metric "
                         "(val_loss, val_rmse, val_mae)")

    @staticmethod
    def decode(outputs: torch.Tensor) -> torch.Tensor:
        return outputs.reshape(-1)

    @staticmethod
    def evaluate(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, float]:
        from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

        return {"rmse": float(mean_squared_error(preds, targets, squared=False)),
                "mae": float(mean_absolute_error(preds, targets)),
                "r2": float(r2_score(preds, targets))}

    @staticmethod
    def trivial(train_targets: torch.Tensor, n: int, spec: DataSpec) -> tuple[str, torch.Tensor]:
        return "mean predictor", torch.full((n,), float(train_targets.float().mean()))

    @staticmethod
    def figures(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 6))
        ax.scatter(targets.numpy(), preds.numpy(), s=12, alpha=0.7)
        lo = float(min(targets.min(), preds.min()))
        hi = float(max(targets.max(), preds.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="perfect")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title("Predicted vs actual (test split, best model)")
        ax.legend()
        fig.tight_layout()
        return {"plots/predicted_vs_actual.png": fig}
