"""Typed schemas for the composed config, registered in Hydra's ConfigStore.

Python holds types only; every default lives in ``conf/``. A misspelt key fails at composition
with its full key (``search.n_trails``) because these nodes are closed structs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TaskConfig:
    name: str = MISSING
    monitor: str = MISSING
    direction: str = MISSING


@dataclass
class SearchConfig:
    study_name: str | None = MISSING
    storage: str = MISSING
    n_trials: int = MISSING
    timeout: float | None = MISSING
    trial_timeout: float | None = MISSING
    max_failures: int | None = MISSING
    n_workers: int = MISSING
    heartbeat_interval: int | None = MISSING
    grace_period: int = MISSING
    max_epochs: int = MISSING
    patience: int = MISSING
    enqueue_baselines: bool = MISSING
    sampler: dict[str, Any] = MISSING
    pruner: dict[str, Any] = MISSING


@dataclass
class TrainerConfig:
    accelerator: str = MISSING
    devices: Any = MISSING
    precision: str = MISSING
    deterministic: bool = MISSING
    gradient_clip_val: float | None = MISSING
    num_workers: int = MISSING
    progress_bar: bool = MISSING
    limit_train_batches: float | None = MISSING


@dataclass
class TrackingConfig:
    uri: str = MISSING
    artifact_location: str = MISSING
    experiment: str = MISSING
    register: bool = MISSING
    model_name: str = MISSING
    champion_alias: str = MISSING
    system_metrics_interval: float | None = MISSING


@dataclass
class ExportConfig:
    onnx: bool = MISSING
    onnx_tolerance: float = MISSING


@dataclass
class RowConfig:
    family: str = MISSING
    data_kind: str = MISSING
    candidates: list[str] = MISSING
    available: bool = MISSING
    description: str = MISSING


@dataclass
class SelectorConfig:
    candidates: list[str] | None = MISSING
    table: dict[str, RowConfig] = MISSING
    rules: dict[str, Any] = MISSING


@dataclass
class ArchselectConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: dict[str, Any] = MISSING
    arch: dict[str, Any] = MISSING
    search: SearchConfig = field(default_factory=SearchConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    seed: int = MISSING
    dry_run: bool = MISSING
    runs_dir: str = MISSING


@dataclass
class DataConfig:
    """Keys every data source has."""

    source: str = MISSING
    name: str = MISSING
    target: str = MISSING
    max_samples: int | None = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING


@dataclass
class FileDataConfig(DataConfig):
    """A user's file."""

    path: str = MISSING
    format: str = MISSING


@dataclass
class ImageDataConfig:
    """Bundled image sets (the label is part of the set: no target column)."""

    source: str = MISSING
    name: str = MISSING
    max_samples: int | None = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING


@dataclass
class ImageFolderConfig(ImageDataConfig):
    """A folder of class sub-folders."""

    path: str = MISSING
    image_size: int = MISSING
    channels: int = MISSING


@dataclass
class TextDataConfig(DataConfig):
    """Text sources: the text column and the tokenizer options."""

    text_column: str = MISSING
    vocab_size: int = MISSING
    min_frequency: int = MISSING
    lowercase: bool = MISSING
    max_len: int | None = MISSING
    max_len_percentile: float = MISSING
    max_len_cap: int = MISSING


@dataclass
class FileTextDataConfig(TextDataConfig):
    """A user's CSV / JSONL file of texts."""

    path: str = MISSING
    format: str = MISSING


@dataclass
class SeriesDataConfig(DataConfig):
    """One series cut into windows (forecasting); the task file gives the window keys."""

    time_column: str | None = MISSING
    time_format: str | None = MISSING
    covariates: list[str] | None = MISSING
    lookback: int = MISSING
    horizon: int = MISSING
    stride: int = MISSING
    season_length: int | None = MISSING
    resample: str | None = MISSING
    fill_missing: str = MISSING
    normalise: str = MISSING


@dataclass
class FileSeriesDataConfig(SeriesDataConfig):
    """A user's CSV / JSONL file with a time column and value columns."""

    path: str = MISSING
    format: str = MISSING


@dataclass
class SequenceDataConfig(DataConfig):
    """Many labelled series (classification); long format, one row per series and time step."""

    id_column: str | None = MISSING
    time_column: str | None = MISSING
    max_length: int | None = MISSING
    fill_missing: str = MISSING


@dataclass
class FileSequenceDataConfig(SequenceDataConfig):
    """A user's long-format CSV / JSONL file."""

    path: str = MISSING
    format: str = MISSING


def register_schemas() -> None:
    """Store the top-level schema so ``config.yaml`` can extend it."""
    cs = ConfigStore.instance()
    cs.store(name="archselect_schema", node=ArchselectConfig)


register_schemas()
