"""Time series classification data: many labelled series (one or more channels), each classified
whole, from any sequences source (the built-in archive sets, a user's long-format CSV / JSONL:
one row per series and time step); and the served series classifier's codec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import SequenceDataConfig, SourceConfig
from archselect.data.base import (
    FLOAT32_LIMIT,
    SPLITS,
    BaseDataModule,
    DataSpec,
    ReadyRows,
    ServingBundle,
    any_columns,
    as_read,
    check_finite,
    check_fractions,
    class_balance,
    classes_line,
    datamodules,
    empty_cells,
    encode_labels,
    no_rows,
    numeric_column,
    require_column,
    stack_batch,
    stratified_split,
)
from archselect.data.timeindex import fill_missing, parse_times
from archselect.hashing import stable_hash
from archselect.serving import (
    Batch,
    Codec,
    class_frame,
    probabilities_param,
    require_columns,
)

#: the served model's series key column (rows without it are one series)
ID_COLUMN = "series_id"


def fit_length(series: np.ndarray, length: int) -> np.ndarray:
    """Cut to ``length`` steps, or pad by repeating the last step."""
    if len(series) >= length:
        return series[:length]
    pad = np.repeat(series[-1:], length - len(series), axis=0)
    return np.concatenate([series, pad])


@datamodules.register("sequences", schema=SequenceDataConfig)
class SequenceDataModule(BaseDataModule):
    """Many labelled series (one or more channels), each classified whole.

    Series of unequal length are cut or padded (last value repeated) to ``data.max_length`` (or
    the longest); every channel is standardised with training-split statistics.
    """

    blocks = True
    cfg: SequenceDataConfig

    def __init__(self, options: SequenceDataConfig, source: SourceConfig, *, seed: int,
                 cache_dir: str | Path, target_kind: str = "classes") -> None:
        super().__init__(options, source, seed=seed, cache_dir=cache_dir, target_kind=target_kind)
        self.x: dict[str, np.ndarray] = {}
        self.y: dict[str, np.ndarray] = {}
        self.ids: dict[str, list[str]] = {}
        self.ids_all: list[str] = []
        self.channels: list[str] = []
        self.mean = np.zeros(1)
        self.std = np.ones(1)
        self.batch_size = 32
        self.raw = pd.DataFrame()
        self.id_column = ID_COLUMN
        self.time_column: str | None = None

    def _columns(self, frame: pd.DataFrame) -> tuple[str, str | None, str]:
        builtin = "split" in frame.columns and self.source.source == "ts_archive"
        if builtin:
            for key, value in (("id_column", self.cfg.id_column),
                               ("time_column", self.cfg.time_column)):
                if value is not None:
                    raise ConfigError(f"data.{key}", "the built-in sets name their own columns",
                                      given=value, fix=f"leave data.{key}=null")
            return "series_id", "t", "label"
        id_col = require_column(frame, "data.id_column", self.cfg.id_column)
        time_col = self.cfg.time_column
        time_col = require_column(frame, "data.time_column", time_col) if time_col else None
        return id_col, time_col, require_column(frame, "data.target", self.cfg.target)

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        cfg = self.cfg
        if cfg.max_samples is not None:  # the key exists for data=csv's sake; unread here
            raise ConfigError("data.max_samples", "series classification keeps every series",
                              given=cfg.max_samples, fix="leave data.max_samples=null")
        check_fractions(cfg.val_fraction, cfg.test_fraction)
        frame = self.load_frame()
        no_rows(frame)
        id_col, time_col, target = self._columns(frame)
        self.raw = frame.reset_index(drop=True)  # the rows as the user gave them
        self.id_column, self.time_column = id_col, time_col
        self.channels = [c for c in frame.columns if c not in (id_col, time_col, target, "split")]
        if not self.channels:
            raise DataError("data: no value columns besides the id, time and label columns")
        values = pd.DataFrame({c: numeric_column(frame, c, "data") for c in self.channels},
                              index=frame.index)
        for c in self.channels:  # series are held and standardised in float32
            check_finite(values[c], "data", "replace it with an empty cell and set "
                         "data.fill_missing=interpolate (or ffill), or drop the row",
                         limit=FLOAT32_LIMIT)
        values = values.reset_index(drop=True)
        values[target] = frame[target].astype(str).to_numpy()
        values["_id"] = frame[id_col].astype(str).to_numpy()
        values["_split"] = frame["split"].to_numpy() if "split" in frame.columns else ""
        if time_col is not None:
            values["_t"] = parse_times(frame[time_col], None, time_col).to_numpy()
        else:
            values["_t"] = np.arange(len(values))
        empty = empty_cells(frame[target])  # only empty cells: "NA" or "None" is a class
        if empty.any():
            raise DataError(f"data.target: column {target!r} has empty labels (first in row "
                            f"{int(np.flatnonzero(empty.to_numpy())[0]) + 2}); fix: label every row")
        series, labels, splits, lengths = [], [], [], []
        filled_total = 0
        for sid, group in values.groupby("_id", sort=False):
            group = group.sort_values("_t")
            if group["_t"].duplicated().any():
                raise DataError(f"data.time_column: series {sid!r} has a time step twice; fix: one "
                                "row per series and time step")
            names = group[target].unique()
            if len(names) > 1:
                raise DataError(f"data.target: series {sid!r} has more than one label "
                                f"({', '.join(map(str, names[:3]))}); fix: one label per series")
            block, filled = fill_missing(group[self.channels].reset_index(drop=True),
                                         cfg.fill_missing, f"series {sid!r} has")
            filled_total += filled
            series.append(block.to_numpy(dtype=np.float32))
            labels.append(str(names[0]))
            splits.append(str(group["_split"].iloc[0]))
            lengths.append(len(block))
        self.ids_all = list(values["_id"].unique())
        max_len = cfg.max_length or max(lengths)
        if not isinstance(max_len, int) or max_len < 2:
            raise ConfigError("data.max_length", "must be an integer of at least 2, or null",
                              given=max_len)
        x = np.stack([fit_length(s, int(max_len)) for s in series])
        names_sorted = sorted(set(labels))
        if len(names_sorted) < 2:
            raise DataError(f"data.target: every series has the label {names_sorted[0]!r}; "
                            "classification needs at least 2 classes")
        y = encode_labels(labels, names_sorted)
        split = self._split(y, np.array(splits))
        for s in SPLITS:
            self.x[s], self.y[s] = x[split[s]], y[split[s]]
            self.ids[s] = [self.ids_all[i] for i in split[s]]
        self.mean = self.x["train"].mean(axis=(0, 1))
        self.std = self.x["train"].std(axis=(0, 1))
        self.std[self.std == 0] = 1.0
        lens = np.array(lengths)
        profile: dict[str, Any] = {
            "source": cfg.name, "series": len(series), "channels": len(self.channels),
            "length": {"min": int(lens.min()), "median": int(np.median(lens)), "max": int(lens.max()),
                       "used": int(max_len)},
            "splits": {s: len(self.y[s]) for s in SPLITS},
            "filled_values": filled_total, "classes": len(names_sorted),
            "balance": class_balance(y, names_sorted),
            "published_split": bool(any(splits)),
        }
        self.spec = DataSpec(
            kind="sequences", num_classes=len(names_sorted), class_names=names_sorted,
            n_features=int(max_len) * len(self.channels),
            input_shape=[int(max_len), len(self.channels)],
            data_hash=stable_hash(x.tobytes(), labels, {k: v.tolist() for k, v in split.items()}),
            profile=profile,
        )
        return self.spec

    def _split(self, y: np.ndarray, published: np.ndarray) -> dict[str, np.ndarray]:
        """The set's own train/test split (validation carved from train), else a stratified one."""
        if not any(published):
            return stratified_split(y, val_fraction=self.cfg.val_fraction,
                                    test_fraction=self.cfg.test_fraction, seed=self.seed)
        from sklearn.model_selection import train_test_split

        train_all = np.flatnonzero(published == "train")
        train, val = train_test_split(train_all, test_size=self.cfg.val_fraction,
                                      stratify=y[train_all], random_state=self.seed)
        return {"train": np.sort(train), "val": np.sort(val),
                "test": np.flatnonzero(published == "test")}

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        return torch.as_tensor(self.y[split], dtype=torch.long)

    def profile_lines(self) -> list[tuple[str, str]]:
        p = self.prepare().profile
        ln = p["length"]
        lengths = (f"length {ln['min']}" if ln["min"] == ln["max"] else
                   f"lengths {ln['min']}..{ln['max']} (median {ln['median']}), cut or padded to "
                   f"{ln['used']}")
        lines = [
            ("source", str(p["source"])),
            ("series", f"{p['series']} series (train {p['splits']['train']}, val "
             f"{p['splits']['val']}, test {p['splits']['test']}"
             f"{', the published test split' if p['published_split'] else ''}); "
             f"{p['channels']} channel(s), {lengths}"),
            classes_line(p),
        ]
        if p["filled_values"]:
            lines.append(("note", f"{p['filled_values']} missing value(s) filled "
                          f"({self.cfg.fill_missing})"))
        return lines

    def raw_series(self, ids: list[str]) -> pd.DataFrame:
        """The user's own rows of these series (id, time and channel columns), as pandas reads
        them."""
        self.prepare()
        columns = [c for c in (self.id_column, self.time_column) if c] + self.channels
        rows = self.raw[self.raw[self.id_column].astype(str).isin(ids)]
        return as_read(rows[columns])

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        spec = self.prepare()
        codec = SequenceCodec(class_names=spec.class_names, channels=self.channels,
                              length=spec.input_shape[0], mean=self.mean.tolist(),
                              std=self.std.tolist(), id_column=self.id_column,
                              time_column=self.time_column, fill_missing=self.cfg.fill_missing)
        example = self.raw_series(self.ids["train"][:2])
        output = pd.DataFrame({self.id_column: example[self.id_column].unique()[:2],
                               "label": [spec.class_names[0]] * 2, "probability": [1.0] * 2})
        return ServingBundle(codec=codec, artifacts={}, input_example=example,
                             output_example=output, input_schema=any_columns([*example.columns]))

    def split_dataset(self, split: str) -> Dataset[Any]:
        self.prepare()
        x = torch.as_tensor((self.x[split] - self.mean) / self.std, dtype=torch.float32)
        return ReadyRows(x, torch.as_tensor(self.y[split], dtype=torch.long))

    def collate(self, train: bool) -> Any:
        return stack_batch


class SequenceCodec(Codec):
    """The served series classifier's side: a long DataFrame in (the training's id column, or
    ``series_id``, of any type; the time column, by which each series' rows are ordered when it is
    given, else rows in time order; the channel columns), filled, cut or padded and standardised
    as in training; a label and its probability per series out, under the id column given. No id
    column: the rows are one series."""

    def __init__(self, *, class_names: list[str], channels: list[str], length: int,
                 mean: list[float], std: list[float], id_column: str, time_column: str | None,
                 fill_missing: str) -> None:
        self.class_names = class_names
        self.channels = channels
        self.length = length
        self.mean = mean
        self.std = std
        self.id_column = id_column
        self.time_column = time_column
        self.fill_missing = fill_missing

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        require_columns(frame, self.channels, "the channels the model reads")
        id_col = next((c for c in (self.id_column, ID_COLUMN) if c in frame.columns), None)
        if id_col is None:
            id_col, frame = ID_COLUMN, frame.assign(**{ID_COLUMN: "series"})
        if self.time_column is not None and self.time_column in frame.columns:
            order = parse_times(frame[self.time_column], None, self.time_column)
            frame = frame.assign(_t=order.to_numpy()).sort_values("_t", kind="stable")
        ids = list(dict.fromkeys(frame[id_col].tolist()))
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        batch = []
        for sid in ids:
            block = frame.loc[frame[id_col] == sid, self.channels]
            values = block.apply(pd.to_numeric, errors="coerce").reset_index(drop=True)
            if values.isna().to_numpy().any():
                if self.fill_missing == "none":
                    raise ValueError(f"series {sid!r} holds missing or non-numeric values; the "
                                     "model was trained on complete series: fill them first")
                values, _ = fill_missing(values, self.fill_missing, f"series {sid!r} has")
            series = values.to_numpy(dtype=np.float32)
            batch.append((fit_length(series, self.length) - mean) / std)
        return [{"x": torch.as_tensor(np.stack(batch), dtype=torch.float32)}], (id_col, ids)

    def decode(self, outputs: torch.Tensor, keys: Any, params: dict[str, Any] | None
               ) -> pd.DataFrame:
        id_col, ids = keys
        return class_frame(outputs, self.class_names, leading={id_col: ids},
                           probabilities=probabilities_param(params))
