"""The forecasting family: a window of history -> the next ``horizon`` values.

Loss: MSE on scaled values. Metrics in the target's units: MAE, RMSE, sMAPE (percent); MASE on
the classic scale (the in-sample seasonal-naive error of the training span, as forecasting
benchmarks report it); and rel_mae, the MAE over the seasonal-naive forecast's MAE on the same
test windows (rel_mae < 1 beats repeating the last season there).
"""

from __future__ import annotations

from typing import Any

import torch

from archselect.data.base import DataSpec
from archselect.tasks.base import families
from archselect.tasks.regression import RegressionModule


@families.register("forecasting")
class ForecastingModule(RegressionModule):
    """Any registered architecture with ``horizon`` outputs, trained to forecast.

    Batches carry ``offset`` [B]: the level each window was scaled around (its last value, or the
    training mean); ``units = scaled * spec.target_std + offset``.
    """

    target_kind = "forecast"
    test_metric = "mase"
    test_direction = "minimize"

    # The loss, the validation metrics and the training step are the regression family's.

    def _window_units(self, z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return z * self.spec.target_std + offset[:, None]

    def outputs(self, batch: dict[str, Any]) -> torch.Tensor:
        # float32 before un-scaling: half precision would round the target's units.
        return self(**batch["inputs"]).float().reshape(len(batch["target"]), -1)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pred, y = self.outputs(batch), batch["target"]
        units_pred = self._window_units(pred, batch["offset"])
        units_y = self._window_units(y, batch["offset"])
        self.val_mae.update(units_pred, units_y)
        self.val_rmse.update(units_pred, units_y)
        self.add_means(len(y), val_loss=self.loss(pred, y))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        units = self._window_units(self.outputs(batch), batch["offset"])
        return {"preds": units, "targets": self._window_units(batch["target"], batch["offset"]),
                "scores": units}

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
                "mase": mae / spec.mase_scale, "rel_mae": mae / spec.naive_mae}

    @staticmethod
    def trivial(train_targets: torch.Tensor, n: int, spec: DataSpec) -> tuple[str, torch.Tensor]:
        # The data module's seasonal-naive forecast is the baseline (it needs the history).
        raise NotImplementedError("forecasting takes its baseline from the data module")

    @staticmethod
    def figures(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, Any]:
        return {}  # the data module draws the forecast over the test span
