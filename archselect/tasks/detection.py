"""The detection family: each architecture's own detection loss; mean average precision from
torchmetrics (COCO's mAP@[.5:.95], the monitored metric, mAP@.5 and mAP@.75).

A detector's outputs are ``[B, K, 6]`` rows ``[x_min, y_min, x_max, y_max, score, class]`` (K
detections at most, padded with class -1); targets are ``[B, M, 5]`` rows ``[x_min, y_min,
x_max, y_max, class]`` padded with -1. Both are fixed-size tensors, so predictions of a split
concatenate like any other family's.
"""

from __future__ import annotations

from typing import Any

import torch

from archselect.data.base import DataSpec
from archselect.tasks.base import FamilyModule, families

#: the most detections a detector returns per image
MAX_DETECTIONS = 100


def target_dicts(targets: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Padded ``[B, M, 5]`` target rows -> one ``{"boxes", "labels"}`` per image."""
    out = []
    for t in targets:
        keep = t[:, 4] >= 0
        out.append({"boxes": t[keep, :4].float(), "labels": t[keep, 4].long()})
    return out


def prediction_dicts(preds: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Padded ``[B, K, 6]`` detections -> one ``{"boxes", "scores", "labels"}`` per image."""
    out = []
    for p in preds:
        keep = p[:, 5] >= 0
        out.append({"boxes": p[keep, :4].float(), "scores": p[keep, 4].float(),
                    "labels": p[keep, 5].long()})
    return out


def pad_detections(found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   k: int = MAX_DETECTIONS) -> torch.Tensor:
    """(boxes [n, 4], scores [n], classes [n]) per image -> ``[B, k, 6]``, the best k by score,
    padded with zeros and class -1."""
    device = found[0][0].device if found else torch.device("cpu")
    out = torch.zeros(len(found), k, 6, device=device)
    out[..., 5] = -1.0
    for i, (boxes, scores, labels) in enumerate(found):
        order = scores.argsort(descending=True)[:k]
        n = len(order)
        out[i, :n, :4] = boxes[order].float()
        out[i, :n, 4] = scores[order].float()
        out[i, :n, 5] = labels[order].float()
    return out


def mean_average_precision(preds: torch.Tensor, targets: torch.Tensor, *,
                           per_class: bool = False) -> dict[str, Any]:
    """torchmetrics' COCO mean average precision of padded detections against padded targets."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=per_class)
    metric.update(prediction_dicts(preds.cpu()), target_dicts(targets.cpu()))
    return dict(metric.compute())


def _positive(value: Any) -> float:
    """torchmetrics reports -1 where there is nothing to measure (no boxes): 0 here."""
    return max(float(value), 0.0)


@families.register("detection")
class DetectionModule(FamilyModule):
    """Any registered detector (see ``archselect.architectures.detection`` for the contract),
    trained on its own loss and judged by mean average precision (see FamilyModule for the
    args)."""

    target_kind = "boxes"
    test_metric = "map"
    test_direction = "maximize"
    #: detections do not average across models: the final model is one trial
    ensembles = False

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], optim: dict[str, Any],
                 spec: dict[str, Any], max_epochs: int,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(arch, arch_kwargs, optim, spec, max_epochs, data)
        from torchmetrics.detection import MeanAveragePrecision

        self.val_map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, targets = batch["inputs"]["x"], target_dicts(batch["target"])
        losses: dict[str, torch.Tensor] = self.model.detection_loss(x, targets)  # type: ignore[operator]
        loss = torch.stack([v for v in losses.values()]).sum()
        self.check_loss(loss)
        n = len(targets)
        self.add_means(n, train_loss=loss, **{f"train_{k}": v for k, v in losses.items()})
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self(**batch["inputs"])
        self.val_map.update(prediction_dicts(out.float()), target_dicts(batch["target"]))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        found = self.val_map.compute()
        self.log("val_map", _positive(found["map"]))
        self.log("val_map_50", _positive(found["map_50"]))
        self.val_map.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self(**batch["inputs"]).float()
        return {"preds": out, "targets": batch["target"], "scores": out}

    @staticmethod
    def decode(outputs: torch.Tensor) -> torch.Tensor:
        return outputs

    @staticmethod
    def evaluate(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, float]:
        found = mean_average_precision(preds, targets)
        return {k: _positive(found[k]) for k in ("map", "map_50", "map_75", "mar_100")}

    @staticmethod
    def monitor_value(scores: torch.Tensor, targets: torch.Tensor, spec: DataSpec,
                      monitor: str) -> float:
        if monitor not in ("val_map", "val_map_50"):
            raise ValueError(f"task.monitor: {monitor!r} is not a detection metric "
                             "(val_map, val_map_50)")
        found = mean_average_precision(scores, targets)
        return _positive(found["map" if monitor == "val_map" else "map_50"])

    @staticmethod
    def trivial(train_targets: torch.Tensor, n: int, spec: DataSpec) -> tuple[str, torch.Tensor]:
        return "no detections", pad_detections([(torch.zeros(0, 4), torch.zeros(0),
                                                 torch.zeros(0))] * n)

    @staticmethod
    def figures(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        found = mean_average_precision(preds, targets, per_class=True)
        per_class = found["map_per_class"].reshape(-1).tolist()
        present = found["classes"].reshape(-1).tolist()
        ap = {spec.class_names[int(c)]: max(float(v), 0.0)
              for c, v in zip(present, per_class, strict=False) if 0 <= int(c) < spec.num_classes}
        if not ap:
            return {}
        fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(ap) + 2), 3.5))
        ax.bar(list(ap), list(ap.values()), color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_ylabel("AP@[.5:.95]")
        ax.set_title(f"Average precision per class (test split; mAP {_positive(found['map']):.3f})")
        ax.tick_params(axis="x", rotation=45)
        fig.tight_layout()
        return {"plots/ap_per_class.png": fig}
