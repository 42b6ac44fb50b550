"""The classification family: cross-entropy, accuracy and macro-F1 from torchmetrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from archselect.data.base import DataSpec
from archselect.tasks.base import FamilyModule, families


def class_weights(kind: str, spec: DataSpec) -> torch.Tensor:
    """``optim.class_weight`` as a weight per class: ``balanced`` weighs each class by the
    inverse of its frequency (n / (k * n_c), the data profile's counts); ``none``: an empty
    tensor (no weights)."""
    if kind == "none":
        return torch.zeros(0)
    if kind != "balanced":
        raise ValueError(f"optim.class_weight must be none or balanced, not {kind!r}")
    counts = spec.profile.get("balance", {}).get("counts", {})
    n = torch.tensor([float(counts.get(c, 0)) for c in spec.class_names]).clamp_min(1.0)
    return n.sum() / (len(n) * n)


@families.register("classification")
class ClassificationModule(FamilyModule):
    """Any registered architecture trained as a classifier (see FamilyModule for the args)."""

    test_metric = "macro_f1"
    test_direction = "maximize"
    trains_blocks = True

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], optim: dict[str, Any],
                 spec: dict[str, Any], max_epochs: int,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(arch, arch_kwargs, optim, spec, max_epochs, data)
        n = self.spec.num_classes
        self.loss = nn.CrossEntropyLoss()  # validation: unweighted, comparable across trials
        weights = class_weights(str(optim.get("class_weight", "none")), self.spec)
        self.register_buffer("class_weight", weights, persistent=False)
        self.label_smoothing = float(optim.get("label_smoothing", 0.0))
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=n, average="macro")
        # Training accuracy is a mean over rows (``add_means``): a torchmetrics update per step
        # costs more than a small model's step.
        self.epoch_metrics = {"val_acc": self.val_acc, "val_f1": self.val_f1}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if isinstance(batch, list):  # a block of batches (FamilyModule.train_block)
            self.train_block(batch)
            return None
        logits, y = self.outputs(batch), batch["target"]
        # An architecture may bring its own criterion (the Perceptron does).
        held: torch.Tensor = self.class_weight  # type: ignore[assignment]
        weights = held if held.numel() else None
        own: Any = getattr(self.model, "training_loss", None)
        loss = own(logits, y, weights) if own is not None else None
        if loss is None:
            loss = nn.functional.cross_entropy(logits, y, weight=weights,
                                               label_smoothing=self.label_smoothing)
        self.check_loss(loss)
        hits = (logits.detach().argmax(-1) == y).float().mean()
        self.add_means(len(y), train_loss=loss, train_acc=hits)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, y = self.outputs(batch), batch["target"]
        self.val_acc.update(logits, y)
        self.val_f1.update(logits, y)
        self.add_means(len(y), val_loss=self.loss(logits, y))

    @staticmethod
    def decode(outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(-1)

    @staticmethod
    def evaluate(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, float]:
        from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

        k = spec.num_classes
        return {"accuracy": float(multiclass_accuracy(preds, targets, k, average="micro")),
                "macro_f1": float(multiclass_f1_score(preds, targets, k, average="macro"))}

    @staticmethod
    def scores(outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.float(), -1)

    @staticmethod
    def monitor_value(scores: torch.Tensor, targets: torch.Tensor, spec: DataSpec,
                      monitor: str) -> float:
        from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

        k = spec.num_classes
        if monitor == "val_loss":
            return float(nn.functional.nll_loss(torch.log(scores.clamp_min(1e-12)), targets))
        if monitor == "val_acc":
            return float(multiclass_accuracy(scores, targets, k, average="micro"))
        if monitor == "val_f1":
            return float(multiclass_f1_score(scores, targets, k, average="macro"))
        raise ValueError(f"task.monitor: {monitor!r} is not a classification metric "
                         "(val_loss, val_acc, val_f1)")

    @staticmethod
    def combine_outputs(outputs: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
        # The weighted mean of the members' probabilities, as log-probabilities (the codec's
        # softmax gives the probabilities back).
        probs = sum((w * torch.softmax(o.float(), -1) for w, o in zip(weights, outputs,
                                                                       strict=True)),
                    torch.zeros_like(outputs[0], dtype=torch.float32))
        return torch.log(probs.clamp_min(1e-12))

    @staticmethod
    def trivial(train_targets: torch.Tensor, n: int, spec: DataSpec) -> tuple[str, torch.Tensor]:
        majority = int(torch.bincount(train_targets, minlength=spec.num_classes).argmax())
        return "majority class", torch.full((n,), majority, dtype=torch.long)

    @staticmethod
    def figures(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        names = spec.class_names
        m = multiclass_confusion_matrix(preds, targets, spec.num_classes).numpy()
        size = min(0.6 * len(names) + 3, 14)
        fig, ax = plt.subplots(figsize=(size, size - 0.5))
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black")
        ax.set_title("Confusion matrix (test split, best model)")
        fig.tight_layout()
        return {"plots/confusion_matrix.png": fig}
