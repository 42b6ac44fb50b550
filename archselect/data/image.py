"""Image classification data: scikit-learn digits, Debian's Fashion-MNIST, a folder of images."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from archselect.config.errors import ConfigError, DataError
from archselect.data.base import (
    BaseDataModule,
    DataSpec,
    ServingBundle,
    class_balance,
    classes_line,
    data_sources,
    stable_hash,
    stratified_split,
)

SPLITS = ("train", "val", "test")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@data_sources.register("digits", kind="image")
def load_digits(cfg: dict[str, Any]) -> tuple[np.ndarray, list[str], list[str]]:
    """scikit-learn's 8x8 handwritten digits (1,797 images), scaled to uint8."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)[:, None]
    return images, [str(int(t)) for t in bunch.target], []


@data_sources.register("fashion_mnist", kind="image")
def load_fashion(cfg: dict[str, Any]) -> tuple[np.ndarray, list[str], list[str]]:
    """Fashion-MNIST (70,000 28x28 images) from Debian's dataset-fashion-mnist package."""
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if not all((FASHION_DIR / f).is_file() for f in files):
        raise DataError(
            f"data=fashion_mnist: the files are not in {FASHION_DIR}; fix: apt-get install "
            "dataset-fashion-mnist (the README's set-up does this where it runs as root)")
    images = np.concatenate([_idx(FASHION_DIR / files[0]), _idx(FASHION_DIR / files[2])])
    labels = np.concatenate([_idx(FASHION_DIR / files[1]), _idx(FASHION_DIR / files[3])])
    return images[:, None], [FASHION_CLASSES[int(i)] for i in labels], []


@data_sources.register("image_folder", kind="image")
def load_folder(cfg: dict[str, Any]) -> tuple[np.ndarray, list[str], list[str]]:
    """A folder with one sub-folder of images per class; every image resized to image_size."""
    from PIL import Image, UnidentifiedImageError

    raw = cfg.get("path")
    if raw in (None, "", "???"):
        raise ConfigError("data.path", "no folder given", fix="add data.path=/path/to/folder")
    root = Path(str(raw)).expanduser()
    if not root.is_dir():
        raise ConfigError("data.path", "folder not found", given=str(raw),
                          fix="give a folder with one sub-folder of images per class")
    size = int(cfg["image_size"])
    mode = {1: "L", 3: "RGB"}.get(int(cfg["channels"]))
    if mode is None:
        raise ConfigError("data.channels", "must be 1 or 3", given=cfg["channels"])
    images, labels, bad = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    arr = np.asarray(img.convert(mode).resize((size, size)), dtype=np.uint8)
            except (OSError, UnidentifiedImageError, ValueError):
                bad.append(str(path))  # reported in the profile, never a crash mid-training
                continue
            images.append(arr if arr.ndim == 3 else arr[..., None])
            labels.append(folder.name)
    if not images:
        raise DataError(f"data.path: no readable images in class sub-folders of {root}"
                        + (f" ({len(bad)} unreadable, e.g. {bad[0]})" if bad else ""))
    return np.stack(images).transpose(0, 3, 1, 2).copy(), labels, bad


class ImageDataModule(BaseDataModule):
    """Images as uint8 [N, C, H, W]; normalised with training-split statistics; optional
    torchvision v2 augmentation (random affine, searchable strength) on training batches."""

    def __init__(self, cfg: dict[str, Any], *, seed: int, cache_dir: str | Path,
                 target_kind: str = "classes") -> None:
        super().__init__()
        if target_kind != "classes":
            raise ConfigError("task", "image data supports classification only", given=target_kind)
        self.cfg = cfg
        self.seed = seed
        self.spec: DataSpec | None = None
        self.images: dict[str, torch.Tensor] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.mean: list[float] = []
        self.std: list[float] = []
        self.batch_size = 64
        self.num_workers = 0
        self.augment = 0.0

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        images, label_str, bad = data_sources.get(str(self.cfg["source"]))(self.cfg)
        names = sorted(set(label_str), key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
        if len(names) < 2:
            raise DataError(f"data: only one class ({names[0]!r}); classification needs at least 2")
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[s] for s in label_str], dtype=np.int64)
        n = self.cfg.get("max_samples")
        if n is not None and int(n) < len(labels):
            from sklearn.model_selection import train_test_split

            strata = labels if np.bincount(labels).min() >= 2 else None
            keep, _ = train_test_split(np.arange(len(labels)), train_size=int(n), stratify=strata,
                                       random_state=self.seed)
            keep = np.sort(keep)
            images, labels = images[keep], labels[keep]
        split = stratified_split(labels, val_fraction=float(self.cfg["val_fraction"]),
                                 test_fraction=float(self.cfg["test_fraction"]), seed=self.seed)
        for s in SPLITS:
            self.images[s] = torch.as_tensor(images[split[s]])
            self.labels[s] = labels[split[s]]
        train = self.images["train"].float() / 255.0
        self.mean = [round(float(v), 5) for v in train.mean(dim=(0, 2, 3))]
        self.std = [round(float(v) or 1.0, 5) for v in train.std(dim=(0, 2, 3))]
        c, h, w = (int(d) for d in images.shape[1:])
        profile = {
            "source": str(self.cfg["name"]), "samples": len(labels),
            "splits": {s: len(self.labels[s]) for s in SPLITS},
            "image_shape": [c, h, w], "classes": len(names),
            "balance": class_balance(labels, names), "unreadable": bad[:20],
            "unreadable_count": len(bad), "mean": self.mean, "std": self.std,
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
        unknown = sorted(set(data_opts) - {"augment"})
        if unknown:
            raise ConfigError("arch.<name>.data", "unknown image data setting", given=unknown,
                              allowed=["augment"])
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = float(data_opts.get("augment", 0.0))
        if not 0.0 <= self.augment <= 0.5:
            raise ConfigError("arch.<name>.data.augment", "must be between 0 (off) and 0.5",
                              given=self.augment)
        return self.prepare()

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        return torch.as_tensor(self.labels[split])

    def profile_lines(self) -> list[tuple[str, str]]:
        prof = self.prepare().profile
        c, h, w = prof["image_shape"]
        lines = [
            ("source", str(prof["source"])),
            ("samples", f"{prof['samples']} (train {prof['splits']['train']}, val "
             f"{prof['splits']['val']}, test {prof['splits']['test']})"),
            ("images", f"{h}x{w}, {c} channel(s); train mean {prof['mean']}, std {prof['std']}"),
            classes_line(prof),
        ]
        if prof["unreadable_count"]:
            lines.append(("unreadable", f"{prof['unreadable_count']} skipped, e.g. "
                          + ", ".join(prof["unreadable"][:3])))
        return lines

    def serving_bundle(self, checkpoint: str, family: str, folder: Path) -> ServingBundle:
        from archselect.serving import ImageModel

        spec = self.prepare()
        meta = folder / "meta.json"
        meta.write_text(json.dumps({"family": family, "class_names": spec.class_names,
                                    "shape": spec.input_shape, "mean": self.mean, "std": self.std}))
        example = pd.DataFrame({"image": [self.images["test"][i].permute(1, 2, 0).squeeze(-1)
                                          .numpy().astype(np.uint8).tolist() for i in range(2)]})
        output = pd.DataFrame({"label": [spec.class_names[0]] * 2, "probability": [1.0] * 2})
        from mlflow.types.schema import AnyType, ColSpec, Schema

        # Any: H x W or H x W x C arrays of any size and channel count are all valid input.
        return ServingBundle(python_model=ImageModel(),
                             artifacts={"checkpoint": checkpoint, "meta": str(meta)},
                             input_example=example, output_example=output,
                             input_schema=Schema([ColSpec(AnyType(), "image")]))

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

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        self.prepare()
        data = TensorDataset(self.images[split], torch.as_tensor(self.labels[split]))
        augment = self._augmenter() if (split == "train" and self.augment > 0) else None
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(self.seed),
                          collate_fn=_Collate(self.mean, self.std, augment),
                          num_workers=self.num_workers)


class _Collate:
    """uint8 images -> (augmented) normalised float batches."""

    def __init__(self, mean: list[float], std: list[float], augment: Any) -> None:
        self.mean = torch.tensor(mean)[None, :, None, None]
        self.std = torch.tensor(std)[None, :, None, None]
        self.augment = augment

    def __call__(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        x = torch.stack([r[0] for r in rows])
        if self.augment is not None:
            x = torch.stack([self.augment(img) for img in x])
        x = (x.float() / 255.0 - self.mean) / self.std
        return {"inputs": {"x": x}, "target": torch.stack([r[1] for r in rows])}
