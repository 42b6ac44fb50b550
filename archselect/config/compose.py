"""Composing the config as the command line would, and turning a composition failure into one
line: the full key, what was given, what is allowed, how to fix it.

The command checks the user's overrides here before Hydra's own ``@hydra.main`` (and before the
heavy imports of a run), so a misspelt key costs a composition, not a start of the stack.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from hydra import compose, initialize_config_module
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from archselect.config import schema as _schema  # noqa: F401  (registers the schema)
from archselect.config.errors import ConfigError, suggest

CONFIG_MODULE = "archselect.conf"


def compose_config(overrides: list[str]) -> Any:
    """The config composed from ``conf/`` with ``overrides`` (``key=value`` strings)."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return compose("config", overrides=overrides)


@cache
def _base(choices: tuple[str, ...] = ()) -> Any:
    """The config with only the user's group ``choices`` (``task=...``, ``data=...``): the keys
    and the table an error message lists are those of the task and data the user chose."""
    return compose_config(list(choices))


@cache
def _groups() -> frozenset[str]:
    """The config groups: the folders of ``conf/`` (``task``, ``data``, ``search``, ...)."""
    from importlib.resources import files

    return frozenset(p.name for p in files(CONFIG_MODULE).iterdir()
                     if p.is_dir() and not p.name.startswith("_"))


def group_choices(overrides: list[str]) -> tuple[str, ...]:
    """The overrides that choose a group's option (no '.' in the key: ``task=tabular_...``,
    ``data=csv``, ``+search/sampler=tpe``), in their order."""
    out = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" in o and "." not in key and key.split("/", 1)[0] in _groups():
            out.append(o)
    return tuple(out)


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
        return args  # composing fails on the same syntax, and precheck describes it
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
    if isinstance(exc, OverrideParseException):
        return _describe_parse_error(exc, overrides)
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
        known = _known_keys(parent, group_choices(overrides))
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


def _describe_parse_error(exc: OverrideParseException, overrides: list[str]) -> str:
    """An override Hydra's lexer refuses (a non-ASCII letter, a stray quote or bracket): name it
    and show the quoted form, which parses."""
    line = str(exc.override or "").strip()
    if not line:  # not told which one: the first that does not parse by itself
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        for o in overrides:
            try:
                parser.parse_overrides([o])
            except Exception:
                line = o
                break
    key, sep, value = line.partition("=")
    key = key.strip() or "override"
    if not sep:
        return str(ConfigError(key.lstrip("+~"), "cannot parse the override", given=line,
                               fix="write it as key=value"))
    value = _unquoted(value.strip())
    # Hydra's quotes around the value, then the shell's around the whole override
    escaped = value.replace("'", "\\'")
    hydra_form = f'{key}="{value}"' if '"' not in value else f"{key}='{escaped}'"
    shell_escaped = re.sub(r'([\\"$`])', r"\\\1", hydra_form)
    example = f"'{hydra_form}'" if "'" not in hydra_form else f'"{shell_escaped}"'
    reason = ("a character outside ASCII must be inside quotes"
              if not value.isascii() else "Hydra's override grammar refuses it")
    return str(ConfigError(key.lstrip("+~"), f"cannot parse the override ({reason})", given=line,
                           fix=f"quote the value, e.g. {example}"))


def _unquoted(value: str) -> str:
    """``value`` without the quotes around it, or a lone quote at either end."""
    for q in "\"'":
        if len(value) >= 2 and value[0] == value[-1] == q:
            return value[1:-1]
        if value.count(q) == 1 and (value.startswith(q) or value.endswith(q)):
            return value.replace(q, "")
    return value


def _known_keys(parent: str, choices: tuple[str, ...] = ()) -> list[str]:
    """The keys under ``parent`` in the config composed with the user's group ``choices`` (the
    config with no overrides if those do not compose by themselves)."""
    for attempt in dict.fromkeys((choices, ())):
        try:
            node = _base(attempt)
            for part in filter(None, parent.split(".")):
                node = node[part]
            return [str(k) for k in node]
        except Exception:
            continue
    return []


def _unavailable_task(overrides: list[str]) -> str | None:
    """If the chosen task is a row not built yet, that is the error to show first."""
    from archselect.config.validate import check_row

    tasks = [o.split("=", 1)[1] for o in overrides if o.startswith("task=")]
    if not tasks:
        return None
    table = _base(()).selector.table
    if tasks[-1] not in table:
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
    return checked(argv)[1]


def checked(argv: list[str]) -> tuple[Any, str | None]:
    """``precheck``, and the config it composed: the run's own where ``argv`` holds overrides
    only (no Hydra flag, ``-m`` or ``hydra.*`` key: those go through ``@hydra.main``), else
    None."""
    import os

    from archselect.config.validate import check_before_imports, check_row, check_runs_dir

    overrides = user_overrides(argv)
    if overrides is None:
        return None, None
    try:
        cfg = compose_config(overrides)
        check_runs_dir(str(cfg.runs_dir))  # before Hydra creates it
        check_row(str(cfg.task.name), cfg.selector.table)
        check_before_imports(cfg)
    except ConfigError as exc:
        return None, str(exc)
    except Exception as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        return None, _unavailable_task(overrides) or describe_compose_error(exc, overrides)
    return (cfg if overrides == list(argv) else None), None
