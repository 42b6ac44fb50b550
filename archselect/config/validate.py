"""The typed view of the composed config, and the cross-field checks its schema cannot express,
run before anything is written. The ``data`` node is checked by the data layer (its schema depends
on the task's data kind and the source: ``archselect.data.base.data_options``).
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from archselect.config.errors import ConfigError
from archselect.config.schema import ArchselectConfig, RowConfig


def typed(cfg: Any) -> ArchselectConfig:
    """The composed config as its schema's dataclasses (``data`` stays a plain dict: its schema
    depends on the task). A config that arrives untyped (a worker reads YAML) gets the schema too.

    Raises:
        ConfigError: for a value left unset (``???``) outside ``data``.
    """
    # Hydra composes against the schema already (conf/config.yaml's first default): merging it
    # in again copies the whole table (about half a second); ``data`` is set aside meanwhile.
    composed = OmegaConf.get_type(cfg) is ArchselectConfig
    node = cfg if composed else OmegaConf.merge(OmegaConf.structured(ArchselectConfig), cfg)
    held = copy.deepcopy(node.data)  # assigning to ``data`` empties its node in place
    data = OmegaConf.to_container(node.data, resolve=True, throw_on_missing=False)
    node.data = {}
    try:
        conf = OmegaConf.to_object(node)
    except MissingMandatoryValue as exc:
        key = str(getattr(exc, "full_key", "") or "config")
        raise ConfigError(key, "not set", fix=f"give {key}=<value>") from None
    finally:
        if composed:
            node.data = held  # the caller's config as it was
    assert isinstance(conf, ArchselectConfig) and isinstance(data, dict)
    conf.data = {str(k): v for k, v in data.items()}
    return conf


def check_row(task: str, table: dict[str, RowConfig]) -> RowConfig:
    """The table's row for ``task``; a clear error when it is not declared or not built."""
    if task not in table:
        raise ConfigError("task", f"task {task!r} is not in the table", allowed=list(table))
    row = table[task]
    if not row.available:
        ready = [k for k, v in table.items() if v.available]
        raise ConfigError(
            "task", f"task {task!r} is declared in the table but not available yet",
            allowed=ready, fix="choose an available task",
        )
    return row


def check_numbers(cfg: ArchselectConfig) -> None:
    """Budgets and counts that must be positive."""
    s = cfg.search
    checks = [
        ("search.n_trials", s.n_trials, 1),
        ("search.max_epochs", s.max_epochs, 1),
        ("search.patience", s.patience, 0),
        ("search.n_workers", 1 if s.n_workers is None else s.n_workers, 1),
        ("search.threads", 1 if s.threads is None else s.threads, 1),
        ("search.worker", s.worker, 0),
        ("search.max_failures", 1 if s.max_failures is None else s.max_failures, 1),
        ("search.heartbeat_interval", 1 if s.heartbeat_interval is None else s.heartbeat_interval,
         1),
        ("trainer.num_workers", cfg.trainer.num_workers, 0),
    ]
    for key, value, low in checks:
        if value < low:
            raise ConfigError(key, f"must be at least {low}", given=value,
                              fix=f"set {key}={max(low, 1)} or more")
    for key, seconds in (("timeout", s.timeout), ("trial_timeout", s.trial_timeout)):
        if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
            raise ConfigError(f"search.{key}", "must be a positive number of seconds, or null",
                              given=seconds, fix=f"e.g. search.{key}=600, or null for no limit")
    if s.heartbeat_interval is not None and s.grace_period <= s.heartbeat_interval:
        raise ConfigError("search.grace_period", "must be longer than search.heartbeat_interval "
                          f"({s.heartbeat_interval})", given=s.grace_period,
                          fix="give it at least twice the heartbeat interval")
    interval = cfg.tracking.system_metrics_interval
    if interval is not None and not (interval > 0 and math.isfinite(interval)):
        raise ConfigError("tracking.system_metrics_interval", "must be a positive number of "
                          "seconds, or null to turn system metrics off", given=interval)
    devices = cfg.trainer.devices
    if not (devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool)
                                  and devices >= 1)
            or ((OmegaConf.is_list(devices) or isinstance(devices, list)) and len(devices) > 0
                and all(isinstance(d, int) and d >= 0 for d in devices))):
        raise ConfigError("trainer.devices", "must be a number of devices per trial (1, or more "
                          "for one trial on several processes with DDP), a list of GPU indices, "
                          "or auto", given=devices,
                          fix="trainer.devices=1 (several trials side by side: search.n_workers)")
    if not (cfg.export.onnx_tolerance > 0 and math.isfinite(cfg.export.onnx_tolerance)):
        raise ConfigError("export.onnx_tolerance", "must be a positive number",
                          given=cfg.export.onnx_tolerance, fix="e.g. 1e-4")


OUTPUTS = ("text", "quiet", "json")


def check_output(cfg: ArchselectConfig) -> None:
    if cfg.output not in OUTPUTS:
        raise ConfigError("output", "unknown output mode", given=cfg.output,
                          allowed=list(OUTPUTS),
                          fix="output=quiet prints the final line only, output=json one JSON "
                              "object")


SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed_everything's bound (uint32)


def check_seed(cfg: ArchselectConfig) -> None:
    """Each trial seeds with ``seed + trial number`` (and worker ``i``'s sampler with ``seed + i``):
    all of them must stay within 0..2**32-1, which Lightning's ``seed_everything`` enforces only
    once a trial starts."""
    high = SEED_MAX - max(cfg.search.n_trials, cfg.search.n_workers or 1)
    if not 0 <= cfg.seed <= high:
        # (no '-' in the problem: the line shows a negative given only if the problem lacks it)
        raise ConfigError("seed", f"must lie in 0..{high} (each trial seeds with seed + its "
                          "number, which must stay below 2**32)", given=cfg.seed,
                          fix="e.g. seed=42")


def check_tracking(cfg: ArchselectConfig) -> None:
    """The registered model's name and its champion alias, by MLflow's own rules (checked by the
    registry only when the search is over). Not checked when nothing is registered."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
    )

    try:  # the file registry's rule is the strictest (no '%', no path separator)
        from mlflow.store.model_registry.file_store import _validate_model_name
    except ImportError:  # pragma: no cover - an MLflow without the file store
        from mlflow.utils.validation import _validate_model_name

    t = cfg.tracking
    if not t.register:
        return
    checks: list[tuple[str, str, Any, str]] = [
        ("tracking.model_name", t.model_name, _validate_model_name,
         "a name without '/', ':' or '%', e.g. tracking.model_name=my-model"),
        ("tracking.champion_alias", t.champion_alias,
         lambda a: (_validate_model_alias_name(a), _validate_model_alias_name_reserved(a)),
         "use letters, digits, '_' or '-', not 'latest' nor v<digits>, "
         "e.g. tracking.champion_alias=champion"),
    ]
    for key, value, rule, fix in checks:
        try:
            rule(value)
        except MlflowException as exc:
            problem = " ".join(str(exc.message).split()).rstrip(".")
            raise ConfigError(key, f"refused by MLflow's registry: {problem}", given=value,
                              fix=fix) from None


def check_runs_dir(runs_dir: str) -> Path:
    """The runs folder must exist or be creatable, and be writable."""
    path = Path(runs_dir).expanduser()
    if "~" in runs_dir:
        raise ConfigError("runs_dir", "a '~' is not expanded inside the stores' URLs",
                          given=runs_dir, fix="give the path without ~ (e.g. $HOME/runs)")
    if not writable_folder(path):
        raise ConfigError("runs_dir", "is not a writable folder", given=runs_dir,
                          fix="choose a folder you can write to, e.g. runs_dir=./runs")
    return path


def writable_folder(path: Path) -> bool:
    """Whether ``path`` is a folder we can write to, or could be created as one."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK)


#: what a data source's loader calls a ``data.path`` that does not exist, and how to fix it
MISSING_PATH = {
    "file": ("file not found", "check the path (relative to the current folder)"),
    "image_folder": ("folder not found", "give a folder with one sub-folder of images per class"),
}


def check_data_path(data: dict[str, Any]) -> None:
    """A ``data.path`` that does not exist, said as its loader would say it, before anything is
    imported to read it."""
    known = MISSING_PATH.get(str(data.get("source")))
    raw = data.get("path")
    if known is None or raw in (None, "", "???") or Path(str(raw)).expanduser().exists():
        return
    raise ConfigError("data.path", known[0], given=str(raw), fix=known[1])


def check_candidate_names(cfg: ArchselectConfig) -> None:
    """``selector.candidates`` names that no row of the task's data kind has (a misspelt name);
    the selector checks the rest once the data is read (a rule may switch the row)."""
    asked, table = cfg.selector.candidates, cfg.selector.table
    row = table.get(cfg.task.name)
    if not asked or row is None:
        return
    kin = {str(a) for r in table.values() if r.data_kind == row.data_kind for a in r.candidates}
    for a in (str(a) for a in asked):
        if a not in kin:
            raise ConfigError("selector.candidates", f"unknown architecture {a!r} for "
                              f"{cfg.task.name}", given=a, allowed=list(row.candidates))


def check_before_imports(cfg: Any) -> None:
    """The checks that need neither the data nor torch, Lightning or MLflow, made before those
    load, so that such a mistake is answered in about a second: numbers, seed, output mode, a
    missing data path, a misspelt candidate."""
    conf = typed(cfg)
    check_numbers(conf)
    check_seed(conf)
    check_output(conf)
    check_data_path(conf.data)
    check_candidate_names(conf)


def validate(cfg: ArchselectConfig) -> None:
    """Every check of the sections other than ``data`` that writes nothing."""
    check_runs_dir(cfg.runs_dir)
    check_numbers(cfg)
    check_seed(cfg)
    check_output(cfg)
    check_tracking(cfg)
