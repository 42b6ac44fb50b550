"""Images to generate more of: any image source (digits, Fashion-MNIST, a folder), the distance
that judges generators, and the served generator's codec.

A batch is ``{"inputs": {"seed", "label"}, "target": uint8 images}``: a generator draws one image
per seed (of its label's class when conditional), and the real images are what the drawn ones are
compared with. Validation and test hold at most ``EVAL_IMAGES`` images each (the rest train):
every epoch draws as many images as validation holds.

The distance (FID, Heusel et al. 2017, and KID, Binkowski et al. 2018, from torchmetrics) is
measured in the features of a small CNN trained once on the training images (their classes, or,
with one class, which of four rotations an image was turned by) and cached by data hash: the
Inception network of the usual FID cannot be downloaded here, and it was made for photographs,
not 8x8 digits. These FIDs compare models on one data set; they are not comparable with
published (Inception) FIDs.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from archselect.config.errors import DataError
from archselect.config.schema import DataConfig, SourceConfig
from archselect.data.base import SPLITS, DataSpec, ServingBundle, datamodules, splits_text
from archselect.data.image import ImageDataModule
from archselect.hashing import stable_hash
from archselect.serving import Batch, Codec

#: at most this many validation and test images (the distance draws as many each time)
EVAL_IMAGES = 1000
#: each split's seeds start here (image i of a split is drawn from seed start + i)
SEED_START = {"train": 0, "val": 10_000_000, "test": 20_000_000}
#: the feature network: its feature width, and how long it trains (epochs, seconds) at most
FEATURES = 32
FEATURE_EPOCHS = 15
FEATURE_SECONDS = 90.0
#: the most images one served request (row) may ask for
MAX_PER_ROW = 1000


class FeatureNet(nn.Module):
    """uint8 images ``[B, C, H, W]`` -> ``FEATURES`` features (what the distances compare),
    standardised over the training images (so a distance is in units of their spread); a
    linear head on them is what trains it."""

    mean: torch.Tensor
    std: torch.Tensor
    f_mean: torch.Tensor
    f_std: torch.Tensor

    def __init__(self, channels: int, outputs: int, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.num_features = FEATURES  # torchmetrics reads it instead of probing
        self.outputs = outputs
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, FEATURES))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURES, outputs))
        self.register_buffer("f_mean", torch.zeros(FEATURES))
        self.register_buffer("f_std", torch.ones(FEATURES))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x.float() / 255.0 - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.f_mean) / self.f_std


def train_feature_net(images: torch.Tensor, labels: np.ndarray, mean: list[float],
                      std: list[float], seed: int) -> tuple[FeatureNet, dict[str, Any]]:
    """A FeatureNet trained on ``images`` to tell their classes apart (or, with one class, the
    rotation each was turned by), for at most FEATURE_EPOCHS epochs or FEATURE_SECONDS; 10 % of
    the images held out say how well it learnt."""
    gen = torch.Generator().manual_seed(seed)
    rotations = len(set(labels.tolist())) < 2
    task = "rotation (0, 90, 180, 270 degrees)" if rotations else "class"
    outputs = 4 if rotations else int(labels.max()) + 1
    net = FeatureNet(int(images.shape[1]), outputs, mean, std)
    order = torch.randperm(len(images), generator=gen)
    held = order[: max(1, len(order) // 10)]
    fit = order[len(held):]
    y_all = torch.as_tensor(labels, dtype=torch.long)

    def batch(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images[rows]
        if not rotations:
            return x, y_all[rows]
        turn = torch.randint(0, 4, (len(rows),), generator=gen)
        return torch.stack([torch.rot90(img, int(k), dims=(1, 2))
                            for img, k in zip(x, turn, strict=True)]), turn

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.monotonic()
    epochs = 0
    for _ in range(FEATURE_EPOCHS):
        net.train()
        shuffled = fit[torch.randperm(len(fit), generator=gen)]
        for i in range(0, len(shuffled), 128):
            x, y = batch(shuffled[i : i + 128])
            loss = nn.functional.cross_entropy(net.head(net.raw(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs += 1
        if time.monotonic() - start > FEATURE_SECONDS:
            break
    net.eval()
    with torch.no_grad():
        x, y = batch(held)
        accuracy = float((net.head(net.raw(x)).argmax(1) == y).float().mean())
        found = torch.cat([net.raw(images[i : i + 512]) for i in range(0, len(images), 512)])
        net.f_mean.copy_(found.mean(0))
        net.f_std.copy_(found.std(0).clamp_min(1e-6))
    return net, {"task": task, "accuracy": round(accuracy, 4), "epochs": epochs,
                 "seconds": round(time.monotonic() - start, 1)}


@lru_cache(maxsize=4)
def load_feature_net(path: str) -> FeatureNet:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    net = FeatureNet(**saved["args"])
    net.load_state_dict(saved["state"])
    return net.eval()


def distances(fake: torch.Tensor, real: torch.Tensor, feature_net: str) -> dict[str, float]:
    """FID and KID (torchmetrics) of images ``fake`` to images ``real`` (uint8 or 0-255 floats,
    ``[N, C, H, W]``) in the features of the FeatureNet saved at ``feature_net``."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    net = load_feature_net(feature_net)
    fake_u8 = fake.float().round().clamp(0, 255).to(torch.uint8).cpu()
    real_u8 = real.float().round().clamp(0, 255).to(torch.uint8).cpu()
    n = min(len(fake_u8), len(real_u8))
    if n < 2:
        return {"fid": float("nan"), "kid": float("nan")}
    with warnings.catch_warnings():  # KID keeps every feature: FEATURES floats an image here
        warnings.filterwarnings("ignore", ".*will save all extracted features.*")
        fid = FrechetInceptionDistance(feature=net, normalize=False)
        kid = KernelInceptionDistance(feature=net, normalize=False,
                                      subset_size=max(2, min(100, n // 2)))
    for metric in (fid, kid):
        metric.set_dtype(torch.float64)
        for i in range(0, len(real_u8), 256):
            metric.update(real_u8[i : i + 256], real=True)
        for i in range(0, len(fake_u8), 256):
            metric.update(fake_u8[i : i + 256], real=False)
    with torch.random.fork_rng():  # KID's subsets are drawn from torch's generator: seeded
        torch.manual_seed(0)
        kid_mean, _ = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean)}


def image_grid(images: torch.Tensor, cols: int = 8) -> np.ndarray:
    """uint8 (or 0-255) images ``[N, C, H, W]`` as one ``[rows*H, cols*W, C]`` uint8 grid with a
    1-pixel gap."""
    imgs = images.float().round().clamp(0, 255).to(torch.uint8).cpu()
    n, c, h, w = imgs.shape
    cols = max(1, min(cols, n))
    rows = max(1, (n + cols - 1) // cols)
    grid = np.zeros((rows * (h + 1), cols * (w + 1), c), dtype=np.uint8)
    for i, img in enumerate(imgs):
        r, q = divmod(i, cols)
        grid[r * (h + 1): r * (h + 1) + h, q * (w + 1): q * (w + 1) + w] = \
            img.permute(1, 2, 0).numpy()
    return grid


@datamodules.register("image_generation", schema=DataConfig, sources="image")
class GenerationDataModule(ImageDataModule):
    """The images of any image source for generators (see the module docstring); one class is
    enough. ``conditional`` (``task.conditional``): the labels go in."""

    min_classes = 1
    target_kinds = ("images",)

    def __init__(self, options: DataConfig, source: SourceConfig, *, seed: int,
                 cache_dir: str | Path, target_kind: str = "images") -> None:
        super().__init__(options, source, seed=seed, cache_dir=cache_dir, target_kind=target_kind)
        self.conditional = False
        self.feature_path = ""

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        spec = super().prepare()
        moved = {}
        for s in ("val", "test"):
            extra = len(self.labels[s]) - EVAL_IMAGES
            moved[s] = max(extra, 0)
            if extra > 0:
                self.images["train"] = torch.cat([self.images["train"], self.images[s][EVAL_IMAGES:]])
                self.labels["train"] = np.concatenate([self.labels["train"], self.labels[s][EVAL_IMAGES:]])
                self.images[s], self.labels[s] = self.images[s][:EVAL_IMAGES], self.labels[s][:EVAL_IMAGES]
        if self.conditional and spec.num_classes < 2:
            raise DataError("task.conditional=true: the images hold one class, nothing to "
                            "condition on; fix: task.conditional=false")
        profile = {**spec.profile, "splits": {s: len(self.labels[s]) for s in SPLITS},
                   "conditional": self.conditional, "moved_to_train": moved}
        self.spec = replace(spec, kind="image_generation", profile=profile,
                            data_hash=stable_hash(spec.data_hash, self.conditional, EVAL_IMAGES))
        return self.spec

    def for_trial(self, option: str | None, *, batch_size: int, num_workers: int,
                  **data_opts: Any) -> DataSpec:
        spec = super().for_trial(option, batch_size=batch_size, num_workers=num_workers,
                                 **data_opts)
        return replace(spec, profile={**spec.profile, "feature_net": self.feature_net()})

    def feature_net(self) -> str:
        """The path of the distance's feature network, trained on the training images once per
        data hash (cached)."""
        if self.feature_path:
            return self.feature_path
        spec = self.prepare()
        folder = self.cache_dir / "generation"
        path = folder / f"{stable_hash(spec.data_hash, FEATURES, 'features-v2')[:20]}.pt"
        if not path.is_file():
            net, info = train_feature_net(self.images["train"], self.labels["train"], self.mean,
                                          self.std, self.seed)
            folder.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(".part")
            torch.save({"state": net.state_dict(), "info": info,
                        "args": {"channels": int(self.images["train"].shape[1]),
                                 "outputs": net.outputs,
                                 "mean": self.mean, "std": self.std}}, part)
            part.replace(path)
        self.feature_path = str(path)
        return self.feature_path

    def feature_info(self) -> dict[str, Any]:
        return dict(torch.load(self.feature_net(), map_location="cpu", weights_only=False)["info"])

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        return self.images[split]

    def split_dataset(self, split: str) -> Dataset[Any]:
        self.prepare()
        n = len(self.images[split])
        return TensorDataset(self.images[split], torch.as_tensor(self.labels[split]),
                             SEED_START[split] + torch.arange(n))

    def collate(self, train: bool) -> Any:
        return _collate

    def profile_lines(self) -> list[tuple[str, str]]:
        prof = self.prepare().profile
        lines = [line for line in super().profile_lines() if line[0] != "samples"]
        moved = sum(prof["moved_to_train"].values())
        lines.insert(1, ("samples", f"{prof['samples']} ({splits_text(prof['splits'])})"
                         + (f"; {moved} images beyond {EVAL_IMAGES} per held-out split moved "
                            "to train" if moved else "")))
        lines.append(("drawn", "images of a class (task.conditional=true)" if prof["conditional"]
                      else "images of any class (task.conditional=false)"))
        lines.append(("distance", "FID and KID in the features of a small CNN trained on these "
                      "training images: data-set-specific, not comparable with Inception FIDs"))
        return lines

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        from mlflow.types.schema import AnyType, ColSpec, Schema

        spec = self.prepare()
        codec = GenerationCodec(class_names=spec.class_names, shape=spec.input_shape,
                                conditional=self.conditional)
        example = pd.DataFrame({"n": [2], "seed": [0]})
        # Any: whole numbers arrive as int64, or as float64 beside a missing seed; the codec
        # checks them
        cols: list[Any] = [ColSpec(AnyType(), "n"), ColSpec(AnyType(), "seed", required=False)]
        if self.conditional:
            example["label"] = [spec.class_names[0]]
            cols.append(ColSpec(AnyType(), "label", required=False))
        first = self.images["train"][:2]
        output = codec.decode(first.float() / 255.0, codec.encode(example)[1], None)
        return ServingBundle(codec=codec, artifacts={}, input_example=example,
                             output_example=output, input_schema=Schema(cols))

    def extra_figures(self, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Generated test images beside their nearest training images (pixels, Euclidean): a
        generator that copies its training set shows it here; and the distance's scale, from real
        held-back images (validation to test) to uniform noise."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = preds[:8].float()
        train = self.images["train"].float()
        near = torch.cdist(shown.flatten(1), train.flatten(1)).argmin(1)
        fig, axes = plt.subplots(2, len(shown), figsize=(1.4 * len(shown), 3.2), squeeze=False)
        for j in range(len(shown)):
            for i, img in enumerate((shown[j], train[int(near[j])])):
                arr = img.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                axes[i, j].imshow(arr.squeeze(-1) if arr.shape[-1] == 1 else arr, cmap="gray",
                                  vmin=0, vmax=255)
                axes[i, j].axis("off")
        axes[0, 0].set_title("generated", fontsize=8, loc="left")
        axes[1, 0].set_title("nearest training image", fontsize=8, loc="left")
        fig.tight_layout()
        path = self.feature_net()
        floor = distances(self.images["val"], targets, path)
        noise = torch.randint(0, 256, tuple(targets.shape), generator=torch.Generator()
                              .manual_seed(self.seed))
        top = distances(noise, targets, path)
        model = distances(preds, targets, path)
        info = self.feature_info()
        table = ("The distance's scale on the test images (FID and KID in the features of a "
                 f"small CNN trained on the training images' {info['task']}, held-out accuracy "
                 f"{info['accuracy']:.3f}; not Inception FID)\n\n| images | FID | KID |\n|---|---|---|\n"
                 f"| real held-back (validation) images | {floor['fid']:.3f} | {floor['kid']:.4f} |\n"
                 f"| the final model | {model['fid']:.3f} | {model['kid']:.4f} |\n"
                 f"| uniform noise | {top['fid']:.3f} | {top['kid']:.4f} |\n")
        return {"plots/nearest_training.png": fig, "tables/fid_scale.md": table}


def _collate(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    return {"inputs": {"seed": torch.stack([r[2] for r in rows]),
                       "label": torch.stack([r[1] for r in rows])},
            "target": torch.stack([r[0] for r in rows])}


class GenerationCodec(Codec):
    """The served generator's side: rows of ``n`` (images wanted), optional ``seed`` (image k of
    a row is drawn from seed + k; default 1000 x the row's index) and, for a conditional model,
    ``label`` (a class name; default the first class); one answer row per image: ``request``
    (the row it answers), ``seed``, ``label`` (conditional) and ``image`` (uint8, H x W for grey,
    H x W x C for colour)."""

    def __init__(self, *, class_names: list[str], shape: list[int], conditional: bool) -> None:
        self.class_names = class_names
        self.shape = shape
        self.conditional = conditional

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        if "n" not in frame.columns:
            raise ValueError(f"the input has no 'n' column (how many images a row asks for); it "
                             f"has: {', '.join(map(str, frame.columns))}")
        if "label" in frame.columns and not self.conditional:
            raise ValueError("this generator draws images of any class (trained with "
                             "task.conditional=false): drop the 'label' column, or train with "
                             "task.conditional=true")
        request, seeds, labels = [], [], []
        for r, row in enumerate(frame.to_dict("records")):
            n = _whole(row.get("n"), "n", r)
            if not 0 <= n <= MAX_PER_ROW:
                raise ValueError(f"row {r}: n must be 0 to {MAX_PER_ROW}, but got {n}")
            given = row.get("seed")
            start = 1000 * r if given is None or pd.isna(given) else _whole(given, "seed", r)
            label = 0
            name = row.get("label")
            if self.conditional and name is not None and not pd.isna(name):
                if str(name) not in self.class_names:
                    raise ValueError(f"row {r}: unknown label {name!r}; the classes are: "
                                     f"{', '.join(self.class_names)}")
                label = self.class_names.index(str(name))
            request += [r] * n
            seeds += [start + k for k in range(n)]
            labels += [label] * n
        seed_t = torch.tensor(seeds, dtype=torch.long)
        label_t = torch.tensor(labels, dtype=torch.long)
        batches = [{"seed": seed_t[i : i + 64], "label": label_t[i : i + 64]}
                   for i in range(0, len(seeds), 64)]
        return batches, (request, seeds, labels)

    def decode(self, outputs: torch.Tensor, keys: Any, params: dict[str, Any] | None
               ) -> pd.DataFrame:
        request, seeds, labels = keys if keys is not None else ([], [], [])
        images = []
        if len(outputs):
            arr = (outputs.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
            for img in arr.permute(0, 2, 3, 1).cpu().numpy():
                images.append(img[..., 0] if img.shape[-1] == 1 else img)
        out: dict[str, Any] = {"request": request, "seed": seeds}
        if self.conditional:
            out["label"] = [self.class_names[i] for i in labels]
        out["image"] = [img.tolist() for img in images]
        return pd.DataFrame(out)


def _whole(value: Any, column: str, row: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number != int(number):
        raise ValueError(f"row {row}: {column} must be a whole number, but got {value!r}")
    return int(number)
