"""The ``archselect`` command: a thin ``@hydra.main`` around ``run(cfg)``.

Errors a user can fix print as one line and exit 2; set HYDRA_FULL_ERROR=1 for tracebacks.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from archselect.config import schema as _schema  # noqa: F401  (registers the schema)
from archselect.config.errors import ArchselectError, ConfigError, suggest

EXIT_USER_ERROR = 2


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


_failed_jobs: list[int] = []


def _multirun_job() -> int | None:
    """The job number when running under ``-m``, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    return int(hc.job.num) if hc.mode == RunMode.MULTIRUN else None


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    """Print one error line to stderr and exit; in a multirun, let the other jobs run."""
    job = _multirun_job()
    if job is not None and code != 130:
        print(f"archselect: error: job {job}: {message}", file=sys.stderr)
        _failed_jobs.append(job)
        return
    print(f"archselect: error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    from archselect.run import run

    try:
        result = run(cfg)
        if result.outcome is not None and result.outcome.interrupted:
            fail(f"interrupted ({result.outcome.stopped_by}): the finished trials are kept and "
                 "the best model so far is registered; fix: run the same command again to "
                 "resume", code=130)
    except ArchselectError as exc:
        if _full_error():
            raise
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except Exception as exc:
        if _full_error():
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        fail(f"unexpected {type(exc).__name__}: {first} (run again with HYDRA_FULL_ERROR=1 "
             "for the traceback)", code=1)


def _user_overrides(argv: list[str]) -> list[str] | None:
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
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, MissingConfigException):
        group: str | None = None
        text = str(exc)
        if "Could not find '" in text:
            group = text.split("Could not find '", 1)[1].split("'", 1)[0]
        options = list(getattr(exc, "options", None) or [])
        if group and "/" in group:
            g, choice = group.rsplit("/", 1)
            return str(ConfigError(g, f"unknown choice {choice!r}", given=choice, allowed=options,
                                   fix=f"pick one of conf/{g}/*.yaml"))
        return text.strip().splitlines()[0]
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        full_key = str(getattr(cause, "full_key", "") or "")
        msg = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
        given: str | None = None
        for o in overrides:
            if o.split("=", 1)[0].lstrip("+~") == full_key and "=" in o:
                given = o.split("=", 1)[1]
        if "not in struct" in msg or ("Could not override" in str(exc) and "Key '" in msg):
            parent, _, leaf = full_key.rpartition(".")
            known = _known_keys(parent)
            hint = suggest(leaf, known) if known else None
            allowed = f"one of: {', '.join(sorted(known))}" if known else "a key of the schema"
            text = f"{full_key}: unknown key; expected {allowed}"
            if hint:
                text += f" (did you mean {parent + '.' if parent else ''}{hint}?)"
            return text + "; fix: check the spelling (archselect --cfg job shows every key)"
        return str(ConfigError(full_key or "config", msg, given=given,
                               fix="give a value of the key's type (archselect --cfg job shows "
                               "every key and its value)"))
    return str(exc).strip().splitlines()[0]


def _known_keys(parent: str) -> list[str]:
    from hydra import compose, initialize_config_module

    try:
        with initialize_config_module("archselect.conf", version_base="1.3"):
            cfg: Any = compose("config")
        node = cfg
        for part in filter(None, parent.split(".")):
            node = node[part]
        return [str(k) for k in node]
    except Exception:
        return []


def precheck(argv: list[str]) -> str | None:
    """Compose the config once with the user's overrides; return an error line, if any."""
    from hydra import compose, initialize_config_module

    overrides = _user_overrides(argv)
    if overrides is None:
        return None
    from archselect.config.validate import check_runs_dir

    try:
        with initialize_config_module("archselect.conf", version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        check_runs_dir(cfg)  # before Hydra creates it
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:
        if _full_error():
            raise
        return _unavailable_task(overrides) or describe_compose_error(exc, overrides)
    return None


def _unavailable_task(overrides: list[str]) -> str | None:
    """If the chosen task is not built yet, that is the error to show first."""
    from hydra import compose, initialize_config_module

    from archselect.selector import table_row

    tasks = [o for o in overrides if o.startswith("task=")]
    try:
        with initialize_config_module("archselect.conf", version_base="1.3"):
            cfg = compose("config", overrides=tasks[-1:])
        table_row(cfg)
    except ConfigError as exc:
        return str(exc)
    except Exception:
        return None
    return None


def main() -> None:
    """Console-script entry point."""
    problem = precheck(sys.argv[1:])
    if problem:
        fail(problem)
    _main()
    if _failed_jobs:  # a sweep runs every job, then says which failed
        print(f"archselect: error: {len(_failed_jobs)} multirun job(s) failed: "
              f"{', '.join(map(str, _failed_jobs))}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
