"""Time series: one long series cut into windows (forecasting), many labelled series (classification).

Forecasting (data kind ``series``): a table with an optional time column, the target column and
covariate columns. The time index must be regular; gaps and missing values are reported, and
only filled when ``data.fill_missing`` says how. The split is chronological (train span, then
validation, then test); scaling statistics come from the training span alone, and no training
window reads a value of the validation or test spans.

Classification (data kind ``sequences``): a long table, one row per time step of one series
(``data.id_column``, ``data.time_column``, the label ``data.target``, every other column a
channel). The built-in sets come from the time series archive files shipped in the sktime wheel.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from archselect.config.errors import ConfigError, DataError
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
FILL_MODES = ("none", "interpolate", "ffill")
NORMALISE_MODES = ("window", "global")
# Built-in forecasting sets: name -> (wheel, file inside it)
SERIES_FILES = {
    "sunspots": ("statsmodels", "statsmodels/datasets/sunspots/sunspots.csv"),
    "co2": ("statsmodels", "statsmodels/datasets/co2/co2.csv"),
    "airline": ("sktime", "sktime/datasets/data/Airline/Airline.csv"),
}
# Built-in classification sets: name -> folder of the archive files in the sktime wheel
ARCHIVE_SETS = {"gunpoint": "GunPoint", "basic_motions": "BasicMotions", "arrow_head": "ArrowHead"}
# A season length to fall back on when the autocorrelation shows none, by pandas frequency
FREQ_SEASONS = {"h": 24, "D": 7, "B": 5, "W": 52, "M": 12, "Q": 4}


def _wheel_file(dist: str, rel: str, name: str) -> Path:
    """A data file inside an installed wheel (the package is not imported)."""
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError:
        path = Path("/nonexistent")
    if not path.is_file():
        pin = {"statsmodels": "statsmodels==0.15.0", "sktime": "--no-deps sktime==1.2.0"}[dist]
        raise DataError(f"data={name}: the built-in set ships in the {dist} wheel, which is not "
                        f"installed; fix: pip install {pin} (the README's set-up does this)")
    return path


@data_sources.register("statsmodels", kind="series")
def load_statsmodels(cfg: dict[str, Any]) -> pd.DataFrame:
    """sunspots (yearly, 1700-2008) or co2 (weekly Mauna Loa readings, 1958-2001)."""
    return _builtin_series(cfg, "statsmodels")


@data_sources.register("sktime", kind="series")
def load_sktime(cfg: dict[str, Any]) -> pd.DataFrame:
    """airline (monthly passengers, 1949-1960)."""
    return _builtin_series(cfg, "sktime")


def _builtin_series(cfg: dict[str, Any], dist: str) -> pd.DataFrame:
    name = str(cfg["name"])
    mine = [k for k, (d, _) in SERIES_FILES.items() if d == dist]
    if name not in mine:
        raise ConfigError("data.name", f"unknown built-in series of data.source={dist}", given=name,
                          allowed=mine)
    return pd.read_csv(_wheel_file(dist, SERIES_FILES[name][1], name), dtype=str,
                       keep_default_na=False, na_values=[""])


@data_sources.register("ts_archive", kind="sequences")
def load_ts_archive(cfg: dict[str, Any]) -> pd.DataFrame:
    """GunPoint, BasicMotions or ArrowHead in long format, with their published train/test split."""
    name = str(cfg["name"])
    if name not in ARCHIVE_SETS:
        raise ConfigError("data.name", "unknown built-in series set", given=name,
                          allowed=list(ARCHIVE_SETS))
    folder = ARCHIVE_SETS[name]
    frames = []
    for split in ("train", "test"):
        rel = f"sktime/datasets/data/{folder}/{folder}_{split.upper()}.ts"
        frame = read_ts_file(_wheel_file("sktime", rel, name))
        frame["series_id"] = f"{split}-" + frame["series_id"].astype(str)
        frame["split"] = split
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def read_ts_file(path: Path) -> pd.DataFrame:
    """A ``.ts`` archive file (equal-length series, channels split by ``:``, label last) as a long
    table: series_id, t, dim_0..dim_k, label."""
    rows: list[pd.DataFrame] = []
    in_data = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *channels, label = line.split(":")
        try:
            values = [np.array([float(v) if v != "?" else np.nan for v in c.split(",")])
                      for c in channels]
        except ValueError:
            raise DataError(f"data: {path.name} line {number} holds a value that is not a "
                            "number") from None
        if len({len(v) for v in values}) != 1:
            raise DataError(f"data: {path.name} line {number}: channels of unequal length")
        block = pd.DataFrame({f"dim_{i}": v for i, v in enumerate(values)})
        block.insert(0, "t", np.arange(len(block)))
        block.insert(0, "series_id", len(rows))
        block["label"] = label.strip()
        rows.append(block)
    if not rows:
        raise DataError(f"data: {path.name} holds no series after @data")
    return pd.concat(rows, ignore_index=True)


# -- checks shared by both kinds ---------------------------------------------------------------
def _column(frame: pd.DataFrame, key: str, name: Any) -> str:
    columns = [str(c) for c in frame.columns]
    if name is None or str(name) not in columns:
        raise ConfigError(key, "no such column in the data" if name is not None else "not set",
                          given=name, allowed=columns, fix=f"set {key}=<one of the columns>")
    return str(name)


def _numeric(frame: pd.DataFrame, column: str, key: str) -> np.ndarray:
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = raw[values.isna() & raw.notna()]
    if len(bad):
        raise DataError(f"{key}: column {column!r} holds values that are not numbers (e.g. "
                        f"{bad.iloc[0]!r} in row {int(bad.index[0]) + 2}); fix: clean the column or "
                        "leave it out")
    return values.to_numpy(dtype=np.float64)


def _fill(values: pd.DataFrame, mode: str, what: str) -> tuple[pd.DataFrame, int]:
    """Fill missing values as ``data.fill_missing`` says; with ``none`` they are an error."""
    missing = int(values.isna().to_numpy().sum())
    if missing == 0:
        return values, 0
    if mode not in FILL_MODES:
        raise ConfigError("data.fill_missing", "unknown mode", given=mode, allowed=FILL_MODES)
    if mode == "none":
        raise DataError(f"data: {what} {missing} missing value(s) (e.g. at {_where(values)}); "
                        "archselect does not fill them silently; fix: set "
                        "data.fill_missing=interpolate (or ffill), or give complete data")
    if mode == "interpolate":
        filled = values.interpolate(method="linear", limit_direction="both")
    else:
        filled = values.ffill().bfill()
    return filled, missing


def _where(values: pd.DataFrame) -> str:
    row = values.index[values.isna().any(axis=1)][0]
    return _fmt_time(row)


def _fmt_time(t: Any) -> str:
    if isinstance(t, pd.Timestamp):
        return t.strftime("%Y-%m-%d") if t == t.normalize() else str(t)
    return f"{t:g}" if isinstance(t, float) else str(t)


def _parse_times(raw: pd.Series, fmt: str | None, column: str) -> pd.Series:
    """Numbers stay numbers (years, step counts); anything else is parsed as a date."""
    if fmt is None:
        numbers = pd.to_numeric(raw, errors="coerce")
        if numbers.notna().all():
            return numbers.astype(np.float64)
    try:
        return pd.to_datetime(raw, format=fmt)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"data.time_column: cannot read column {column!r} as times ({first}); fix: "
                        "set data.time_format (e.g. '%Y-%m-%d') or give numbers") from None


def regular_grid(times: pd.Series) -> tuple[pd.Index, str] | None:
    """The regular grid the (sorted, unique) times lie on, and its step; None when irregular.

    Times missing from the grid are gaps: the caller reports or fills them.
    """
    t = pd.Index(times)
    if len(t) < 3:
        return t, "?"
    if not isinstance(t, pd.DatetimeIndex):
        diffs = np.diff(t.to_numpy(dtype=np.float64))
        step = float(pd.Series(diffs).mode().iloc[0])
        grid = np.arange(t[0], t[-1] + step / 2, step)
        on_grid = np.isclose(((t.to_numpy() - t[0]) / step) % 1, 0) | np.isclose(
            ((t.to_numpy() - t[0]) / step) % 1, 1)
        if step > 0 and on_grid.all() and len(grid) <= 2 * len(t):
            return pd.Index(grid), f"every {step:g}"
        return None
    freq = pd.infer_freq(t)
    if freq:
        return t, freq
    step = pd.Series(t[1:] - t[:-1]).mode().iloc[0]
    weekday = f"W-{t[0].day_name()[:3].upper()}"
    for candidate in ("MS", "ME", "QS", "QE", "YS", "YE", weekday, step):
        try:
            grid = pd.date_range(t[0], t[-1], freq=candidate)
        except ValueError:
            continue
        if len(grid) <= 2 * len(t) and t.isin(grid).all():
            return grid, str(candidate)
    return None


def detect_season(values: np.ndarray, freq: str) -> int:
    """The season length: the strongest autocorrelation peak of the differenced series, else the
    usual one for the frequency, else 1 (no season)."""
    from statsmodels.tsa.stattools import acf

    diffs = np.diff(values)
    max_lag = min(len(diffs) // 3, 400)
    if max_lag >= 4 and np.std(diffs) > 0:
        r = acf(diffs, nlags=max_lag, fft=True)
        peaks = [k for k in range(2, max_lag) if r[k] > r[k - 1] and r[k] >= r[k + 1] and r[k] > 0.2]
        if peaks:
            return int(max(peaks, key=lambda k: r[k]))
    key = "".join(ch for ch in freq if ch.isalpha())[:1] if freq else ""
    key = {"Y": "", "A": ""}.get(key, key)
    return FREQ_SEASONS.get(key, 1)


# -- forecasting ---------------------------------------------------------------------------------
class _Windows(Dataset[dict[str, Any]]):
    """Windows of one series: ``x`` [lookback, channels] in, ``target`` [horizon] out, both scaled."""

    def __init__(self, x: torch.Tensor, target: torch.Tensor, offset: torch.Tensor) -> None:
        self.x, self.target, self.offset = x, target, offset

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "target": self.target[i], "offset": self.offset[i]}


def _collate_windows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"inputs": {"x": torch.stack([r["x"] for r in rows])},
            "target": torch.stack([r["target"] for r in rows]),
            "offset": torch.stack([r["offset"] for r in rows])}


def window_origins(start: int, end: int, lookback: int, horizon: int, stride: int) -> np.ndarray:
    """First target index of every window whose targets lie in [start, end) and whose history
    starts at or after index 0."""
    first = max(start, lookback)
    return np.arange(first, end - horizon + 1, stride, dtype=np.int64)


def scale_windows(values: np.ndarray, origins: np.ndarray, lookback: int, horizon: int,
                  mean: np.ndarray, std: np.ndarray, mode: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut and scale windows. ``window``: each channel minus its last observed value, over the
    training span's standard deviation; ``global``: minus the training span's mean.

    Returns (x [N, lookback, C], target [N, horizon] for channel 0, offset [N] of the target).
    """
    idx = origins[:, None] + np.arange(-lookback, 0)[None, :]
    x = values[idx]                                        # [N, L, C]
    y = values[origins[:, None] + np.arange(horizon)[None, :], 0]  # [N, H]
    level = x[:, -1, :] if mode == "window" else np.broadcast_to(mean, (len(origins), len(mean)))
    xs = (x - level[:, None, :]) / std
    ys = (y - level[:, :1]) / std[0]
    return xs.astype(np.float32), ys.astype(np.float32), level[:, 0].astype(np.float32)


def seasonal_naive(values: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The last observed value of the same season for every step of every window [N, horizon]."""
    h = np.arange(horizon)
    back = season * np.ceil((h + 1) / season).astype(np.int64)
    idx = origins[:, None] + h[None, :] - back[None, :]
    return values[np.clip(idx, 0, None), 0]


class SeriesDataModule(BaseDataModule):
    """One series (plus covariates) cut into lookback -> horizon windows, split by time.

    Batches are ``{"inputs": {"x"}, "target", "offset"}``: the forecasting family turns scaled
    outputs back into the target's units with ``offset`` and the training span's std.
    """

    def __init__(self, cfg: dict[str, Any], *, seed: int, cache_dir: str | Path,
                 target_kind: str = "forecast") -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.spec: DataSpec | None = None
        self.values = np.zeros((0, 1))
        self.times: pd.Index = pd.Index([])
        self.columns: list[str] = []
        self.bounds: dict[str, tuple[int, int]] = {}
        self.origins: dict[str, np.ndarray] = {}
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.mean = np.zeros(1)
        self.std = np.ones(1)
        self.batch_size = 64
        self.num_workers = 0

    def _opt(self, key: str, low: int) -> int:
        value = self.cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"data.{key}", f"must be an integer of at least {low}", given=value)
        return value

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        cfg = self.cfg
        lookback, horizon = self._opt("lookback", 1), self._opt("horizon", 1)
        stride = self._opt("stride", 1)
        mode = str(cfg.get("normalise", "window"))
        if mode not in NORMALISE_MODES:
            raise ConfigError("data.normalise", "unknown mode", given=mode, allowed=NORMALISE_MODES)
        check_fractions(float(cfg["val_fraction"]), float(cfg["test_fraction"]))
        frame = data_sources.get(str(cfg["source"]))(cfg)
        if len(frame) == 0:
            raise DataError("data: the file has a header but no rows; fix: add rows")
        target = _column(frame, "data.target", cfg.get("target"))
        time_col = cfg.get("time_column")
        if time_col is not None:
            time_col = _column(frame, "data.time_column", time_col)
        covariates = cfg.get("covariates")
        if covariates is None:  # every other column that holds numbers
            covariates = [c for c in frame.columns if c not in (target, time_col)
                          and pd.to_numeric(frame[c], errors="coerce").notna().all()]
        else:
            covariates = [_column(frame, "data.covariates", c) for c in covariates]
            if target in covariates:
                raise ConfigError("data.covariates", "lists the target itself", given=target,
                                  fix="the target is always an input; list only the other columns")
        self.columns = [target, *covariates]
        table = pd.DataFrame({c: _numeric(frame, c, "data.target" if c == target else
                                          "data.covariates") for c in self.columns})
        notes: list[str] = []
        freq = "row order"
        if time_col is None:
            notes.append("no data.time_column: rows are taken as equally spaced, in file order")
        else:
            times = _parse_times(frame[time_col], cfg.get("time_format"), time_col)
            if times.isna().any():
                raise DataError(f"data.time_column: column {time_col!r} has empty cells (row "
                                f"{int(times[times.isna()].index[0]) + 2}); fix: give every row a time")
            table.index = pd.Index(times)
            table = table.sort_index()
            dup = table.index[table.index.duplicated()]
            if len(dup):
                raise DataError(f"data.time_column: time {_fmt_time(dup[0])} appears more than once "
                                f"in {time_col!r}; fix: aggregate the rows, or set data.resample")
            rule = cfg.get("resample")
            if rule:
                if not isinstance(table.index, pd.DatetimeIndex):
                    raise ConfigError("data.resample", "needs dates in the time column",
                                      given=rule, fix="set data.resample=null for numeric times")
                try:
                    table = table.resample(str(rule)).mean()
                except ValueError:
                    raise ConfigError("data.resample", "not a pandas frequency", given=rule,
                                      allowed="e.g. D, W, MS, QS, YS, h") from None
                notes.append(f"resampled to {rule} (mean per period)")
            grid = regular_grid(table.index.to_series())
            if grid is None:
                steps = pd.Series(np.diff(table.index.to_numpy())).describe()
                raise DataError(
                    f"data.time_column: the times in {time_col!r} are irregular (steps from "
                    f"{steps['min']} to {steps['max']}); fix: set data.resample=<D, W, MS, ...> "
                    "to put the series on a regular grid")
            index, freq = grid
            gaps = index.difference(table.index)
            if len(gaps):
                if cfg.get("fill_missing", "none") == "none":
                    raise DataError(
                        f"data.time_column: {len(gaps)} time step(s) missing from {time_col!r} "
                        f"(first {_fmt_time(gaps[0])}, grid {freq}); archselect does not fill gaps "
                        "silently; fix: set data.fill_missing=interpolate (or ffill), or give a "
                        "complete series")
                notes.append(f"{len(gaps)} missing time step(s) added to the grid ({freq})")
                table = table.reindex(index)
        table, filled = _fill(table, str(cfg.get("fill_missing", "none")), "the series has")
        if filled:
            notes.append(f"{filled} missing value(s) filled ({cfg.get('fill_missing')})")
        if cfg.get("max_samples") is not None:
            table = table.iloc[-int(cfg["max_samples"]):]
        self.values = table.to_numpy(dtype=np.float64)
        self.times = table.index if time_col is not None else pd.RangeIndex(len(table))
        n = len(self.values)
        n_test = round(n * float(cfg["test_fraction"]))
        n_val = round(n * float(cfg["val_fraction"]))
        n_train = n - n_val - n_test
        for split, size in (("validation", n_val), ("test", n_test)):
            if size < horizon:
                raise DataError(
                    f"data: the {split} span has {size} steps, fewer than data.horizon={horizon}; "
                    "fix: raise data.val_fraction / data.test_fraction or lower data.horizon")
        self.bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val),
                       "test": (n_train + n_val, n)}
        for s, (a, b) in self.bounds.items():
            self.origins[s] = window_origins(a, b, lookback, horizon, stride if s == "train" else 1)
        if len(self.origins["train"]) < 10:
            raise DataError(
                f"data: the training span ({n_train} steps) gives {len(self.origins['train'])} "
                f"windows of {lookback} + {horizon} steps; at least 10 are needed; fix: lower "
                "data.lookback or data.horizon, or give a longer series")
        train = self.values[:n_train]
        self.mean = train.mean(axis=0)
        self.std = train.std(axis=0)
        flat = [self.columns[i] for i in np.flatnonzero(self.std == 0)]
        if flat:
            raise DataError(f"data: column(s) {flat} are constant over the training span; fix: "
                            "drop them (data.covariates) or give a varying series")
        for s in SPLITS:
            self.arrays[s] = scale_windows(self.values, self.origins[s], lookback, horizon,
                                           self.mean, self.std, mode)
        given = cfg.get("season_length")
        season = int(given) if given else detect_season(train[:, 0], freq)
        if season >= n_train:
            raise ConfigError("data.season_length", "longer than the training span", given=season,
                              allowed=f"1..{n_train - 1}")
        # MASE here scales by the seasonal-naive forecast's MAE on the same test windows, so
        # MASE < 1 means "better than seasonal naive on the test span"; the classic scale (mean
        # seasonal difference over the training span) is in the profile.
        diffs = np.abs(train[season:, 0] - train[:-season, 0])
        naive = seasonal_naive(self.values, self.origins["test"], horizon, season)
        truth = self.values[self.origins["test"][:, None] + np.arange(horizon)[None, :], 0]
        mase_scale = float(np.abs(naive - truth).mean()) or 1.0
        profile: dict[str, Any] = {
            "source": str(cfg["name"]), "length": n, "frequency": freq,
            "start": _fmt_time(self.times[0]), "end": _fmt_time(self.times[-1]),
            "target": target, "covariates": covariates,
            "season_length": season, "season_detected": not given,
            "mase_scale_insample": round(float(diffs.mean()), 6) if len(diffs) else None,
            "lookback": lookback, "horizon": horizon, "stride": stride, "normalise": mode,
            "spans": {s: b - a for s, (a, b) in self.bounds.items()},
            "splits": {s: len(self.origins[s]) for s in SPLITS},  # windows per split
            "notes": notes,
        }
        self.spec = DataSpec(
            kind="series", n_features=lookback * len(self.columns),
            input_shape=[lookback, len(self.columns)], target_mean=float(self.mean[0]),
            target_std=float(self.std[0]), horizon=horizon, season_length=season,
            mase_scale=mase_scale,
            data_hash=stable_hash(self.values.tobytes(), self.columns, self.bounds, lookback,
                                  horizon, stride, mode),
            profile=profile,
        )
        return self.spec

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        o = self.origins[split]
        h = self.prepare().horizon
        return torch.as_tensor(self.values[o[:, None] + np.arange(h)[None, :], 0], dtype=torch.float32)

    def baseline(self, split: str) -> tuple[str, torch.Tensor]:
        spec = self.prepare()
        preds = seasonal_naive(self.values, self.origins[split], spec.horizon, spec.season_length)
        return f"seasonal naive (season {spec.season_length})", torch.as_tensor(
            preds, dtype=torch.float32)

    def profile_lines(self) -> list[tuple[str, str]]:
        p = self.prepare().profile
        cov = f" + {len(p['covariates'])} covariate(s)" if p["covariates"] else " (univariate)"
        season = f"{p['season_length']} steps" + (" (detected)" if p["season_detected"] else "")
        lines = [
            ("source", str(p["source"])),
            ("series", f"{p['length']} steps, {p['start']} .. {p['end']}, {p['frequency']}; "
             f"target {p['target']}{cov}"),
            ("seasonality", season),
            ("windows", f"lookback {p['lookback']} -> horizon {p['horizon']} (stride "
             f"{p['stride']}): train {p['splits']['train']}, val {p['splits']['val']}, test "
             f"{p['splits']['test']} (spans {p['spans']['train']}/{p['spans']['val']}/"
             f"{p['spans']['test']} steps, in time order)"),
            ("scaling", f"{p['normalise']}: training-span statistics only"),
        ]
        lines += [("note", n) for n in p["notes"]]
        return lines

    def extra_figures(self, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """The test span: truth, the best model's and the seasonal-naive forecasts from origins
        one horizon apart."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        spec = self.prepare()
        origins = self.origins["test"]
        _, naive = self.baseline("test")
        a, b = self.bounds["test"]
        start = max(a - 2 * spec.horizon, 0)
        fig, ax = plt.subplots(figsize=(10, 4.5))
        x = np.arange(len(self.values))
        ax.plot(x[start:b], self.values[start:b, 0], color="black", lw=1.5, label="actual")
        steps = np.arange(spec.horizon)
        for k, i in enumerate(range(0, len(origins), spec.horizon)):
            o = origins[i]
            ax.plot(o + steps, preds[i].numpy(), color="tab:blue", lw=1.5,
                    label="best model" if k == 0 else None)
            ax.plot(o + steps, naive[i].numpy(), color="tab:orange", lw=1, ls="--",
                    label="seasonal naive" if k == 0 else None)
        ax.axvline(a - 0.5, color="grey", ls=":", lw=1)
        ticks = np.linspace(start, b - 1, 6).astype(int)
        ax.set_xticks(ticks, [_fmt_time(self.times[t]) for t in ticks])
        ax.set_title(f"Test span: forecasts of {spec.horizon} steps from origins {spec.horizon} apart")
        ax.set_ylabel(self.columns[0])
        ax.legend()
        fig.tight_layout()
        return {"plots/forecast.png": fig}

    def serving_bundle(self, checkpoint: str, family: str, folder: Path) -> ServingBundle:
        from archselect.serving import ForecastModel

        spec = self.prepare()
        meta = folder / "meta.json"
        meta.write_text(json.dumps({
            "family": family, "columns": self.columns, "lookback": spec.input_shape[0],
            "horizon": spec.horizon, "mean": self.mean.tolist(), "std": self.std.tolist(),
            "normalise": spec.profile["normalise"]}))
        a, _ = self.bounds["test"]
        lookback = spec.input_shape[0]
        example = pd.DataFrame(self.values[a - lookback:a], columns=self.columns)
        output = pd.DataFrame({"step": np.arange(1, spec.horizon + 1),
                               "forecast": np.zeros(spec.horizon)})
        return ServingBundle(python_model=ForecastModel(),
                             artifacts={"checkpoint": checkpoint, "meta": str(meta)},
                             input_example=example, output_example=output)

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        self.prepare()
        x, y, offset = (torch.as_tensor(a) for a in self.arrays[split])
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(_Windows(x, y, offset), batch_size=self.batch_size, shuffle=shuffle,
                          generator=generator, collate_fn=_collate_windows,
                          num_workers=self.num_workers)


# -- classification ------------------------------------------------------------------------------
class SequenceDataModule(BaseDataModule):
    """Many labelled series (one or more channels), each classified whole.

    Series of unequal length are cut or padded (last value repeated) to ``data.max_length`` (or
    the longest); every channel is standardised with training-split statistics.
    """

    def __init__(self, cfg: dict[str, Any], *, seed: int, cache_dir: str | Path,
                 target_kind: str = "classes") -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.spec: DataSpec | None = None
        self.x: dict[str, np.ndarray] = {}
        self.y: dict[str, np.ndarray] = {}
        self.ids: dict[str, list[str]] = {}
        self.ids_all: list[str] = []
        self.channels: list[str] = []
        self.mean = np.zeros(1)
        self.std = np.ones(1)
        self.batch_size = 32
        self.num_workers = 0

    def _columns(self, frame: pd.DataFrame) -> tuple[str, str | None, str]:
        builtin = "split" in frame.columns and str(self.cfg["source"]) == "ts_archive"
        if builtin:
            for key in ("id_column", "time_column"):
                if self.cfg.get(key) is not None:
                    raise ConfigError(f"data.{key}", "the built-in sets name their own columns",
                                      given=self.cfg.get(key), fix=f"leave data.{key}=null")
            return "series_id", "t", "label"
        id_col = _column(frame, "data.id_column", self.cfg.get("id_column"))
        time_col = self.cfg.get("time_column")
        time_col = _column(frame, "data.time_column", time_col) if time_col is not None else None
        return id_col, time_col, _column(frame, "data.target", self.cfg.get("target"))

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        cfg = self.cfg
        if cfg.get("max_samples") is not None:  # the key exists for data=csv's sake; unread here
            raise ConfigError("data.max_samples", "series classification keeps every series",
                              given=cfg["max_samples"], fix="leave data.max_samples=null")
        check_fractions(float(cfg["val_fraction"]), float(cfg["test_fraction"]))
        frame = data_sources.get(str(cfg["source"]))(cfg)
        if len(frame) == 0:
            raise DataError("data: the file has a header but no rows; fix: add rows")
        id_col, time_col, target = self._columns(frame)
        self.channels = [c for c in frame.columns if c not in (id_col, time_col, target, "split")]
        if not self.channels:
            raise DataError("data: no value columns besides the id, time and label columns")
        values = pd.DataFrame({c: _numeric(frame, c, "data") for c in self.channels})
        values[target] = frame[target].astype(str).to_numpy()
        values["_id"] = frame[id_col].astype(str).to_numpy()
        values["_split"] = frame["split"].to_numpy() if "split" in frame.columns else ""
        if time_col is not None:
            values["_t"] = _parse_times(frame[time_col], None, time_col).to_numpy()
        else:
            values["_t"] = np.arange(len(values))
        if frame[target].isna().any():
            raise DataError(f"data.target: column {target!r} has empty labels; fix: label every row")
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
            block, filled = _fill(group[self.channels].reset_index(drop=True),
                                  str(cfg.get("fill_missing", "none")), f"series {sid!r} has")
            filled_total += filled
            series.append(block.to_numpy(dtype=np.float32))
            labels.append(str(names[0]))
            splits.append(str(group["_split"].iloc[0]))
            lengths.append(len(block))
        self.ids_all = list(values["_id"].unique())
        max_len = cfg.get("max_length") or max(lengths)
        if not isinstance(max_len, int) or max_len < 2:
            raise ConfigError("data.max_length", "must be an integer of at least 2, or null",
                              given=max_len)
        x = np.stack([fit_length(s, int(max_len)) for s in series])
        names_sorted = sorted(set(labels))
        if len(names_sorted) < 2:
            raise DataError(f"data.target: every series has the label {names_sorted[0]!r}; "
                            "classification needs at least 2 classes")
        index = {n: i for i, n in enumerate(names_sorted)}
        y = np.array([index[s] for s in labels], dtype=np.int64)
        split = self._split(y, np.array(splits))
        for s in SPLITS:
            self.x[s], self.y[s] = x[split[s]], y[split[s]]
            self.ids[s] = [self.ids_all[i] for i in split[s]]
        self.mean = self.x["train"].mean(axis=(0, 1))
        self.std = self.x["train"].std(axis=(0, 1))
        self.std[self.std == 0] = 1.0
        lens = np.array(lengths)
        profile: dict[str, Any] = {
            "source": str(cfg["name"]), "series": len(series), "channels": len(self.channels),
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
            return stratified_split(y, val_fraction=float(self.cfg["val_fraction"]),
                                    test_fraction=float(self.cfg["test_fraction"]), seed=self.seed)
        from sklearn.model_selection import train_test_split

        train_all = np.flatnonzero(published == "train")
        train, val = train_test_split(train_all, test_size=float(self.cfg["val_fraction"]),
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
                          f"({self.cfg.get('fill_missing')})"))
        return lines

    def serving_bundle(self, checkpoint: str, family: str, folder: Path) -> ServingBundle:
        from archselect.serving import SequenceClassifierModel

        spec = self.prepare()
        meta = folder / "meta.json"
        meta.write_text(json.dumps({
            "family": family, "class_names": spec.class_names, "channels": self.channels,
            "length": spec.input_shape[0], "mean": self.mean.tolist(), "std": self.std.tolist()}))
        rows = []
        for sid, series in zip(self.ids["test"][:2], self.x["test"][:2], strict=False):
            block = pd.DataFrame(series.astype(np.float64), columns=self.channels)
            block.insert(0, "series_id", sid)
            rows.append(block)
        example = pd.concat(rows, ignore_index=True)
        output = pd.DataFrame({"series_id": self.ids["test"][:2],
                               "label": [spec.class_names[0]] * 2, "probability": [1.0] * 2})
        return ServingBundle(python_model=SequenceClassifierModel(),
                             artifacts={"checkpoint": checkpoint, "meta": str(meta)},
                             input_example=example, output_example=output)

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        self.prepare()
        x = torch.as_tensor((self.x[split] - self.mean) / self.std, dtype=torch.float32)
        y = torch.as_tensor(self.y[split], dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size,
                          shuffle=shuffle, generator=generator, collate_fn=_collate_sequences,
                          num_workers=self.num_workers)


def _collate_sequences(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    return {"inputs": {"x": torch.stack([r[0] for r in rows])},
            "target": torch.stack([r[1] for r in rows])}


def fit_length(series: np.ndarray, length: int) -> np.ndarray:
    """Cut to ``length`` steps, or pad by repeating the last step."""
    if len(series) >= length:
        return series[:length]
    pad = np.repeat(series[-1:], length - len(series), axis=0)
    return np.concatenate([series, pad])
