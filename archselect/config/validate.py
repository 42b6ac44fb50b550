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
    checks = [
        ("search.n_trials", cfg.search.n_trials, 1),
        ("search.max_epochs", cfg.search.max_epochs, 1),
        ("search.patience", cfg.search.patience, 0),
        ("trainer.num_workers", cfg.trainer.num_workers, 0),
    ]
    for key, value, low in checks:
        if value < low:
            raise ConfigError(key, f"must be at least {low}", given=value)
    if cfg.search.timeout is not None and cfg.search.timeout <= 0:
        raise ConfigError("search.timeout", "must be a positive number of seconds, or null",
                          given=cfg.search.timeout)
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
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ConfigError("runs_dir", "is not a writable folder", given=str(cfg.runs_dir),
                          fix="choose a folder you can write to, e.g. runs_dir=./runs")
    return path


def validate(cfg: Any, data_kind: str) -> None:
    """Every check that needs no data and writes nothing."""
    check_runs_dir(cfg)
    check_numbers(cfg)
    check_data(cfg, data_kind)
