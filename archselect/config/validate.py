"""Cross-field checks that the typed schema cannot express, run before anything is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from archselect.config.errors import ConfigError
from archselect.config.schema import (
    DataConfig,
    FileDataConfig,
    FileSequenceDataConfig,
    FileSeriesDataConfig,
    FileTextDataConfig,
    ImageDataConfig,
    ImageFolderConfig,
    SequenceDataConfig,
    SeriesDataConfig,
    TextDataConfig,
)

# (data kind of the task row, data source) -> the keys that source takes for that kind
DATA_SCHEMAS: dict[tuple[str, str], type] = {
    ("text", "rotten_tomatoes"): TextDataConfig,
    ("text", "file"): FileTextDataConfig,
    ("tabular", "sklearn"): DataConfig,
    ("tabular", "file"): FileDataConfig,
    ("image", "digits"): ImageDataConfig,
    ("image", "fashion_mnist"): ImageDataConfig,
    ("image", "image_folder"): ImageFolderConfig,
    ("series", "statsmodels"): SeriesDataConfig,
    ("series", "sktime"): SeriesDataConfig,
    ("series", "file"): FileSeriesDataConfig,
    ("sequences", "ts_archive"): SequenceDataConfig,
    ("sequences", "file"): FileSequenceDataConfig,
}


def check_data(cfg: Any, kind: str) -> None:
    """Check ``data`` against the schema of its source: unknown keys and wrong types fail."""
    source = str(cfg.data.get("source"))
    sources = [s for k, s in DATA_SCHEMAS if k == kind]
    if (kind, source) not in DATA_SCHEMAS:
        raise ConfigError("data.source", f"not a source of {kind} data", given=source,
                          allowed=sources, fix=f"choose a {kind} data set (see conf/data/)")
    schema = OmegaConf.structured(DATA_SCHEMAS[(kind, source)])
    known = list(schema.keys())
    for key in cfg.data:
        if key not in known:
            raise ConfigError(f"data.{key}", "unknown key", given=str(key), allowed=known,
                              fix="check the spelling (see conf/data/)")
    try:
        OmegaConf.merge(schema, cfg.data)
    except (ValidationError, ConfigKeyError) as exc:
        key = f"data.{exc.key}" if getattr(exc, "key", None) else "data"
        raise ConfigError(key, "wrong type", given=getattr(exc, "value", None),
                          allowed=f"a value of the type in conf/data/{source}.yaml") from None


def check_numbers(cfg: Any) -> None:
    """Budgets and counts that must be positive."""
    s = cfg.search
    checks = [
        ("search.n_trials", s.n_trials, 1),
        ("search.max_epochs", s.max_epochs, 1),
        ("search.patience", s.patience, 0),
        ("search.n_workers", s.n_workers, 1),
        ("search.max_failures", 1 if s.max_failures is None else s.max_failures, 1),
        ("search.heartbeat_interval", 1 if s.heartbeat_interval is None else s.heartbeat_interval,
         1),
        ("trainer.num_workers", cfg.trainer.num_workers, 0),
    ]
    for key, value, low in checks:
        if value < low:
            raise ConfigError(key, f"must be at least {low}", given=value,
                              fix=f"set {key}={max(low, 1)} or more")
    for key in ("timeout", "trial_timeout"):
        if s[key] is not None and s[key] <= 0:
            raise ConfigError(f"search.{key}", "must be a positive number of seconds, or null",
                              given=s[key], fix=f"e.g. search.{key}=600, or null for no limit")
    if s.heartbeat_interval is not None and s.grace_period <= s.heartbeat_interval:
        raise ConfigError("search.grace_period", "must be longer than search.heartbeat_interval "
                          f"({s.heartbeat_interval})", given=s.grace_period,
                          fix="give it at least twice the heartbeat interval")
    interval = cfg.tracking.system_metrics_interval
    if interval is not None and interval <= 0:
        raise ConfigError("tracking.system_metrics_interval", "must be a positive number of "
                          "seconds, or null to turn system metrics off", given=interval)
    if cfg.export.onnx_tolerance <= 0:
        raise ConfigError("export.onnx_tolerance", "must be a positive number",
                          given=cfg.export.onnx_tolerance, fix="e.g. 1e-4")


def check_runs_dir(cfg: Any) -> Path:
    """The runs folder must exist or be creatable, and be writable."""
    path = Path(str(cfg.runs_dir)).expanduser()
    if "~" in str(cfg.runs_dir):
        raise ConfigError("runs_dir", "a '~' is not expanded inside the stores' URLs",
                          given=str(cfg.runs_dir), fix="give the path without ~ (e.g. $HOME/runs)")
    if not writable_folder(path):
        raise ConfigError("runs_dir", "is not a writable folder", given=str(cfg.runs_dir),
                          fix="choose a folder you can write to, e.g. runs_dir=./runs")
    return path


def writable_folder(path: Path) -> bool:
    """Whether ``path`` is a folder we can write to, or could be created as one."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK)


def validate(cfg: Any, data_kind: str) -> None:
    """Every check that needs no data and writes nothing."""
    check_runs_dir(cfg)
    check_numbers(cfg)
    check_data(cfg, data_kind)
