"""Tabular data: scikit-learn's bundled sets and users' CSV files, encoded with scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from archselect.config.errors import ConfigError, ContinuousTarget, DataError
from archselect.data.base import (
    BaseDataModule,
    DataSpec,
    ServingBundle,
    check_fractions,
    class_balance,
    classes_line,
    data_sources,
    stable_hash,
    stratified_split,
)

SPLITS = ("train", "val", "test")
# Cells that mean "missing" in tables (text data keeps them as words).
NA_TOKENS = ["", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?", "-"]
SKLEARN_SETS = ("iris", "wine", "breast_cancer", "diabetes")


@data_sources.register("sklearn", kind="tabular")
def load_sklearn(cfg: dict[str, Any]) -> pd.DataFrame:
    """One of scikit-learn's bundled tables (the files ship in the wheel)."""
    import sklearn.datasets

    name = str(cfg["name"])
    if name not in SKLEARN_SETS:
        raise ConfigError("data.name", "unknown bundled table", given=name, allowed=SKLEARN_SETS)
    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    names = getattr(bunch, "target_names", None)
    if names is not None and len(names) and name != "diabetes":
        frame["target"] = [str(names[int(i)]) for i in frame["target"]]
    return frame


def _looks_continuous(column: pd.Series) -> bool:
    """Many distinct numbers, fractional or far more than classes usually are."""
    if not _is_numeric(column):
        return False
    values = pd.to_numeric(column.dropna(), errors="coerce")
    distinct = values.nunique()
    fractional = bool((values % 1 != 0).any())
    return distinct > 20 and (fractional or distinct > len(values) // 10)


def _is_numeric(column: pd.Series) -> bool:
    values = column.dropna()
    if values.empty:
        return True
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


class TabularDataModule(BaseDataModule):
    """Rows of numeric and categorical columns and one target column.

    Numeric columns: median-imputed and standardised; categorical columns: one-hot with levels
    seen in training (unseen levels encode as all zeros). Statistics come from the train split.

    Args:
        cfg: the ``data`` config node as a dict.
        seed: split seed.
        cache_dir: unused by this kind (encoding is fast); kept for the common signature.
        target_kind: ``"classes"`` (classification) or ``"continuous"`` (regression).
    """

    def __init__(self, cfg: dict[str, Any], *, seed: int, cache_dir: str | Path,
                 target_kind: str = "classes") -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.target_kind = target_kind
        self.spec: DataSpec | None = None
        self.frames: dict[str, pd.DataFrame] = {}
        self.y: dict[str, np.ndarray] = {}
        self.x: dict[str, np.ndarray] = {}
        self.numeric: list[str] = []
        self.categorical: list[str] = []
        self.preprocessor: Any = None
        self.batch_size = 64
        self.num_workers = 0

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        frame = data_sources.get(str(self.cfg["source"]))(self.cfg)
        if len(frame) == 0:
            raise DataError("data: the file has a header but no rows; fix: add rows")
        columns = [str(c) for c in frame.columns]
        target = str(self.cfg["target"])
        if target not in columns:
            raise ConfigError("data.target", "no such column in the data", given=target,
                              allowed=columns, fix="set data.target=<one of the columns>")
        frame = frame.replace(NA_TOKENS, np.nan)
        n_raw = len(frame)
        frame = frame[frame[target].notna()].reset_index(drop=True)
        features = [c for c in frame.columns if c != target]
        if not features:
            raise DataError("data: the table has no feature columns besides the target")
        self.numeric = [c for c in features if _is_numeric(frame[c])]
        self.categorical = [c for c in features if c not in self.numeric]
        for c in self.numeric:  # float64: a served row may carry a missing value or a fraction
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
        for c in self.categorical:
            frame[c] = frame[c].astype("string").astype(object).where(frame[c].notna(), None)

        names: list[str] = []
        if self.target_kind == "classes" and _looks_continuous(frame[target]):
            raise ContinuousTarget(
                f"data.target: column {target!r} looks continuous ({frame[target].nunique()} "
                "distinct numbers); fix: use task=tabular_regression for a number to predict")
        frame = self._sample(frame, target)
        if self.target_kind == "classes":
            labels_str = frame[target].astype(str).to_numpy()
            names = sorted(set(labels_str.tolist()))
            if len(names) < 2:
                raise DataError(f"data.target: column {target!r} has a single class {names[0]!r}; "
                                "classification needs at least 2; fix: add rows of another class "
                                "or choose another data.target")
            index = {n: i for i, n in enumerate(names)}
            y = np.array([index[s] for s in labels_str], dtype=np.int64)
            split = stratified_split(y, val_fraction=float(self.cfg["val_fraction"]),
                                     test_fraction=float(self.cfg["test_fraction"]), seed=self.seed)
        else:
            y = pd.to_numeric(frame[target], errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(y).any():
                bad = frame[target][np.isnan(y)].iloc[0]
                raise DataError(f"data.target: column {target!r} is not numeric (e.g. {bad!r}); "
                                "regression needs numbers; fix: use task=tabular_classification")
            check_fractions(float(self.cfg["val_fraction"]), float(self.cfg["test_fraction"]))
            idx = np.arange(len(y))
            rest, test = train_test_split(idx, test_size=float(self.cfg["test_fraction"]),
                                          random_state=self.seed)
            rel = float(self.cfg["val_fraction"]) / (1.0 - float(self.cfg["test_fraction"]))
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
        self.preprocessor.fit(self.frames["train"])
        for s in SPLITS:
            self.x[s] = np.asarray(self.preprocessor.transform(self.frames[s]), dtype=np.float32)

        mean = float(self.y["train"].mean()) if self.target_kind == "continuous" else 0.0
        std = float(self.y["train"].std() or 1.0) if self.target_kind == "continuous" else 1.0
        missing = float(frame[features].isna().to_numpy().mean())
        profile: dict[str, Any] = {
            "source": str(self.cfg["name"]), "samples": len(frame), "dropped_rows": n_raw - len(frame),
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
            n_features=int(self.x["train"].shape[1]), target_mean=mean, target_std=std,
            data_hash=stable_hash(frame.to_csv(index=False), {k: v.tolist() for k, v in split.items()},
                                  self.target_kind, target, self.numeric, self.categorical),
            profile=profile,
        )
        return self.spec

    def _sample(self, frame: pd.DataFrame, target: str) -> pd.DataFrame:
        """``data.max_samples`` rows (stratified for classes), or all of them."""
        n = self.cfg.get("max_samples")
        if n is None or int(n) >= len(frame):
            return frame
        if int(n) < 30:
            raise ConfigError("data.max_samples", "too few rows to split", given=n,
                              allowed="null or at least 30")
        from sklearn.model_selection import train_test_split

        strata = frame[target].astype(str) if self.target_kind == "classes" else None
        if strata is not None and int(strata.value_counts().min()) < 2:
            strata = None  # a class with one row cannot be stratified; sample plainly
        keep, _ = train_test_split(np.arange(len(frame)), train_size=int(n), stratify=strata,
                                   random_state=self.seed)
        return frame.iloc[np.sort(keep)].reset_index(drop=True)

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
            ("samples", f"{prof['samples']} (train {prof['splits']['train']}, val "
             f"{prof['splits']['val']}, test {prof['splits']['test']}); dropped "
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

    def serving_bundle(self, checkpoint: str, family: str, folder: Path) -> ServingBundle:
        import joblib

        from archselect.serving import TabularModel

        spec = self.prepare()
        joblib.dump(self.preprocessor, folder / "preprocessor.joblib")
        meta = folder / "meta.json"
        meta.write_text(json.dumps({"family": family, "class_names": spec.class_names,
                                    "numeric": self.numeric, "categorical": self.categorical}))
        example = self.frames["test"].head(3)
        if self.target_kind == "classes":
            output = pd.DataFrame({"label": [spec.class_names[0]] * len(example),
                                   "probability": [1.0] * len(example)})
        else:
            output = pd.DataFrame({"prediction": [0.0] * len(example)})
        return ServingBundle(
            python_model=TabularModel(),
            artifacts={"checkpoint": checkpoint, "preprocessor": str(folder / "preprocessor.joblib"),
                       "meta": str(meta)},
            input_example=example, output_example=output,
        )

    # -- Lightning ------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        self.prepare()
        data = TensorDataset(torch.as_tensor(self.x[split]), self._target_tensor(split))
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=_collate, num_workers=self.num_workers)


def _collate(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    return {"inputs": {"x": torch.stack([r[0] for r in rows])},
            "target": torch.stack([r[1] for r in rows])}
