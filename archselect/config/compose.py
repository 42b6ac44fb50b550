"""Composing the config as the command line would, and turning a composition failure into one
line: the full key, what was given, what is allowed, how to fix it.

The command checks the user's overrides here before Hydra's own ``@hydra.main`` (and before the
heavy imports of a run), so a misspelt key costs a composition, not a start of the stack.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from hydra import compose, initialize_config_module
from hydra.errors import MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from archselect.config import schema as _schema  # noqa: F401  (registers the schema)
from archselect.config.errors import ConfigError, suggest

CONFIG_MODULE = "archselect.conf"


def compose_config(overrides: list[str]) -> Any:
    """The config composed from ``conf/`` with ``overrides`` (``key=value`` strings)."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return compose("config", overrides=overrides)


@cache
def _base() -> Any:
    """The config with no overrides (for the keys and the table an error message lists)."""
    return compose_config([])


def user_overrides(argv: list[str]) -> list[str] | None:
    """The overrides to check up front, or None when Hydra's own flags are in play.

    Under ``-m`` a sweep is checked with its first value (``search.n_trials=2,4`` -> ``=2``).
    """
    multirun = {"-m", "--multirun"}
    if any(a.startswith("-") and a not in multirun for a in argv):
        return None  # --help, --cfg, ... : Hydra handles these itself
    args = [a for a in argv if a not in multirun
            and not a.startswith("hydra.") and not a.startswith("hydra/")]
    if len(args) == len(argv):
        return args
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:
        return None  # a syntax Hydra itself will explain
    out = []
    for o in parsed:
        if o.is_sweep_override():
            prefix = str(o.input_line).split(o.key_or_group, 1)[0]  # keep +, ++ or ~
            out.append(f"{prefix}{o.key_or_group}={next(iter(o.sweep_string_iterator()))}")
        else:
            out.append(str(o.input_line))
    return out


def describe_compose_error(exc: BaseException, overrides: list[str]) -> str:
    """Turn a Hydra composition error into one actionable line."""
    if isinstance(exc, MissingConfigException):
        missing = str(getattr(exc, "missing_cfg_file", "") or "")
        if "/" in missing:
            group, choice = missing.rsplit("/", 1)
            return str(ConfigError(group, f"unknown choice {choice!r}", given=choice,
                                   allowed=list(getattr(exc, "options", None) or []),
                                   fix=f"pick one of conf/{group}/*.yaml"))
        return str(exc).strip().splitlines()[0]
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return str(exc).strip().splitlines()[0]
    full_key = str(getattr(cause, "full_key", "") or "")
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        parent, _, leaf = full_key.rpartition(".")
        known = _known_keys(parent)
        hint = suggest(leaf, known) if known else None
        allowed = f"one of: {', '.join(sorted(known))}" if known else "a key of the schema"
        text = f"{full_key}: unknown key; expected {allowed}"
        if hint:
            text += f" (did you mean {parent + '.' if parent else ''}{hint}?)"
        return text + "; fix: check the spelling (archselect --cfg job shows every key)"
    msg = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
    given = next((o.split("=", 1)[1] for o in overrides
                  if "=" in o and o.split("=", 1)[0].lstrip("+~") == full_key), None)
    return str(ConfigError(full_key or "config", msg, given=given,
                           fix="give a value of the key's type (archselect --cfg job shows "
                           "every key and its value)"))


def _known_keys(parent: str) -> list[str]:
    try:
        node = _base()
        for part in filter(None, parent.split(".")):
            node = node[part]
        return [str(k) for k in node]
    except Exception:
        return []


def _unavailable_task(overrides: list[str]) -> str | None:
    """If the chosen task is a row not built yet, that is the error to show first."""
    from archselect.config.validate import check_row

    tasks = [o.split("=", 1)[1] for o in overrides if o.startswith("task=")]
    table = _base().selector.table
    if not tasks or tasks[-1] not in table:
        return None
    try:
        check_row(tasks[-1], table)
    except ConfigError as exc:
        return str(exc)
    return None


def precheck(argv: list[str]) -> str | None:
    """Compose the config once with the user's overrides; return an error line, if any.

    Set HYDRA_FULL_ERROR=1 to see the composition's traceback instead.
    """
    import os

    from archselect.config.validate import check_row, check_runs_dir

    overrides = user_overrides(argv)
    if overrides is None:
        return None
    try:
        cfg = compose_config(overrides)
        check_runs_dir(str(cfg.runs_dir))  # before Hydra creates it
        check_row(str(cfg.task.name), cfg.selector.table)
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        return _unavailable_task(overrides) or describe_compose_error(exc, overrides)
    return None
