"""What every data source hands on: a DataSpec, splits, hashing and profile helpers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from archselect.config.errors import ConfigError, DataError
from archselect.registry import Registry


@dataclass
class DataSpec:
    """What builders and task families need to know about the data, plus its profile.

    Attributes:
        kind: the input kind (``"text"``, ``"tabular"``, ``"image"``, ``"series"``, ...).
        num_classes: number of target classes (classification).
        class_names: the label of each class index.
        vocab_size: size of the trained tokenizer's vocabulary (text).
        pad_id: padding token id (text).
        max_len: tokens kept per text (text).
        n_features: width of the encoded feature vector (tabular).
        target_mean: training-split mean of a continuous target (regression).
        target_std: training-split standard deviation of a continuous target (regression).
        horizon: steps forecast at once (forecasting).
        season_length: the season in steps, for the seasonal-naive baseline (forecasting).
        mase_scale: the seasonal-naive forecast's MAE on the test windows (forecasting: MASE's
            denominator, so MASE < 1 beats seasonal naive).
        data_hash: hash of the rows, the split and the preprocessing options.
        profile: the data profile (sizes, balance, lengths, vocabulary, ...).
    """

    kind: str
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    vocab_size: int = 0
    pad_id: int = 0
    max_len: int = 0
    n_features: int = 0
    input_shape: list[int] = field(default_factory=list)
    target_mean: float = 0.0
    target_std: float = 1.0
    horizon: int = 0
    season_length: int = 1
    mase_scale: float = 1.0
    data_hash: str = ""
    profile: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (for ``save_hyperparameters`` and reports)."""
        return asdict(self)


data_sources: Registry[Any] = Registry("data source", "data.source")


@dataclass
class ServingBundle:
    """What MLflow needs to log the best model as a pyfunc that takes raw inputs."""

    python_model: Any
    artifacts: dict[str, str]
    input_example: Any
    output_example: Any
    input_schema: Any = None  # an MLflow Schema where inferring one from the example is too strict


class BaseDataModule(pl.LightningDataModule):
    """The contract every data kind fulfils; run, search and tracking use nothing else.

    Batches are ``{"inputs": {name: tensor}, "target": tensor}``.
    """

    def prepare(self) -> DataSpec:
        """Load, check, split and profile the data (no store is touched)."""
        raise NotImplementedError

    batch_size = 64
    num_workers = 0

    def for_trial(self, option: str | None, *, batch_size: int, num_workers: int,
                  **data_opts: Any) -> DataSpec:
        """Point the loaders at what one candidate reads; return the spec its builder sees.

        ``option`` is the candidate's input option (e.g. a pretrained tokenizer), or None;
        ``data_opts`` are the trial's data settings (e.g. augmentation strength). By default a
        kind reads the same inputs for every candidate and takes no data settings.
        """
        spec = self.prepare()
        if data_opts:
            raise ConfigError("arch.<name>.data", f"{spec.kind} data takes no trial data settings",
                              given=sorted(data_opts))
        self.batch_size, self.num_workers = batch_size, num_workers
        return spec

    def baseline(self, split: str) -> tuple[str, torch.Tensor] | None:
        """A baseline this data kind predicts itself (name, predictions of ``split``), or None for
        the family's trivial one."""
        return None

    def extra_figures(self, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Pictures of the best model's test predictions that only this data kind can draw."""
        return {}

    def targets(self, split: str) -> torch.Tensor:
        """The targets of a split, as the family trains on them."""
        raise NotImplementedError

    def profile_lines(self) -> list[tuple[str, str]]:
        """The data profile as (label, text) rows for the terminal."""
        raise NotImplementedError

    def serving_bundle(self, checkpoint: str, family: str, folder: Path) -> ServingBundle:
        """The pyfunc model for the checkpoint, its artifacts (written under ``folder``) and
        examples of raw input and output. Call after ``for_trial`` with the best candidate."""
        raise NotImplementedError

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        """The loader of one split, as set up by the last ``for_trial``."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader("test", False)



def stable_hash(*parts: Any) -> str:
    """Return a short sha256 of JSON-serialisable parts (or bytes)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Both fractions in (0, 1) and leaving at least 10% of rows to train on."""
    for key, frac in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0.0 < frac < 1.0:
            raise ConfigError(key, "must be between 0 and 1 (exclusive)", given=frac, fix="e.g. 0.15")
    if val_fraction + test_fraction >= 0.9:
        raise ConfigError(
            "data.val_fraction",
            "val_fraction + test_fraction leaves under 10% of rows to train on",
            given=val_fraction + test_fraction,
            fix="keep the two fractions under 0.9 together",
        )


def stratified_split(
    labels: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Split row indices into stratified, seeded train / val / test index arrays.

    Raises:
        ConfigError: if the fractions leave no room for training.
        DataError: if a class is too small to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    check_fractions(val_fraction, test_fraction)
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min())
    if smallest < 3:
        raise DataError(
            f"data: a class has only {smallest} row(s); a stratified train/val/test split needs at "
            "least 3 per class; fix: add rows for that class or drop it"
        )
    n_classes = int((counts > 0).sum())
    if min(val_fraction, test_fraction) * len(labels) < n_classes:
        raise DataError(
            f"data: {len(labels)} rows split {val_fraction}/{test_fraction} leave fewer val or test "
            f"rows than the {n_classes} classes; fix: add rows or raise data.val_fraction / "
            "data.test_fraction")
    idx = np.arange(len(labels))
    train_val, test = train_test_split(
        idx, test_size=test_fraction, stratify=labels, random_state=seed
    )
    rel_val = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(
        train_val, test_size=rel_val, stratify=labels[train_val], random_state=seed + 1
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def classes_line(profile: dict[str, Any]) -> tuple[str, str]:
    """The profile's class counts as a (label, text) row for the terminal."""
    bal = profile["balance"]
    counts = ", ".join(f"{k} {v}" for k, v in bal["counts"].items())
    return ("classes", f"{profile['classes']}: {counts} (imbalance {bal['imbalance_ratio']}x)")


def class_balance(labels: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Counts per class and the smallest/largest ratio."""
    counts = np.bincount(labels, minlength=len(names))
    return {
        "counts": {n: int(c) for n, c in zip(names, counts, strict=True)},
        "imbalance_ratio": round(float(counts.max() / max(counts.min(), 1)), 2),
        "majority_class": names[int(counts.argmax())],
        "majority_share": round(float(counts.max() / counts.sum()), 4),
    }
