"""Typed schemas for the composed config, registered in Hydra's ConfigStore.

Python holds types only; every default lives in ``conf/``. A misspelt key fails at composition
with its full key (``search.n_trails``, ``selector.rules.small_data.min_train_sample``,
``arch.mlp.optim.lrr``) because these nodes are closed structs. The ``data`` node depends on the
task's data kind and the data source, so it is checked against their schemas (below) once the
task is known, before any data is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

#: the packaged config folder (``conf/`` at the repository root links here)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class TaskConfig:
    name: str = MISSING
    monitor: str = MISSING
    direction: str = MISSING
    #: image generation: images of a class (the labels go in); other rows have no classes to draw
    conditional: bool = False


@dataclass
class SearchConfig:
    study_name: str | None = MISSING
    storage: str = MISSING
    n_trials: int = MISSING
    timeout: float | None = MISSING
    trial_timeout: float | None = MISSING
    max_failures: int | None = MISSING
    n_workers: int | None = MISSING
    threads: int | None = MISSING
    worker: int = MISSING
    heartbeat_interval: int | None = MISSING
    grace_period: int = MISSING
    max_epochs: int = MISSING
    patience: int = MISSING
    enqueue_baselines: bool = MISSING
    refit: bool | None = MISSING
    ensemble_rounds: int = MISSING
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


# -- architectures (conf/arch/<name>.yaml) ---------------------------------------------------------
@dataclass
class OptimConfig:
    """The optimiser settings every architecture gives (AdamW and a learning-rate schedule)."""

    lr: float = MISSING
    weight_decay: float = MISSING
    batch_size: int = MISSING
    #: classification: the cross-entropy's label smoothing while training (0: none)
    label_smoothing: float = 0.0
    #: ``cosine`` (annealed over the epochs) or ``onecycle`` (warm-up then annealing, by step)
    schedule: str = "cosine"
    #: ``adamw``, or ``adagrad`` (what takes the sparse gradients of large embedding tables;
    #: no weight decay then)
    optimizer: str = "adamw"


@dataclass
class ArchConfig:
    """One architecture: what it is, its builder's defaults and its search ranges.

    ``model`` holds the builder's keyword arguments (checked against its signature), ``data`` the
    data settings one trial may change (e.g. augmentation), ``space`` a range per searched key of
    ``model``, ``optim`` or ``data``.
    """

    description: str = MISSING
    why: str = MISSING
    model: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)


# -- the table and its rules (conf/selector/) ------------------------------------------------------
@dataclass
class RowConfig:
    family: str = MISSING
    data_kind: str = MISSING
    candidates: list[str] = MISSING
    available: bool = MISSING
    description: str = MISSING


@dataclass
class NoGpuRule:
    """Without a GPU: hyperparameters fixed, epochs capped and heavy architectures dropped;
    detection images capped in size."""

    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_epochs: dict[str, int] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)
    #: detection: trials train on images at most this large (null: as prepared)
    max_image_size: int | None = None
    #: architectures dropped on images of more pixels (height x width) than this
    max_pixels: dict[str, int] = field(default_factory=dict)


@dataclass
class SizeRule:
    """Below ``min_train_samples`` training samples (of ``kinds``, or any kind): architectures
    dropped and search ranges capped."""

    min_train_samples: int = MISSING
    drop: list[str] = field(default_factory=list)
    kinds: list[str] | None = None
    cap: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class LongSequencesRule:
    """Without a GPU: attention over at most ``max_tokens`` tokens (patches of steps)."""

    max_tokens: int = MISSING
    patch: list[str] = field(default_factory=list)


@dataclass
class TinyImagesRule:
    """Images no larger than ``max_side``: architectures dropped, hyperparameters fixed."""

    max_side: int = MISSING
    drop: list[str] = field(default_factory=list)
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ParallelRule:
    """``search.n_workers=null``: how many trials run side by side, and on how many threads.

    On CPU, studies of small models (data of ``small_kinds``, or images of at most
    ``max_pixels``) run one trial per core, one torch thread each, at most ``max_workers`` and
    one per ``memory_gb_per_worker`` of RAM; other studies one trial on every core. With GPUs,
    one trial per GPU."""

    small_kinds: list[str] = field(default_factory=list)
    max_pixels: int = MISSING
    max_workers: int = MISSING
    memory_gb_per_worker: float = MISSING


@dataclass
class TaskSwitchRule:
    """A ``from_task`` whose target turns out continuous is run as ``to_task``."""

    from_task: str = MISSING
    to_task: str = MISSING
    monitor: str = MISSING
    direction: str = MISSING


@dataclass
class CrossValidationRule:
    """Up to ``max_samples`` samples in train + val: each trial is scored by ``folds``-fold
    cross-validation (``series_folds`` rolling origins for forecasting windows)."""

    max_samples: int = MISSING
    folds: int = MISSING
    series_folds: int = MISSING
    #: the data kinds it applies to (null: all)
    kinds: list[str] | None = None


@dataclass
class RefitRule:
    """Up to ``max_samples`` samples in train + val, the chosen model is trained again on both
    (``search.refit=null``; true or false decides for every size)."""

    max_samples: int = MISSING


@dataclass
class ImbalanceRule:
    """Classes at least ``min_ratio`` times as frequent as the rarest, with macro-F1 monitored:
    a class-weighted loss is searched, and the final model's decision rule is tuned on
    validation for macro-F1."""

    min_ratio: float = MISSING


@dataclass
class EncoderRule:
    """The pretrained encoder is offered one way, fine-tuned (architecture ``fine_tuned``) or
    frozen (``frozen``: its embeddings computed once, a head trained on them): fine-tuned with a
    GPU, or on CPU with ``cpu_min_train`` to ``cpu_max_train`` training texts; frozen otherwise."""

    fine_tuned: str = MISSING
    frozen: str = MISSING
    cpu_min_train: int = MISSING
    cpu_max_train: int = MISSING


@dataclass
class RulesConfig:
    """Every rule the selector knows; ``null`` turns one off."""

    no_gpu: NoGpuRule | None = MISSING
    small_data: SizeRule | None = MISSING
    few_windows: SizeRule | None = MISSING
    long_sequences: LongSequencesRule | None = MISSING
    tiny_images: TinyImagesRule | None = MISSING
    continuous_target: TaskSwitchRule | None = MISSING
    cross_validation: CrossValidationRule | None = MISSING
    refit: RefitRule | None = MISSING
    imbalanced: ImbalanceRule | None = MISSING
    encoder: EncoderRule | None = MISSING
    parallel: ParallelRule | None = MISSING


@dataclass
class SelectorConfig:
    candidates: list[str] | None = MISSING
    references: bool = MISSING
    register_references: bool = MISSING
    table: dict[str, RowConfig] = MISSING
    rules: RulesConfig = field(default_factory=RulesConfig)


@dataclass
class ArchselectConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: dict[str, Any] = MISSING
    arch: dict[str, ArchConfig] = MISSING
    search: SearchConfig = field(default_factory=SearchConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    seed: int = MISSING
    dry_run: bool = MISSING
    runs_dir: str = MISSING
    #: what the command prints: ``text`` (the report), ``quiet`` (the final line only) or
    #: ``json`` (one JSON object on stdout: the summary)
    output: str = "text"


# -- data: a kind's keys (what its DataModule reads) and a source's own keys (what its loader
#    reads). A data node holds both; see archselect.data.base.data_options. ----------------------
@dataclass
class DataConfig:
    """Keys every data kind has."""

    source: str = MISSING
    name: str = MISSING
    max_samples: int | None = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING


@dataclass
class LabelledDataConfig(DataConfig):
    """Data whose label (or value to predict) is a column: ``target``."""

    target: str = MISSING


@dataclass
class TextDataConfig(LabelledDataConfig):
    """Texts: the text column and the tokenizer options."""

    text_column: str = MISSING
    vocab_size: int = MISSING
    min_frequency: int = MISSING
    lowercase: bool = MISSING
    max_len: int | None = MISSING
    max_len_percentile: float = MISSING
    max_len_cap: int = MISSING


@dataclass
class SeriesDataConfig(LabelledDataConfig):
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
class SequenceDataConfig(LabelledDataConfig):
    """Many labelled series (classification); long format, one row per series and time step."""

    id_column: str | None = MISSING
    time_column: str | None = MISSING
    max_length: int | None = MISSING
    fill_missing: str = MISSING


@dataclass
class PairsDataConfig(DataConfig):
    """Sentence pairs: the source and target columns, the subword vocabulary per tokenizer and
    the most subwords a sentence keeps."""

    source_column: str = MISSING
    target_column: str = MISSING
    vocab_size: int = MISSING
    max_len: int = MISSING


@dataclass
class DetectionDataConfig(DataConfig):
    """Images with boxes: letterboxed to ``image_size`` (a square); bad annotations are an error,
    or skipped and counted with ``skip_bad``."""

    image_size: int = MISSING
    skip_bad: bool = MISSING


@dataclass
class SourceConfig:
    """What every loader reads: its registry name and the data set's name."""

    source: str = MISSING
    name: str = MISSING


@dataclass
class FileSourceConfig(SourceConfig):
    """A user's CSV / JSON-lines file."""

    path: str = MISSING
    format: str = MISSING


@dataclass
class ImageFolderSourceConfig(SourceConfig):
    """A folder of class sub-folders of images."""

    path: str = MISSING
    image_size: int = MISSING
    channels: int = MISSING


@dataclass
class AudioDataConfig(DataConfig):
    """Sound clips: resampled to ``sample_rate``, mixed to mono, padded or cropped to
    ``max_seconds`` (null: the clips' 95th percentile), read as ``n_mels`` log-mel bands."""

    sample_rate: int = MISSING
    max_seconds: float | None = MISSING
    n_mels: int = MISSING


@dataclass
class AudioFolderSourceConfig(SourceConfig):
    """A folder of class sub-folders of WAV files, or a CSV of ``path,label`` rows."""

    path: str = MISSING


@dataclass
class SpokenWordsSourceConfig(SourceConfig):
    """Command words synthesised once with espeak-ng into ``folder`` (many voices)."""

    words: list[str] = MISSING
    folder: str = MISSING


@dataclass
class DetectionFolderSourceConfig(SourceConfig):
    """A folder of images with boxes: COCO (``images/`` + ``annotations.json``) or YOLO
    (``images/`` + ``labels/``, class names from ``classes.txt`` or ``classes``); with
    ``train/``, ``val/``, ``test/`` sub-folders laid out the same way, their split is kept."""

    path: str = MISSING
    classes: list[str] | None = None


@dataclass
class DjangoSourceConfig(SourceConfig):
    """The built-in translation pairs: Django's English strings and their ``language``."""

    language: str = MISSING


@dataclass
class SceneSourceConfig(SourceConfig):
    """A generated detection set: ``images`` canvases of ``canvas`` pixels holding 1 to
    ``max_objects`` objects each, written once (COCO format) under ``path``."""

    path: str = MISSING
    images: int = MISSING
    canvas: int = MISSING
    max_objects: int = MISSING
    seed: int = MISSING


def _yaml_loader() -> Any:
    """libyaml's safe loader, reading numbers as OmegaConf does (``1e-3`` is a float, not the
    string YAML 1.1 makes of it) and dates as text: the same values as ``OmegaConf.load`` at a
    tenth of the time, which every command (and worker) pays on start."""
    import yaml

    class Loader(yaml.CSafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
        [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*[eE][-+]?[0-9]+
        |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in Loader.yaml_implicit_resolvers.items()}
    return Loader


def arch_configs(folder: Path = CONF_DIR / "arch") -> dict[str, Any]:
    """Every ``<name>.yaml`` of ``folder``, by name: the architectures a study may use.

    Raises:
        ValueError: if a file's top-level key is not its own name.
    """
    import yaml

    loader = _yaml_loader()
    out: dict[str, Any] = {}
    for path in sorted(folder.glob("*.yaml")):
        node = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        if not isinstance(node, dict) or list(node) != [path.stem]:
            raise ValueError(f"conf/arch/{path.name} must hold one top-level key, {path.stem!r}")
        out[path.stem] = node[path.stem]
    return out


def register_schemas() -> None:
    """Store the top-level schema so ``config.yaml`` can extend it, and ``arch: all``: every
    file of ``conf/arch/`` (adding an architecture adds a file; no list names them)."""
    cs = ConfigStore.instance()
    cs.store(name="archselect_schema", node=ArchselectConfig)
    cs.store(group="arch", name="all", node=arch_configs())


register_schemas()
