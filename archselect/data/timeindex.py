"""Time indexes shared by the series kinds: reading times, checking a regular grid, filling gaps
only when asked, and detecting the season length."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from archselect.config.errors import ConfigError, DataError

FILL_MODES = ("none", "interpolate", "ffill")
# A season length to fall back on when the autocorrelation shows none, by pandas frequency
FREQ_SEASONS = {"h": 24, "D": 7, "B": 5, "W": 52, "M": 12, "Q": 4}


def fill_missing(values: pd.DataFrame, mode: str, what: str) -> tuple[pd.DataFrame, int]:
    """Fill missing values as ``data.fill_missing`` says; with ``none`` they are an error."""
    missing = int(values.isna().to_numpy().sum())
    if missing == 0:
        return values, 0
    if mode not in FILL_MODES:
        raise ConfigError("data.fill_missing", "unknown mode", given=mode, allowed=FILL_MODES)
    if mode == "none":
        raise DataError(f"data: {what} {missing} missing value(s) (e.g. at {_first_missing(values)}); "
                        "archselect does not fill them silently; fix: set "
                        "data.fill_missing=interpolate (or ffill), or give complete data")
    if mode == "interpolate":
        filled = values.interpolate(method="linear", limit_direction="both")
    else:
        filled = values.ffill().bfill()
    return filled, missing


def _first_missing(values: pd.DataFrame) -> str:
    row = values.index[values.isna().any(axis=1)][0]
    return fmt_time(row)


def fmt_time(t: Any) -> str:
    if isinstance(t, pd.Timestamp):
        return t.strftime("%Y-%m-%d") if t == t.normalize() else str(t)
    return f"{t:g}" if isinstance(t, float) else str(t)


def parse_times(raw: pd.Series, fmt: str | None, column: str) -> pd.Series:
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


def next_times(last: Any, step: float | str, n: int) -> list[Any]:
    """The ``n`` times after ``last`` on a grid of ``step`` (a number, or a pandas frequency)."""
    if isinstance(step, str):
        return list(pd.date_range(pd.Timestamp(last), periods=n + 1, freq=step)[1:])
    return [float(last) + step * (k + 1) for k in range(n)]


def full_grid(index: pd.Index, step: float | str) -> pd.Index | None:
    """Every time from the first to the last of ``index`` on a grid of ``step``, when ``index``
    lies on that grid (its gaps are then the grid's other times); else None."""
    if len(index) == 0:
        return None
    if isinstance(step, str):
        grid = pd.date_range(index[0], index[-1], freq=step)
    else:
        grid = pd.Index(np.arange(float(index[0]), float(index[-1]) + step / 2, step))
    return grid if len(grid) and pd.Index(index).isin(grid).all() else None


def grid_step(index: pd.Index) -> float | str | None:
    """The step of a regular grid: a number, or a pandas frequency for dates; None when it has
    fewer than three points or no steady step."""
    if len(index) < 3:
        return None
    if isinstance(index, pd.DatetimeIndex):
        return pd.infer_freq(index)
    diffs = np.diff(index.to_numpy(dtype=np.float64))
    return float(diffs[0]) if np.allclose(diffs, diffs[0]) else None


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
