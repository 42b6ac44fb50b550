"""Tabular data: rows of numeric and categorical columns and a target column, from any table
source (scikit-learn's bundled sets, a user's CSV / JSONL file), encoded with scikit-learn; and the
served model's codec, which encodes the user's rows exactly as training did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from archselect.config.errors import ConfigError, ContinuousTarget, DataError
from archselect.config.schema import LabelledDataConfig, SourceConfig
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
    require_column,
    splits_text,
    stack_batch,
    stratified_split,
)
from archselect.hashing import stable_hash
from archselect.serving import (
    Batch,
    Codec,
    class_frame,
    probabilities_param,
    require_columns,
)

# Cells that mean "missing" in tables (text data keeps them as words).
NA_TOKENS = ["", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?", "-"]


def coerce_columns(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """The feature columns as training encodes them: numbers as float64 (a cell that is not a
    number is missing), categories as strings with None for missing. A column the frame lacks is
    all missing."""
    out = pd.DataFrame(index=frame.index)
    for c in numeric:
        values = frame[c] if c in frame.columns else pd.Series(np.nan, index=frame.index)
        out[c] = pd.to_numeric(values, errors="coerce").astype("float64")
    for c in categorical:
        values = frame[c] if c in frame.columns else pd.Series(None, index=frame.index, dtype=object)
        if pd.api.types.is_numeric_dtype(values):  # a served file whose codes pandas read as numbers
            values = values.map(_as_written, na_action="ignore")
        out[c] = values.astype("string").astype(object).where(values.notna(), None)
    return out


def _as_written(value: Any) -> str:
    """A number as a CSV cell holds it: ``12`` for 12.0 (pandas reads 12 as 12.0 beside a gap)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else str(value)


def _looks_continuous(column: pd.Series) -> bool:
    """Many distinct numbers, fractional or far more than classes usually are."""
    if not _is_numeric(column):
        return False
    values = pd.to_numeric(column.dropna(), errors="coerce")
    distinct = values.nunique()
    fractional = bool((values % 1 != 0).any())
    return distinct > 20 and (fractional or distinct > len(values) // 10)


def _check_continuous(column: pd.Series, target: str) -> None:
    """A regression target: numbers in every kept row (the index is the user's row), finite, small
    enough for the float32 metrics, and not one value throughout."""
    values = pd.to_numeric(column, errors="coerce")
    bad = column[values.isna()]
    if len(bad):
        raise DataError(f"data.target: column {target!r} holds {bad.iloc[0]!r} (row "
                        f"{int(bad.index[0]) + 2}), which is not a number; regression needs "
                        "numbers; fix: leave the cells of rows without a target empty (they are "
                        "dropped), or use task=tabular_classification for classes")
    values = values.astype("float64")
    check_finite(values, "data.target", "replace it with an empty cell (the row is dropped) or "
                 "drop the row", limit=FLOAT32_LIMIT)
    if values.nunique() == 1:
        raise DataError(f"data.target: column {target!r} holds one value ({float(values.iloc[0])})"
                        " in every row; nothing to learn; fix: choose another data.target, or add "
                        "rows whose target differs")


def _is_numeric(column: pd.Series) -> bool:
    values = column.dropna()
    if values.empty:
        return True
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


@datamodules.register("tabular", schema=LabelledDataConfig)
class TabularDataModule(BaseDataModule):
    """Rows of numeric and categorical columns and one target column.

    Numeric columns: median-imputed and standardised; categorical columns: one-hot with levels
    seen in training (unseen levels encode as all zeros). Statistics come from the train split.
    ``target_kind``: ``"classes"`` (classification) or ``"continuous"`` (regression).
    """

    target_kinds = ("classes", "continuous")
    blocks = True
    cfg: LabelledDataConfig

    def __init__(self, options: LabelledDataConfig, source: SourceConfig, *, seed: int,
                 cache_dir: str | Path, target_kind: str = "classes") -> None:
        super().__init__(options, source, seed=seed, cache_dir=cache_dir, target_kind=target_kind)
        self.frames: dict[str, pd.DataFrame] = {}
        self.y: dict[str, np.ndarray] = {}
        self.x: dict[str, np.ndarray] = {}
        self.numeric: list[str] = []
        self.categorical: list[str] = []
        self.preprocessor: Any = None
        self.raw = pd.DataFrame()
        self.rows: dict[str, np.ndarray] = {}
        self.target = ""

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        frame = self.load_frame()
        no_rows(frame)
        target = require_column(frame, "data.target", self.cfg.target)
        self.raw = frame.reset_index(drop=True)  # the rows as the user gave them
        features = [c for c in self.raw.columns if c != target]
        if not features:
            raise DataError("data: the table has no feature columns besides the target")
        frame = self.raw.copy()
        # NA tokens are missing in features only: a class may be called "NA", "None" or "?"
        frame[features] = frame[features].replace(NA_TOKENS, np.nan)
        n_raw = len(frame)
        frame = frame[~empty_cells(frame[target])]
        dropped = n_raw - len(frame)  # counted before any sample is drawn
        self.numeric = [c for c in features if _is_numeric(frame[c])]
        self.categorical = [c for c in features if c not in self.numeric]
        # float64 numbers: a served row may carry a missing value or a fraction
        frame[features] = coerce_columns(frame, self.numeric, self.categorical)[features]
        for c in self.numeric:  # the index is the user's row: named in the message
            check_finite(frame[c], "data", "replace it with an empty cell (missing values are "
                         "imputed) or drop the row")
        if self.target_kind == "continuous":
            _check_continuous(frame[target], target)

        names: list[str] = []
        if self.target_kind == "classes" and _looks_continuous(frame[target]):
            finding = (f"data.target: column {target!r} looks continuous "
                       f"({frame[target].nunique()} distinct numbers)")
            raise ContinuousTarget(f"{finding}; fix: use task=tabular_regression for a number to "
                                   "predict", finding)
        frame = self._sample(frame, target)
        positions = frame.index.to_numpy()  # each kept row's place in the user's rows
        frame = frame.reset_index(drop=True)
        self.target = target
        if self.target_kind == "classes":
            labels_str = frame[target].astype(str).to_numpy()
            names = sorted(set(labels_str.tolist()))
            if len(names) < 2:
                raise DataError(f"data.target: column {target!r} has a single class {names[0]!r}; "
                                "classification needs at least 2; fix: add rows of another class "
                                "or choose another data.target")
            y = encode_labels(labels_str.tolist(), names)
            split = stratified_split(y, val_fraction=self.cfg.val_fraction,
                                     test_fraction=self.cfg.test_fraction, seed=self.seed)
        else:
            y = pd.to_numeric(frame[target], errors="coerce").to_numpy(dtype=np.float64)
            check_fractions(self.cfg.val_fraction, self.cfg.test_fraction)
            idx = np.arange(len(y))
            rest, test = train_test_split(idx, test_size=self.cfg.test_fraction,
                                          random_state=self.seed)
            rel = self.cfg.val_fraction / (1.0 - self.cfg.test_fraction)
            train, val = train_test_split(rest, test_size=rel, random_state=self.seed + 1)
            split = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

        self.preprocessor = ColumnTransformer([
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             self.numeric),
            ("categorical", make_pipeline(
                SimpleImputer(strategy="constant", fill_value="<missing>"),
                OneHotEncoder(handle_unknown="ignore", sparse_output=False)), self.categorical),
        ])
        for s in SPLITS:
            self.frames[s] = frame.loc[split[s], features].reset_index(drop=True)
            self.y[s] = y[split[s]]
            self.rows[s] = positions[split[s]]
        self.preprocessor.fit(self.frames["train"])
        for s in SPLITS:
            self.x[s] = np.asarray(self.preprocessor.transform(self.frames[s]), dtype=np.float32)

        mean = float(self.y["train"].mean()) if self.target_kind == "continuous" else 0.0
        std = float(self.y["train"].std() or 1.0) if self.target_kind == "continuous" else 1.0
        missing = float(frame[features].isna().to_numpy().mean())
        profile: dict[str, Any] = {
            "source": self.cfg.name, "samples": len(frame), "dropped_rows": dropped,
            "splits": {s: len(self.y[s]) for s in SPLITS},
            "features": {"numeric": len(self.numeric), "categorical": len(self.categorical),
                         "encoded_width": int(self.x["train"].shape[1])},
            "missing_share": round(missing, 4),
        }
        if self.target_kind == "classes":
            profile["classes"] = len(names)
            profile["balance"] = class_balance(y, names)
        else:
            profile["target"] = {"mean": round(mean, 4), "std": round(std, 4),
                                 "min": float(y.min()), "max": float(y.max())}
        self.spec = DataSpec(
            kind="tabular", num_classes=len(names), class_names=names,
            n_features=int(self.x["train"].shape[1]), n_numeric=len(self.numeric),
            cat_cardinalities=self._cardinalities(), target_mean=mean, target_std=std,
            data_hash=stable_hash(frame.to_csv(index=False), {k: v.tolist() for k, v in split.items()},
                                  self.target_kind, target, self.numeric, self.categorical),
            profile=profile,
        )
        return self.spec

    def _cardinalities(self) -> list[int]:
        """The width of each categorical column's one-hot block (its levels seen in training)."""
        if not self.categorical:
            return []
        encoder = self.preprocessor.named_transformers_["categorical"][-1]
        return [len(levels) for levels in encoder.categories_]

    def _sample(self, frame: pd.DataFrame, target: str) -> pd.DataFrame:
        """``data.max_samples`` rows (stratified for classes), or all of them."""
        n = self.cfg.max_samples
        if n is None or n >= len(frame):
            return frame
        if n < 30:
            raise ConfigError("data.max_samples", "too few rows to split", given=n,
                              allowed="null or at least 30")
        from sklearn.model_selection import train_test_split

        strata = frame[target].astype(str) if self.target_kind == "classes" else None
        if strata is not None and int(strata.value_counts().min()) < 2:
            strata = None  # a class with one row cannot be stratified; sample plainly
        keep, _ = train_test_split(np.arange(len(frame)), train_size=n, stratify=strata,
                                   random_state=self.seed)
        return frame.iloc[np.sort(keep)]

    # -- the data-module contract -----------------------------------------------------------
    def _target_tensor(self, split: str) -> torch.Tensor:
        spec = self.prepare()
        if self.target_kind == "classes":
            return torch.as_tensor(self.y[split], dtype=torch.long)
        z = (self.y[split] - spec.target_mean) / spec.target_std
        return torch.as_tensor(z, dtype=torch.float32)

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        if self.target_kind == "classes":
            return torch.as_tensor(self.y[split], dtype=torch.long)
        return torch.as_tensor(self.y[split], dtype=torch.float32)

    def profile_lines(self) -> list[tuple[str, str]]:
        prof = self.prepare().profile
        f = prof["features"]
        lines = [
            ("source", str(prof["source"])),
            ("samples", f"{prof['samples']} ({splits_text(prof['splits'])}); dropped "
             f"{prof['dropped_rows']} rows without a target"),
            ("features", f"{f['numeric']} numeric, {f['categorical']} categorical -> "
             f"{f['encoded_width']} encoded; {prof['missing_share']:.1%} missing values"),
        ]
        if "balance" in prof:
            lines.append(classes_line(prof))
        else:
            t = prof["target"]
            lines.append(("target", f"continuous: mean {t['mean']:.4g}, std {t['std']:.4g}, "
                          f"range {t['min']:.4g}..{t['max']:.4g}"))
        return lines

    def raw_rows(self, split: str) -> pd.DataFrame:
        """The user's own rows of a split, target included, with the dtypes pandas reads."""
        self.prepare()
        return as_read(self.raw).iloc[self.rows[split]].reset_index(drop=True)

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        import joblib

        spec = self.prepare()
        joblib.dump(self.preprocessor, folder / "preprocessor.joblib")
        features = list(self.frames["test"].columns)
        codec = TabularCodec(class_names=spec.class_names, features=features,
                             numeric=self.numeric, categorical=self.categorical,
                             target_mean=spec.target_mean, target_std=spec.target_std)
        example = as_read(self.raw).iloc[self.rows["train"][:5]][features].reset_index(drop=True)
        if self.target_kind == "classes":
            output = pd.DataFrame({"label": [spec.class_names[0]] * len(example),
                                   "probability": [1.0] * len(example)})
        else:
            output = pd.DataFrame({"prediction": [0.0] * len(example)})
        return ServingBundle(codec=codec,
                             artifacts={"preprocessor": str(folder / "preprocessor.joblib")},
                             input_example=example, output_example=output,
                             input_schema=any_columns(features))

    # -- Lightning ------------------------------------------------------------------------
    def split_dataset(self, split: str) -> Dataset[Any]:
        self.prepare()
        return ReadyRows(torch.as_tensor(self.x[split]), self._target_tensor(split))

    def collate(self, train: bool) -> Any:
        return stack_batch


class TabularCodec(Codec):
    """The served table model's side: the user's rows in (the training feature columns; others
    ignored), encoded by the fitted preprocessor (artifact ``preprocessor``); labels with their
    probability (classes) or predictions in the target's units (regression) out."""

    def __init__(self, *, class_names: list[str], features: list[str], numeric: list[str],
                 categorical: list[str], target_mean: float, target_std: float) -> None:
        self.class_names = class_names
        self.features = features
        self.numeric = numeric
        self.categorical = categorical
        self.target_mean = target_mean
        self.target_std = target_std
        self.preprocessor: Any = None
        self.raw = pd.DataFrame()
        self.rows: dict[str, np.ndarray] = {}
        self.target = ""

    def load(self, artifacts: dict[str, str]) -> None:
        import joblib

        self.preprocessor = joblib.load(artifacts["preprocessor"])

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        require_columns(frame, self.features, "the model's features")
        features = coerce_columns(frame.replace(NA_TOKENS, np.nan), self.numeric,
                                  self.categorical)[self.features]
        x = torch.as_tensor(self.preprocessor.transform(features), dtype=torch.float32)
        return [{"x": x}], None

    def decode(self, outputs: torch.Tensor, keys: Any, params: dict[str, Any] | None
               ) -> pd.DataFrame:
        if self.class_names:
            return class_frame(outputs, self.class_names,
                               probabilities=probabilities_param(params))
        values = (outputs.reshape(-1) * self.target_std + self.target_mean).tolist()
        return pd.DataFrame({"prediction": [round(float(v), 6) for v in values]})
