"""The ``archselect`` command: ``run(cfg)`` on the composed config, through ``@hydra.main`` where
Hydra has work to do (its flags, ``-m`` sweeps, ``hydra.*`` keys).

The overrides are checked first (``config.compose.checked``), before Hydra starts and before the
heavy imports of a run; a command of overrides only runs on the config that check composed.
Errors a user can fix print as one line and exit 2; set HYDRA_FULL_ERROR=1 for tracebacks.
"""

from __future__ import annotations

import json
import os
import sys

import hydra
from omegaconf import DictConfig

from archselect.config.compose import checked
from archselect.config.errors import ArchselectError
from archselect.secrets import hide_secrets

EXIT_USER_ERROR = 2

_failed_jobs: list[str] = []


def _job() -> tuple[int, list[str]] | None:
    """Under ``-m``: this job's number and the overrides of the keys the sweep varies."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(
            [a for a in sys.argv[1:] if not a.startswith("-")])
        swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    except Exception:  # not our command line (e.g. a job of a cluster launcher)
        swept = set()
    # search.worker=range(N): N commands on one study each, not N studies
    studies = swept - {"search.worker"}
    if not studies and "search.worker" in swept:
        return int(hc.job.num), ["search.worker"]
    return int(hc.job.num), [o for o in hc.overrides.task
                             if o.split("=", 1)[0].lstrip("+~") in studies]


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    """Print one error line to stderr and exit; in a multirun, let the other jobs run."""
    job = _job()
    if job is not None and code != 130:
        which = f"job {job[0]}" + (f" [{','.join(job[1])}]" if job[1] else "")
        print(f"archselect: error: {which}: {message}", file=sys.stderr)
        _failed_jobs.append(str(job[0]))
        return
    print(f"archselect: error: {message}", file=sys.stderr)
    sys.exit(code)


def _run(cfg: DictConfig) -> None:
    """One run of the command on a composed config (the job of ``@hydra.main``)."""
    from rich.console import Console

    from archselect.report import terminal
    from archselect.run import run

    job = _job()
    # A multirun job's study is named after the overrides that make it differ (a sweep of
    # search.worker alone: the jobs are workers of one study).
    suffix = ("" if job is None or job[1] == ["search.worker"]
              else f"[{','.join(job[1]) if job[1] else f'job{job[0]}'}]")
    output = str(cfg.get("output", "text"))
    try:
        # quiet / json: the report goes nowhere; the final line or the summary is printed below
        result = run(cfg, console=None if output == "text" else Console(quiet=True),
                     study_suffix=suffix)
        if output == "quiet" and result.final_line:
            terminal().print(result.final_line, soft_wrap=True)
        elif output == "json":
            print(json.dumps(result.summary(), default=str), flush=True)
        if result.outcome is not None and result.outcome.interrupted:
            fail(f"interrupted ({result.outcome.stopped_by}): the finished trials are kept and "
                 "the best model so far is registered; fix: run the same command again to "
                 "resume", code=130)
    except ArchselectError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except Exception as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        fail(f"unexpected {type(exc).__name__}: {first} (run again with HYDRA_FULL_ERROR=1 "
             "for the traceback)", code=1)


#: Hydra's entry: flags (``--cfg``, ``--info``), sweeps (``-m``) and ``hydra.*`` keys
_main = hydra.main(version_base="1.3", config_path="conf", config_name="config")(_run)


#: the stack ``--version`` names beside archselect's own version
STACK = ("torch", "lightning", "optuna", "mlflow", "hydra-core", "torchmetrics")


def version_line() -> str:
    """archselect's version and the installed stack's (read from package metadata: nothing
    heavy is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from archselect import __version__

    found = []
    for name in STACK:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"archselect {__version__} ({', '.join(found)})"


def help_text() -> str:
    """``archselect --help``: usage, the table's rows and their candidates, the most useful
    overrides, examples, where results go (read from the packaged table; nothing heavy is
    imported). Hydra's own config dump stays behind ``--hydra-help`` and ``--cfg job``."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    table = OmegaConf.load(str(files("archselect.conf") / "selector" / "default.yaml")).table
    rows = [f"  {name:<28} {row.description}: {', '.join(row.candidates)}"
            + ("" if row.available else "  (not available)") for name, row in table.items()]
    return "\n".join([
        "usage: archselect [task=<row>] [data=<set>] [key=value ...]",
        "       archselect -m key=a,b ...        a grid of studies (Hydra multirun), one per value",
        "       archselect --version",
        "",
        "Profiles your data and machine, picks candidate architectures for the task, tunes them",
        "with Optuna, trains every trial with Lightning, logs to MLflow and registers the best model.",
        "",
        "Tasks (task=<row>: what it does: candidates, simple -> recommended):",
        *rows,
        "",
        "Most useful overrides:",
        "  data=csv data.path=FILE data.target=COL   your own table / texts (data=image_folder,",
        "                                            audio_folder, pairs, yolo, coco: folders, pairs)",
        "  search.n_trials=N search.timeout=SECONDS  the budget (trials in the study; seconds now)",
        "  selector.candidates=[a,b]                 only these architectures, in this order",
        "  dry_run=true                              the selection report only; nothing is trained",
        "  search.study_name=NAME                    name a study (the same name resumes it)",
        "  output=quiet | output=json                the final line only | one JSON summary",
        "  search.storage=postgresql://... tracking.uri=http://...",
        "                                            one study across commands and machines",
        "                                            (archselect-cluster up starts both locally)",
        "",
        "Examples:",
        "  archselect task=text_classification",
        "  archselect task=tabular_classification data=csv data.path=churn.csv data.target=churned",
        "  archselect task=image_classification data=image_folder data.path=~/photos dry_run=true",
        "  archselect -m task=tabular_classification search.n_trials=10,20",
        "",
        "Results: runs/ (runs_dir=...): runs/mlflow.db (MLflow; `make ui` or `mlflow ui",
        "--backend-store-uri sqlite:///runs/mlflow.db`), runs/optuna.db (the studies); the best",
        "model is registered as archselect-<task> with the alias @champion. Every key and its",
        "default: archselect --cfg job (or --hydra-help). Errors print one line; HYDRA_FULL_ERROR=1",
        "shows the traceback.",
    ])


def main() -> None:
    """Console-script entry point."""
    if "--version" in sys.argv[1:] or "-V" in sys.argv[1:]:
        print(version_line())
        return
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(help_text())
        return
    # Passwords in URLs go to environment variables before Hydra records the command line.
    sys.argv[1:] = hide_secrets(sys.argv[1:])
    cfg, problem = checked(sys.argv[1:])
    if problem:
        fail(problem)
    if cfg is not None:
        # Overrides only: the config just checked is what Hydra would compose again (twice:
        # once for its run mode, once for the run), with nothing else to do (no output folder,
        # no logging set-up: conf/config.yaml's hydra node).
        _run(cfg)
    else:
        _main()
    if _failed_jobs:  # a sweep runs every job, then says which failed
        print(f"archselect: error: {len(_failed_jobs)} multirun job(s) failed: "
              f"{', '.join(_failed_jobs)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
