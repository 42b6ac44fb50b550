"""The forecasting family: a window of history -> the next ``horizon`` values.

Loss: MSE on scaled values. Metrics in the target's units: MAE, RMSE, sMAPE (percent) and
MASE, scaled by the seasonal-naive forecast's MAE on the same test windows (MASE < 1 beats it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from archselect.data.base import DataSpec
from archselect.tasks import families
from archselect.tasks.base import FamilyModule


@families.register("forecasting")
class ForecastingModule(FamilyModule):
    """Any registered architecture with ``horizon`` outputs, trained to forecast.

    Batches carry ``offset`` [B]: the level each window was scaled around (its last value, or the
    training mean); ``units = scaled * spec.target_std + offset``.
    """

    target_kind = "forecast"
    test_metric = "mase"
    test_direction = "minimize"

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], optim: dict[str, Any],
                 spec: dict[str, Any], max_epochs: int) -> None:
        super().__init__(arch, arch_kwargs, optim, spec, max_epochs)
        self.loss = nn.MSELoss()
        self.val_mae = MeanAbsoluteError()
        self.val_rmse = MeanSquaredError(squared=False)

    def _units(self, z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return z * self.spec.target_std + offset[:, None]

    def outputs(self, batch: dict[str, Any]) -> torch.Tensor:
        # float32 before un-scaling: half precision would round the target's units.
        return self(**batch["inputs"]).float().reshape(len(batch["target"]), -1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        pred, y = self.outputs(batch), batch["target"]
        loss = self.loss(pred, y)
        self.check_loss(loss)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pred, y = self.outputs(batch), batch["target"]
        units_pred = self._units(pred, batch["offset"])
        units_y = self._units(y, batch["offset"])
        self.val_mae(units_pred, units_y)
        self.val_rmse(units_pred, units_y)
        self.log("val_loss", self.loss(pred, y), batch_size=len(y))
        self.log("val_mae", self.val_mae, batch_size=len(y))
        self.log("val_rmse", self.val_rmse, batch_size=len(y))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"preds": self._units(self.outputs(batch), batch["offset"]),
                "targets": self._units(batch["target"], batch["offset"])}

    @staticmethod
    def decode(outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    @staticmethod
    def evaluate(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, float]:
        from torchmetrics.functional import (
            mean_absolute_error,
            mean_squared_error,
            symmetric_mean_absolute_percentage_error,
        )

        mae = float(mean_absolute_error(preds, targets))
        return {"mae": mae, "rmse": float(mean_squared_error(preds, targets, squared=False)),
                "smape": 100.0 * float(symmetric_mean_absolute_percentage_error(preds, targets)),
                "mase": mae / spec.mase_scale}

    @staticmethod
    def trivial(train_targets: torch.Tensor, n: int, spec: DataSpec) -> tuple[str, torch.Tensor]:
        # The data module's seasonal-naive forecast is the baseline (it needs the history).
        raise NotImplementedError("forecasting takes its baseline from the data module")
