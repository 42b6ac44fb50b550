"""Image classification data from any image source (scikit-learn digits, Debian's Fashion-MNIST,
a folder of images), with searchable augmentation; and the served model's codec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from archselect.config.errors import DataError
from archselect.config.schema import DataConfig, SourceConfig
from archselect.data.base import (
    SPLITS,
    BaseDataModule,
    DataSpec,
    ReadyRows,
    ServingBundle,
    augment_setting,
    class_balance,
    classes_line,
    datamodules,
    encode_labels,
    splits_text,
    stacked,
    stratified_split,
)
from archselect.hashing import stable_hash
from archselect.serving import Batch, Codec

#: the column of images the served model reads (else the first column)
IMAGE_COLUMN = "image"


@datamodules.register("image", schema=DataConfig)
class ImageDataModule(BaseDataModule):
    """Images as uint8 [N, C, H, W]; normalised with training-split statistics; optional
    torchvision v2 augmentation (random affine, searchable strength) on training batches."""

    cfg: DataConfig
    #: classes the data must hold (a classifier needs two; a generator none)
    min_classes = 2

    def __init__(self, options: DataConfig, source: SourceConfig, *, seed: int,
                 cache_dir: str | Path, target_kind: str = "classes") -> None:
        super().__init__(options, source, seed=seed, cache_dir=cache_dir, target_kind=target_kind)
        self.images: dict[str, torch.Tensor] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.mean: list[float] = []
        self.std: list[float] = []
        self.augment = 0.0

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        # unreadable files and (from a folder) entries skipped as not images, both profiled
        images, label_str, bad, *rest = self.load_frame()
        skipped: list[str] = rest[0] if rest else []
        names = sorted(set(label_str), key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
        if len(names) < self.min_classes:
            raise DataError(f"data: only one class ({names[0]!r}); classification needs at least 2")
        labels = encode_labels(label_str, names)
        n = self.cfg.max_samples
        if n is not None and n < len(labels):
            from sklearn.model_selection import train_test_split

            strata = labels if np.bincount(labels).min() >= 2 else None
            keep, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=strata,
                                       random_state=self.seed)
            keep = np.sort(keep)
            images, labels = images[keep], labels[keep]
        split = stratified_split(labels, val_fraction=self.cfg.val_fraction,
                                 test_fraction=self.cfg.test_fraction, seed=self.seed)
        for s in SPLITS:
            self.images[s] = torch.as_tensor(images[split[s]])
            self.labels[s] = labels[split[s]]
        train = self.images["train"].float() / 255.0
        self.mean = [round(float(v), 5) for v in train.mean(dim=(0, 2, 3))]
        self.std = [round(float(v) or 1.0, 5) for v in train.std(dim=(0, 2, 3))]
        c, h, w = (int(d) for d in images.shape[1:])
        profile = {
            "source": self.cfg.name, "samples": len(labels),
            "splits": {s: len(self.labels[s]) for s in SPLITS},
            "image_shape": [c, h, w], "classes": len(names),
            "balance": class_balance(labels, names), "unreadable": bad[:20],
            "unreadable_count": len(bad), "not_images": skipped[:20],
            "not_images_count": len(skipped), "mean": self.mean, "std": self.std,
        }
        self.spec = DataSpec(
            kind="image", num_classes=len(names), class_names=names, n_features=c * h * w,
            input_shape=[c, h, w],
            data_hash=stable_hash(stable_hash(images.tobytes()), labels.tolist(),
                                  {k: v.tolist() for k, v in split.items()}),
            profile=profile,
        )
        return self.spec

    def for_trial(self, option: str | None, *, batch_size: int, num_workers: int,
                  **data_opts: Any) -> DataSpec:
        self.augment = augment_setting(data_opts, "image")
        self.batch_size = batch_size
        self.num_workers = num_workers
        return self.prepare()

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        return torch.as_tensor(self.labels[split])

    def profile_lines(self) -> list[tuple[str, str]]:
        prof = self.prepare().profile
        c, h, w = prof["image_shape"]
        lines = [
            ("source", str(prof["source"])),
            ("samples", f"{prof['samples']} ({splits_text(prof['splits'])})"),
            ("images", f"{h}x{w}, {c} channel(s); train mean {prof['mean']}, std {prof['std']}"),
            classes_line(prof),
        ]
        if prof["unreadable_count"]:
            lines.append(("unreadable", f"{prof['unreadable_count']} skipped, e.g. "
                          + ", ".join(prof["unreadable"][:3])))
        if prof.get("not_images_count"):
            lines.append(("not images", f"{prof['not_images_count']} skipped (not image "
                          "files), e.g. " + ", ".join(prof["not_images"][:3])))
        return lines

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        from mlflow.types.schema import AnyType, ColSpec, Schema

        spec = self.prepare()
        codec = ImageCodec(class_names=spec.class_names, shape=spec.input_shape, mean=self.mean,
                           std=self.std)
        example = pd.DataFrame({IMAGE_COLUMN: [self.images["test"][i].permute(1, 2, 0).squeeze(-1)
                                               .numpy().astype(np.uint8).tolist()
                                               for i in range(2)]})
        output = pd.DataFrame({"label": [spec.class_names[0]] * 2, "probability": [1.0] * 2})
        # Any: H x W or H x W x C arrays of any size and channel count are all valid input.
        return ServingBundle(codec=codec, artifacts={}, input_example=example,
                             output_example=output,
                             input_schema=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]))

    def extra_figures(self, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """A grid of misclassified test images with their true and predicted labels."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        wrong = torch.nonzero(preds != targets).flatten()[:36].tolist()
        if not wrong:
            return {}
        names = self.prepare().class_names
        cols = 6
        rows = (len(wrong) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.0), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i in zip(axes.flat, wrong, strict=False):
            img = self.images["test"][i].permute(1, 2, 0).numpy()
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
            ax.set_title(f"{names[int(targets[i])]}\n-> {names[int(preds[i])]}", fontsize=7)
        fig.suptitle("Misclassified test images (true -> predicted)")
        fig.tight_layout()
        return {"plots/misclassified.png": fig}

    def _augmenter(self) -> Any:
        from torchvision.transforms import v2

        s = self.augment
        return v2.RandomAffine(degrees=30 * s, translate=(s, s), scale=(1 - s, 1 + s))

    def split_dataset(self, split: str) -> Dataset[Any]:
        self.prepare()
        return ReadyRows(self.images[split], torch.as_tensor(self.labels[split]))

    def collate(self, train: bool) -> Any:
        augment = self._augmenter() if (train and self.augment > 0) else None
        return _Collate(self.mean, self.std, augment)


class _Collate:
    """uint8 images -> (augmented) normalised float batches."""

    def __init__(self, mean: list[float], std: list[float], augment: Any) -> None:
        self.mean = torch.tensor(mean)[None, :, None, None]
        self.std = torch.tensor(std)[None, :, None, None]
        self.augment = augment

    def __call__(self, rows: Any) -> dict[str, Any]:
        x, target = stacked(rows)
        if self.augment is not None:
            x = torch.stack([self.augment(img) for img in x])
        x = (x.float() / 255.0 - self.mean) / self.std
        return {"inputs": {"x": x}, "target": target}


class ImageCodec(Codec):
    """The served image classifier's side: a column of uint8 arrays (H x W or H x W x C, nested
    lists or arrays, any size) in, converted, resized and normalised as in training."""

    def __init__(self, *, class_names: list[str], shape: list[int], mean: list[float],
                 std: list[float]) -> None:
        self.class_names = class_names
        self.shape = shape
        self.mean = mean
        self.std = std

    def _tensor(self, image: Any) -> torch.Tensor:
        from PIL import Image

        c, h, w = self.shape
        arr = np.asarray(image, dtype=np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        # The training path: PIL converts (grey / RGB, alpha dropped) and resizes.
        img = Image.fromarray(arr).convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h))
        out = np.array(img, dtype=np.uint8)  # a writable copy for torch
        t = torch.as_tensor(out[..., None] if out.ndim == 2 else out).permute(2, 0, 1)
        mean = torch.tensor(self.mean)[:, None, None]
        std = torch.tensor(self.std)[:, None, None]
        return (t.float() / 255.0 - mean) / std

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        column = IMAGE_COLUMN if IMAGE_COLUMN in frame.columns else frame.columns[0]
        return [{"x": torch.stack([self._tensor(img) for img in frame[column].tolist()])}], None
