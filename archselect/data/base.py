"""What every data kind hands on (a DataSpec, splits, a served-model codec), the two registries
(data kinds and data sources), and the checks they share.

A data kind is a ``BaseDataModule`` registered by name with the schema of its keys:

    @datamodules.register("text", schema=TextDataConfig)
    class TextDataModule(BaseDataModule): ...

A data source is a loader registered by name, with the kind of data it holds (none: any kind,
e.g. a user's file) and the schema of its own keys:

    @data_sources.register("rotten_tomatoes", kind="text")
    def load_rotten_tomatoes(source: SourceConfig) -> pd.DataFrame: ...

Its defaults live in ``conf/data/<name>.yaml``; nothing else lists it.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import SourceConfig
from archselect.registry import Registry
from archselect.serving import Codec

SPLITS = ("train", "val", "test")

#: data kinds (``selector.table.<task>.data_kind``): BaseDataModule classes, meta ``schema``
datamodules: Registry[Any] = Registry("data kind", "selector.table.<task>.data_kind",
                                      package="archselect.data")
#: data sources (``data.source``): loaders, meta ``kind`` (None: any) and ``schema``
data_sources: Registry[Any] = Registry("data source", "data.source", package="archselect.data")


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
        n_numeric: how many of those come first and are numbers (tabular).
        cat_cardinalities: the width of each categorical column's one-hot block after the
            numbers (tabular).
        target_mean: training-split mean of a continuous target (regression).
        target_std: training-split standard deviation of a continuous target (regression).
        horizon: steps forecast at once (forecasting).
        season_length: the season in steps, for the seasonal-naive baseline (forecasting).
        mase_scale: MASE's denominator (forecasting): the in-sample seasonal-naive error, the
            mean absolute seasonal difference over the training span (the classic scale).
        max_boxes: the most boxes an image holds (detection: targets are padded to it).
        naive_mae: the seasonal-naive forecast's MAE on the test windows (forecasting:
            ``rel_mae``'s denominator, so rel_mae < 1 beats seasonal naive on the test span).
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
    n_numeric: int = 0
    cat_cardinalities: list[int] = field(default_factory=list)
    input_shape: list[int] = field(default_factory=list)
    target_mean: float = 0.0
    target_std: float = 1.0
    horizon: int = 0
    season_length: int = 1
    mase_scale: float = 1.0
    naive_mae: float = 1.0
    max_boxes: int = 0
    data_hash: str = ""
    profile: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (for ``save_hyperparameters`` and reports)."""
        return asdict(self)


@dataclass(frozen=True)
class View:
    """Which rows of the pool (the train rows, then the val rows) the train and val loaders read:
    one fold of a cross-validation, or every row with nothing held out (a refit).

    Attributes:
        fit: pool indices the train loader reads.
        check: pool indices the val loader reads (held out; empty for a refit).
        name: how reports call it (``fold 2/5``, ``train + val``).
    """

    fit: np.ndarray
    check: np.ndarray
    name: str = ""

    @classmethod
    def everything(cls, n_pool: int) -> View:
        """Every row of the pool to train on, none held out."""
        return cls(fit=np.arange(n_pool), check=np.arange(0), name="train + val")


@dataclass
class ServingBundle:
    """What MLflow needs to log the best model as a pyfunc that takes raw inputs."""

    codec: Codec
    artifacts: dict[str, str]
    input_example: Any
    output_example: Any
    input_schema: Any = None  # an MLflow Schema where inferring one from the example is too strict


class BaseDataModule(pl.LightningDataModule):
    """The contract every data kind fulfils; the flow, the search and the finish use nothing else.

    Batches are ``{"inputs": {name: tensor}, "target": tensor}``.

    Args:
        options: the data node's keys of this kind (its ``schema``), typed.
        source: the data node's keys of its source, typed; the loader reads them.
        seed: the run's seed (split and sampling).
        cache_dir: where a kind may cache work (tokenisers, encodings), keyed by a data hash.
        target_kind: what the task family predicts: ``"classes"``, ``"continuous"``, ...
    """

    #: the target kinds this data kind can produce
    target_kinds: tuple[str, ...] = ("classes",)
    batch_size = 64
    num_workers = 0
    #: whether the train loader may hand out blocks of batches (``Blocks``): kinds whose batches
    #: are slices of ready tensors, whose models' steps are tiny next to Lightning's own per step
    blocks = False
    #: batches per block while a fit trains in blocks (``fit`` sets it; 1: plain batches)
    block = 1

    def __init__(self, options: Any, source: SourceConfig, *, seed: int, cache_dir: str | Path,
                 target_kind: str = "classes") -> None:
        super().__init__()
        if target_kind not in self.target_kinds:
            raise ConfigError("task", f"{type(self).__name__} does not predict {target_kind} "
                              "targets", given=target_kind, allowed=self.target_kinds)
        self.cfg = options
        self.source = source
        self.seed = seed
        self.cache_dir = Path(cache_dir)
        self.target_kind = target_kind
        self.spec: DataSpec | None = None
        #: the rows of the pool the train and val loaders read (a fold, a refit); None: the splits
        self.view: View | None = None

    def load_frame(self) -> Any:
        """What the data source's loader returns for this data node."""
        return data_sources.get(self.source.source)(self.source)

    def prepare(self) -> DataSpec:
        """Load, check, split and profile the data (no store is touched)."""
        raise NotImplementedError

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

    def output_rule(self, scores: torch.Tensor, targets: torch.Tensor,
                    family_cls: Any) -> tuple[Any, str] | None:
        """A rule over the final model's outputs that this data kind offers, chosen on the
        validation predictions (``scores``, ``targets``: the val split, in row order): its
        setting (None: the outputs as they are) and the line that says what was chosen; None
        when the kind has no such rule. The served model applies it too."""
        return None

    def apply_output_rule(self, preds: torch.Tensor, split: str, setting: Any) -> torch.Tensor:
        """``preds`` of ``split`` with the rule's ``setting`` applied."""
        return preds

    def targets(self, split: str) -> torch.Tensor:
        """The targets of a split, as the family trains on them."""
        raise NotImplementedError

    def profile_lines(self) -> list[tuple[str, str]]:
        """The data profile as (label, text) rows for the terminal."""
        raise NotImplementedError

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        """The codec for the served model, its artifacts (written under ``folder``) and examples
        of raw input and output. Call after ``for_trial`` with the best candidate."""
        raise NotImplementedError

    # -- rows and loaders ------------------------------------------------------------------
    def split_dataset(self, split: str) -> Dataset[Any]:
        """The rows of one split (``train``, ``val``, ``test``), as set up by the last
        ``for_trial``: each row is what ``collate`` takes."""
        raise NotImplementedError

    def collate(self, train: bool) -> Any:
        """The function that turns rows into a batch (``train``: with training augmentation)."""
        raise NotImplementedError

    def make_loader(self, rows: Dataset[Any], *, train: bool, shuffle: bool,
                    ordered: bool = False) -> DataLoader[Any]:
        """A loader over ``rows`` (``ordered``: in row order, as predictions are stored; a kind
        may otherwise group its batches, e.g. texts by length)."""
        return seeded_loader(rows, batch_size=self.batch_size, shuffle=shuffle and not ordered,
                             seed=self.seed, collate=self.collate(train),
                             num_workers=0 if ordered else self.num_workers)

    def pool_sizes(self) -> tuple[int, int]:
        """How many rows the train and val splits hold: the pool is the train rows, then the val
        rows (what cross-validation folds and a refit draw on)."""
        spec = self.prepare()
        return int(spec.profile["splits"]["train"]), int(spec.profile["splits"]["val"])

    def rows_of(self, part: str) -> Dataset[Any]:
        """The rows a loader reads: ``fit`` (train, or the view's fit rows of the pool), ``check``
        (val, or the view's held-out rows), ``test``, or ``pool`` (train, then val)."""
        if part == "test":
            return self.split_dataset("test")
        if part == "pool":
            return self.split_dataset("train") + self.split_dataset("val")
        if self.view is None:
            return self.split_dataset({"fit": "train", "check": "val"}[part])
        chosen = self.view.fit if part == "fit" else self.view.check
        return Subset(self.rows_of("pool"), chosen.tolist())

    def pool_targets(self) -> torch.Tensor:
        """The targets of the pool (train, then val)."""
        return torch.cat([self.targets("train"), self.targets("val")])

    def folds(self, k: int) -> list[View]:
        """``k`` folds of the pool for cross-validation: stratified by class when the targets are
        classes (a class with fewer than ``k`` rows: plain folds), else shuffled, seeded."""
        from sklearn.model_selection import KFold, StratifiedKFold

        y = self.pool_targets().numpy()
        index = np.arange(len(y))
        splitter: Any = KFold(n_splits=k, shuffle=True, random_state=self.seed)
        if y.dtype.kind in "iu" and np.bincount(y).min(initial=k) >= k:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.seed)
        return [View(fit=np.sort(a), check=np.sort(b), name=f"fold {i + 1}/{k}")
                for i, (a, b) in enumerate(splitter.split(index, y))]

    def train_dataloader(self) -> Any:
        loader = self.make_loader(self.rows_of("fit"), train=True, shuffle=True)
        return Blocks(loader, self.block) if self.block > 1 else loader

    def val_dataloader(self) -> DataLoader[Any]:
        return self.make_loader(self.rows_of("check"), train=False, shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self.make_loader(self.rows_of("test"), train=False, shuffle=False)

    def ordered_loader(self, part: str) -> DataLoader[Any]:
        """A loader over ``rows_of(part)`` in row order (predictions of a split or a fold)."""
        return self.make_loader(self.rows_of(part), train=False, shuffle=False, ordered=True)


# -- the data node: a kind's keys + its source's keys, typed --------------------------------------
@dataclass
class DataOptions:
    """The checked ``data`` node, split into what the data module and the loader read."""

    kind: str
    options: Any
    source: SourceConfig


def data_options(node: dict[str, Any], kind: str) -> DataOptions:
    """Check the ``data`` node against its kind's schema and its source's schema.

    Raises:
        ConfigError: for a source of another kind, an unknown key, a wrong type or a missing value,
            with the full key.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    source = str(node.get("source"))
    # a data kind reads its own sources, or those of the kind it names (``sources=``)
    reads = datamodules.meta(kind).get("sources", kind)
    sources = [s for s in data_sources.names() if data_sources.meta(s).get("kind") in (None, reads)]
    if source not in data_sources or source not in sources:
        raise ConfigError("data.source", f"not a source of {reads} data", given=source,
                          allowed=sources, fix=f"choose a {reads} data set (see conf/data/)")
    kind_schema = datamodules.meta(kind)["schema"]
    source_schema = data_sources.meta(source).get("schema", SourceConfig)
    kind_keys = [f.name for f in fields(kind_schema)]
    source_keys = [f.name for f in fields(source_schema)]
    known = list(dict.fromkeys([*kind_keys, *source_keys]))
    for key in node:
        if key not in known:
            raise ConfigError(f"data.{key}", "unknown key", given=str(key), allowed=known,
                              fix="check the spelling (see conf/data/)")

    def typed(schema: type, keys: list[str]) -> Any:
        part = {k: v for k, v in node.items() if k in keys}
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), part))
        except MissingMandatoryValue as exc:
            key = f"data.{exc.key}" if getattr(exc, "key", None) else "data"
            raise ConfigError(key, "not set", fix=f"add {key}=<value> (see conf/data/)") from None
        except OmegaConfBaseException as exc:
            key = f"data.{exc.key}" if getattr(exc, "key", None) else "data"
            raise ConfigError(key, "wrong type", given=getattr(exc, "value", None),
                              allowed=f"a value of the type in conf/data/{node.get('name')}.yaml"
                              ) from None

    return DataOptions(kind=kind, options=typed(kind_schema, kind_keys),
                       source=typed(source_schema, source_keys))


def open_datamodule(node: dict[str, Any], kind: str, *, seed: int, cache_dir: str | Path,
                    target_kind: str = "classes") -> BaseDataModule:
    """The data module of ``kind`` for a ``data`` node (checked first; nothing is read yet)."""
    checked = data_options(node, kind)
    cls = datamodules.get(kind)
    return cls(checked.options, checked.source, seed=seed, cache_dir=cache_dir,
               target_kind=target_kind)


# -- checks and helpers the kinds share ---------------------------------------------------------
def augment_setting(data_opts: dict[str, Any], kind: str) -> float:
    """A trial's ``augment`` strength (0 to 0.5; 0 when not given), the only data setting of
    ``kind`` (image, audio)."""
    unknown = sorted(set(data_opts) - {"augment"})
    if unknown:
        raise ConfigError("arch.<name>.data", f"unknown {kind} data setting", given=unknown,
                          allowed=["augment"])
    augment = float(data_opts.get("augment", 0.0))
    if not 0.0 <= augment <= 0.5:
        raise ConfigError("arch.<name>.data.augment", "must be between 0 (off) and 0.5",
                          given=augment)
    return augment


def require_column(frame: pd.DataFrame, key: str, name: Any) -> str:
    """``name`` if it is a column of ``frame``; else a ConfigError for ``key`` listing them."""
    columns = [str(c) for c in frame.columns]
    if name is None or str(name) not in columns:
        raise ConfigError(key, "no such column in the data" if name is not None else "not set",
                          given=name, allowed=columns, fix=f"set {key}=<one of the columns>")
    return str(name)


def numeric_column(frame: pd.DataFrame, column: str, key: str) -> np.ndarray:
    """A column as float64; a cell that is not a number is a DataError naming its row."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = raw[values.isna() & raw.notna()]
    if len(bad):
        raise DataError(f"{key}: column {column!r} holds values that are not numbers (e.g. "
                        f"{bad.iloc[0]!r} in row {int(bad.index[0]) + 2}); fix: clean the column or "
                        "leave it out")
    return values.to_numpy(dtype=np.float64)


#: the largest magnitude a value standardised in float64 may have: its square is summed, and past
#: ~1e154 the standard deviation overflows (scikit-learn's scaler then yields NaN or scale 1)
FLOAT64_LIMIT = 1e150
#: the largest magnitude of a value held or scored in float32 (targets, metrics, sequences): the
#: summed squared errors overflow past ~1e19, so every trial would score inf or NaN
FLOAT32_LIMIT = 1e15


def empty_cells(values: pd.Series) -> pd.Series:
    """True where a label or text cell holds nothing: None / NaN, or text that is empty or blank.

    Labels are never guessed missing from their spelling: "NA", "None", "null", "?" are classes.
    """
    blank = values.map(lambda v: isinstance(v, str) and not v.strip(), na_action="ignore")
    return values.isna() | blank.fillna(False).astype(bool)


def check_finite(values: pd.Series, key: str, fix: str, *, limit: float = FLOAT64_LIMIT) -> None:
    """Refuse an infinite number, or one past ``limit`` in magnitude, naming the column and the
    first such row of the file (the series' index is the data row: its number + 2, the header
    being line 1). Missing values (NaN) pass: the caller imputes, fills or refuses them.

    Args:
        values: a numeric column as float64, indexed by data row.
        key: the config key the message starts with (``data``, ``data.target``, ...).
        fix: what to do with an infinite value (the kind imputes, fills or drops it).
        limit: the largest magnitude allowed (see ``FLOAT64_LIMIT`` and ``FLOAT32_LIMIT``).
    """
    numbers = values.to_numpy(dtype=np.float64)
    inf = np.isinf(numbers)
    if inf.any():
        row = int(values.index[int(np.flatnonzero(inf)[0])]) + 2
        raise DataError(f"{key}: column {str(values.name)!r} holds an infinite value (row {row}); "
                        f"fix: {fix}")
    with np.errstate(invalid="ignore"):
        huge = np.abs(numbers) > limit
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise DataError(f"{key}: column {str(values.name)!r} holds {numbers[i]:.3g} (row "
                        f"{int(values.index[i]) + 2}), too large to train on (over {limit:.0e} in "
                        "magnitude); fix: rescale the column (other units, or a logarithm) or "
                        "drop the row")


def as_read(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as ``pandas.read_csv`` gives it to a user who saved it as a CSV file: its
    default dtypes (whole numbers as int64, numbers beside a gap as float64, text as text) and
    its default missing values. Loaders read every cell as written (so that labels such as "05"
    keep their spelling); what the served model is shown and tested with is what users have."""
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


def any_columns(columns: list[str]) -> Any:
    """An MLflow input schema naming ``columns``, each of any type and optional: the served
    model converts what pandas reads (whole numbers where floats were seen, gaps, numbers in a
    text column) itself, and names a missing column in one line."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    return Schema([ColSpec(AnyType(), str(c), required=False) for c in columns])


def no_rows(frame: Any) -> None:
    """A file with a header and no rows is a DataError."""
    if len(frame) == 0:
        raise DataError("data: the file has a header but no rows; fix: add rows")


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


def encode_labels(labels: list[str], names: list[str]) -> np.ndarray:
    """Each label's index in ``names``."""
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[s] for s in labels], dtype=np.int64)


def classes_line(profile: dict[str, Any]) -> tuple[str, str]:
    """The profile's class counts as a (label, text) row for the terminal."""
    bal = profile["balance"]
    counts = ", ".join(f"{k} {v}" for k, v in bal["counts"].items())
    return ("classes", f"{profile['classes']}: {counts} (imbalance {bal['imbalance_ratio']}x)")


def splits_text(splits: dict[str, int]) -> str:
    """``train N, val N, test N``."""
    return ", ".join(f"{s} {splits[s]}" for s in SPLITS)


def class_balance(labels: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Counts per class and the smallest/largest ratio."""
    counts = np.bincount(labels, minlength=len(names))
    return {
        "counts": {n: int(c) for n, c in zip(names, counts, strict=True)},
        "imbalance_ratio": round(float(counts.max() / max(counts.min(), 1)), 2),
        "majority_class": names[int(counts.argmax())],
        "majority_share": round(float(counts.max() / counts.sum()), 4),
    }


def seeded_loader(data: Any, *, batch_size: int, shuffle: bool, seed: int, collate: Any,
                  num_workers: int = 0) -> DataLoader[Any]:
    """A DataLoader whose shuffling is seeded (same seed, same batches)."""
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed), collate_fn=collate,
                      num_workers=num_workers)


class Blocks:
    """A loader's batches of one epoch in blocks of ``size`` (a list each; the last may be
    shorter): what a family that ``trains_blocks`` takes in one training step."""

    def __init__(self, loader: DataLoader[Any], size: int) -> None:
        self.loader, self.size = loader, size

    def __len__(self) -> int:
        return -(-len(self.loader) // self.size)

    def __iter__(self) -> Iterator[list[Any]]:
        batches = iter(self.loader)
        while block := list(itertools.islice(batches, self.size)):
            yield block


class Stacked(tuple):
    """A batch's rows already stacked: one tensor per field (what ``ReadyRows`` hands a collate
    function instead of a list of rows)."""


class ReadyRows(Dataset[tuple[torch.Tensor, ...]]):
    """Rows held as whole tensors, one per field. A loader's batch is read by indexing each tensor
    once (``__getitems__``), not row by row and stacked: for small tables and images, reading
    row by row costs more than the model's step."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> Stacked:
        chosen = torch.as_tensor(indices, dtype=torch.long)
        return Stacked(t[chosen] for t in self.tensors)

    def __add__(self, other: Any) -> Any:
        if isinstance(other, ReadyRows) and len(other.tensors) == len(self.tensors):
            return ReadyRows(*(torch.cat([a, b]) for a, b in zip(self.tensors, other.tensors,
                                                                    strict=True)))
        return ConcatDataset([self, other])


def stacked(rows: Any) -> tuple[torch.Tensor, ...]:
    """A batch's fields as stacked tensors, from ``ReadyRows`` (already stacked) or a list of
    rows."""
    if isinstance(rows, Stacked):
        return tuple(rows)
    return tuple(torch.stack(field) for field in zip(*rows, strict=True))


def stack_batch(rows: Any) -> dict[str, Any]:
    """``(x, target)`` rows as ``{"inputs": {"x"}, "target"}``."""
    x, target = stacked(rows)
    return {"inputs": {"x": x}, "target": target}
