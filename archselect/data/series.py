"""Time series forecasting data: one series (plus covariates) cut into lookback -> horizon
windows, from any series source (the built-in statsmodels / sktime sets, a user's CSV / JSONL file);
the seasonal-naive baseline; and the served forecaster's codec.

The table may have a time column, the target column and covariate columns. The time index must be
regular; gaps and missing values are reported, and only filled when ``data.fill_missing`` says
how. The split is chronological (train span, then validation, then test); scaling statistics come
from the training span alone, and no training window reads a value of the validation or test spans.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import SeriesDataConfig, SourceConfig
from archselect.data.base import (
    FLOAT32_LIMIT,
    FLOAT64_LIMIT,
    SPLITS,
    BaseDataModule,
    DataSpec,
    ServingBundle,
    View,
    any_columns,
    as_read,
    check_finite,
    check_fractions,
    datamodules,
    no_rows,
    numeric_column,
    require_column,
)
from archselect.data.timeindex import (
    detect_season,
    fill_missing,
    fmt_time,
    full_grid,
    grid_step,
    next_times,
    parse_times,
    regular_grid,
)
from archselect.hashing import stable_hash
from archselect.serving import Batch, Codec, require_columns

NORMALISE_MODES = ("window", "global")


def _at_least(key: str, value: int, low: int) -> int:
    if value < low:
        raise ConfigError(f"data.{key}", f"must be an integer of at least {low}", given=value)
    return value


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


@datamodules.register("series", schema=SeriesDataConfig)
class SeriesDataModule(BaseDataModule):
    """One series (plus covariates) cut into lookback -> horizon windows, split by time.

    Batches are ``{"inputs": {"x"}, "target", "offset"}``: the forecasting family turns scaled
    outputs back into the target's units with ``offset`` and the training span's std.
    """

    target_kinds = ("forecast",)
    cfg: SeriesDataConfig

    def __init__(self, options: SeriesDataConfig, source: SourceConfig, *, seed: int,
                 cache_dir: str | Path, target_kind: str = "forecast") -> None:
        super().__init__(options, source, seed=seed, cache_dir=cache_dir, target_kind=target_kind)
        self.values = np.zeros((0, 1))
        self.times: pd.Index = pd.Index([])
        self.columns: list[str] = []
        self.bounds: dict[str, tuple[int, int]] = {}
        self.origins: dict[str, np.ndarray] = {}
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.mean = np.zeros(1)
        self.std = np.ones(1)
        self.time_column: str | None = None
        self.step: float | str | None = None

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        cfg = self.cfg
        lookback = _at_least("lookback", cfg.lookback, 1)
        horizon = _at_least("horizon", cfg.horizon, 1)
        stride = _at_least("stride", cfg.stride, 1)
        mode = cfg.normalise
        if mode not in NORMALISE_MODES:
            raise ConfigError("data.normalise", "unknown mode", given=mode, allowed=NORMALISE_MODES)
        check_fractions(cfg.val_fraction, cfg.test_fraction)
        frame = self.load_frame()
        no_rows(frame)
        target = require_column(frame, "data.target", cfg.target)
        time_col = cfg.time_column
        if time_col is not None:
            time_col = require_column(frame, "data.time_column", time_col)
        covariates = cfg.covariates
        if covariates is None:  # every other column that holds numbers
            covariates = [c for c in frame.columns if c not in (target, time_col)
                          and pd.to_numeric(frame[c], errors="coerce").notna().all()]
        else:
            covariates = [require_column(frame, "data.covariates", c) for c in covariates]
            if target in covariates:
                raise ConfigError("data.covariates", "lists the target itself", given=target,
                                  fix="the target is always an input; list only the other columns")
        self.columns = [target, *covariates]
        table = pd.DataFrame({c: numeric_column(frame, c, "data.target" if c == target else
                                          "data.covariates") for c in self.columns},
                             index=frame.index)
        for c in self.columns:  # the target is scored in float32; covariates are only scaled
            check_finite(table[c], "data.target" if c == target else "data.covariates",
                         "replace it with an empty cell and set data.fill_missing=interpolate "
                         "(or ffill), or drop the row",
                         limit=FLOAT32_LIMIT if c == target else FLOAT64_LIMIT)
        table = table.reset_index(drop=True)
        notes: list[str] = []
        freq = "row order"
        if time_col is None:
            notes.append("no data.time_column: rows are taken as equally spaced, in file order")
        else:
            times = parse_times(frame[time_col], cfg.time_format, time_col)
            if times.isna().any():
                raise DataError(f"data.time_column: column {time_col!r} has empty cells (row "
                                f"{int(times[times.isna()].index[0]) + 2}); fix: give every row a time")
            table.index = pd.Index(times)
            table = table.sort_index()
            dup = table.index[table.index.duplicated()]
            if len(dup):
                raise DataError(f"data.time_column: time {fmt_time(dup[0])} appears more than once "
                                f"in {time_col!r}; fix: aggregate the rows, or set data.resample")
            rule = cfg.resample
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
                if cfg.fill_missing == "none":
                    raise DataError(
                        f"data.time_column: {len(gaps)} time step(s) missing from {time_col!r} "
                        f"(first {fmt_time(gaps[0])}, grid {freq}); archselect does not fill gaps "
                        "silently; fix: set data.fill_missing=interpolate (or ffill), or give a "
                        "complete series")
                notes.append(f"{len(gaps)} missing time step(s) added to the grid ({freq})")
                table = table.reindex(index)
        table, filled = fill_missing(table, cfg.fill_missing, "the series has")
        if filled:
            notes.append(f"{filled} missing value(s) filled ({cfg.fill_missing})")
        if cfg.max_samples is not None:
            table = table.iloc[-cfg.max_samples:]
        self.values = table.to_numpy(dtype=np.float64)
        self.times = table.index if time_col is not None else pd.RangeIndex(len(table))
        self.time_column = time_col
        self.step = grid_step(table.index) if time_col is not None else None
        n = len(self.values)
        n_test = round(n * cfg.test_fraction)
        n_val = round(n * cfg.val_fraction)
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
        given = cfg.season_length
        season = int(given) if given else detect_season(train[:, 0], freq)
        if season >= n_train:
            raise ConfigError("data.season_length", "longer than the training span", given=season,
                              allowed=f"1..{n_train - 1}")
        # MASE on the classic scale, as forecasting benchmarks (M4) report it: the mean absolute
        # seasonal difference over the training span. "Better than seasonal naive on the test
        # span" is rel_mae < 1 (the model's MAE over seasonal naive's on the same windows), and
        # the references' MASE stands beside the model's.
        diffs = np.abs(train[season:, 0] - train[:-season, 0])
        insample = float(diffs.mean()) if len(diffs) else 0.0
        naive = seasonal_naive(self.values, self.origins["test"], horizon, season)
        truth = self.values[self.origins["test"][:, None] + np.arange(horizon)[None, :], 0]
        naive_mae = float(np.abs(naive - truth).mean()) or 1.0
        profile: dict[str, Any] = {
            "source": cfg.name, "length": n, "frequency": freq,
            "start": fmt_time(self.times[0]), "end": fmt_time(self.times[-1]),
            "target": target, "covariates": covariates,
            "season_length": season, "season_detected": not given,
            "mase_scale_insample": round(insample, 6) if len(diffs) else None,
            "seasonal_naive_test_mae": round(naive_mae, 6),
            "lookback": lookback, "horizon": horizon, "stride": stride, "normalise": mode,
            "spans": {s: b - a for s, (a, b) in self.bounds.items()},
            "splits": {s: len(self.origins[s]) for s in SPLITS},  # windows per split
            "notes": notes,
        }
        self.spec = DataSpec(
            kind="series", n_features=lookback * len(self.columns),
            input_shape=[lookback, len(self.columns)], target_mean=float(self.mean[0]),
            target_std=float(self.std[0]), horizon=horizon, season_length=season,
            mase_scale=insample or 1.0, naive_mae=naive_mae,
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
        ax.set_xticks(ticks, [fmt_time(self.times[t]) for t in ticks])
        ax.set_title(f"Test span: forecasts of {spec.horizon} steps from origins {spec.horizon} apart")
        ax.set_ylabel(self.columns[0])
        ax.legend()
        fig.tight_layout()
        return {"plots/forecast.png": fig}

    def history(self, start: int, end: int) -> pd.DataFrame:
        """Rows ``start:end`` of the series as a user's file holds them: the time column (written
        as ``data.time_format``, or as dates / numbers), the target and the covariates."""
        self.prepare()
        frame = pd.DataFrame(self.values[start:end], columns=self.columns)
        if self.time_column is not None:
            fmt = self.cfg.time_format
            times = [t.strftime(fmt) if fmt and isinstance(t, pd.Timestamp) else fmt_time(t)
                     for t in self.times[start:end]]
            frame.insert(0, self.time_column, times)
        return as_read(frame)

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        spec = self.prepare()
        lookback = spec.input_shape[0]
        codec = ForecastCodec(columns=self.columns, lookback=lookback, mean=self.mean.tolist(),
                              std=self.std.tolist(), normalise=spec.profile["normalise"],
                              time_column=self.time_column, time_format=self.cfg.time_format,
                              step=self.step, resample=self.cfg.resample,
                              fill_missing=self.cfg.fill_missing)
        a, _ = self.bounds["test"]
        example = self.history(a - lookback, a)
        output = pd.DataFrame({"step": np.arange(1, spec.horizon + 1),
                               "forecast": np.zeros(spec.horizon)})
        if self.time_column is not None and self.step is not None:
            output.insert(1, self.time_column, next_times(self.times[a - 1], self.step,
                                                          spec.horizon))
        return ServingBundle(codec=codec, artifacts={}, input_example=example,
                             output_example=output,
                             input_schema=any_columns([*example.columns]))

    def folds(self, k: int) -> list[View]:
        """Rolling origin: ``k`` validation spans, each as long as the val span, ending with it;
        fold ``j`` trains on the windows whose targets end before its span begins (no training
        target is a validation target, none is later than it) and checks on the windows whose
        targets lie inside it. The last fold is the plain train / val split; a fold that would
        train on fewer than 10 windows is left out."""
        spec = self.prepare()
        origins = np.concatenate([self.origins["train"], self.origins["val"]])
        a, b = self.bounds["val"]
        span, h = b - a, spec.horizon
        out = []
        for j in range(k):
            start = a - (k - 1 - j) * span
            fit = np.flatnonzero(origins + h <= start)
            check = np.flatnonzero((origins >= start) & (origins + h <= start + span))
            if len(fit) >= 10 and len(check):
                out.append(View(fit=fit, check=check))
        return [replace(v, name=f"origin {i + 1}/{len(out)}") for i, v in enumerate(out)]

    def split_dataset(self, split: str) -> Dataset[Any]:
        self.prepare()
        x, y, offset = (torch.as_tensor(a) for a in self.arrays[split])
        return _Windows(x, y, offset)

    def collate(self, train: bool) -> Any:
        return _collate_windows


class ForecastCodec(Codec):
    """The served forecaster's side: a history in (the target and covariate columns, at least
    ``lookback`` rows after resampling; the last ``lookback`` are read), ordered by the time column
    when it is given (else oldest row first), resampled and filled as in training, scaled as in
    training; the next values of the target out, as rows ``step`` (1..horizon), the future times
    (when the history has its time column) and ``forecast``."""

    def __init__(self, *, columns: list[str], lookback: int, mean: list[float], std: list[float],
                 normalise: str, time_column: str | None, time_format: str | None,
                 step: float | str | None, resample: str | None, fill_missing: str) -> None:
        self.class_names = []
        self.columns = columns
        self.lookback = lookback
        self.mean = mean
        self.std = std
        self.normalise = normalise
        self.time_column = time_column
        self.time_format = time_format
        self.step = step
        self.resample = resample
        self.fill_missing = fill_missing

    def _history(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        """The numeric history in time order, and its last time (None without a time column)."""
        require_columns(frame, self.columns, "the target and covariates the model reads")
        values = frame[self.columns].apply(pd.to_numeric, errors="coerce").astype(np.float64)
        if self.time_column is None or self.time_column not in frame.columns:
            return values.reset_index(drop=True), None
        times = parse_times(frame[self.time_column], self.time_format, self.time_column)
        values.index = pd.Index(times)
        values = values.sort_index()
        if self.resample and isinstance(values.index, pd.DatetimeIndex):
            values = values.resample(self.resample).mean()
        grid = full_grid(values.index, self.step) if self.step is not None else None
        if grid is not None:  # a missing time step is a gap, as in training
            values = values.reindex(grid)
        return values, values.index[-1]

    def read_history(self, frame: pd.DataFrame) -> tuple[np.ndarray, Any]:
        """The whole history as numbers [rows, columns] (filled as in training), and the time
        of its last row (None without a time column)."""
        history, last = self._history(frame)
        if history.isna().to_numpy().any():
            if self.fill_missing == "none":
                row = history.index[history.isna().any(axis=1)][0]
                raise ValueError(f"the history holds {int(history.isna().to_numpy().sum())} "
                                 f"missing or non-numeric value(s) (first at {fmt_time(row)}); the "
                                 "model was trained on a complete series: fill them first")
            history, _ = fill_missing(history, self.fill_missing, "the history has")
        if len(history) < self.lookback:
            raise ValueError(f"the history has {len(history)} rows; the model reads the last "
                             f"{self.lookback}")
        return history.to_numpy(dtype=np.float64), last

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        history, last = self.read_history(frame)
        values = history[-self.lookback:]
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        level = values[-1] if self.normalise == "window" else mean
        x = torch.as_tensor((values - level) / std, dtype=torch.float32)[None]
        return [{"x": x}], (float(level[0]), last)

    def decode(self, outputs: torch.Tensor, keys: Any, params: dict[str, Any] | None
               ) -> pd.DataFrame:
        level, last = keys
        return self.forecast_frame(outputs.reshape(-1).numpy() * self.std[0] + level, last)

    def forecast_frame(self, forecast: np.ndarray, last: Any) -> pd.DataFrame:
        """The answer: ``forecast`` (the target's units) by step, with the future times when
        the history had its time column (``last``: the time of its last row)."""
        out: dict[str, Any] = {"step": np.arange(1, len(forecast) + 1)}
        if last is not None and self.step is not None and self.time_column is not None:
            out[self.time_column] = next_times(last, self.step, len(forecast))
        out["forecast"] = [round(float(v), 6) for v in forecast]
        return pd.DataFrame(out)
