"""The bad-input catalogue: each malformed config or data file gives one clear line and leaves the
stores as they were. (The README's troubleshooting table lists the same cases.)

Each case goes through what the command runs: the up-front check of the overrides
(``config.compose.precheck``), then ``run()``; the CLI prints either as ``archselect: error: <line>`` and
exits 2 (the subprocess cases at the end check that path for real).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import NETWORKS_ONLY, ONE_WORKER, archselect, compose_cfg, one_error_line

from archselect.config.compose import precheck
from archselect.config.errors import ArchselectError
from archselect.run import run

SECRET = "s3cret-pw"
IRIS = ["task=tabular_classification", "data=iris", ONE_WORKER, NETWORKS_ONLY, "search.n_trials=1",
        "search.max_epochs=1"]


def _csv(text: str | bytes) -> Callable[[Path], list[str]]:
    def write(folder: Path) -> list[str]:
        path = folder / "table.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["task=tabular_classification", "data=csv", f"data.path={path}",
                "data.target=label"]

    return write


def _rows(label: str, n: int = 12) -> str:
    return "a,b,label\n" + "".join(f"{i},{i * 2},{label if label else i % 2}\n" for i in range(n))


def _args(*args: str) -> Callable[[Path], list[str]]:
    return lambda folder: [*IRIS, *args]


def _runs_dir_is_a_file(folder: Path) -> list[str]:
    (folder / "plain.txt").write_text("not a folder\n")
    return [*IRIS, f"runs_dir={folder / 'plain.txt' / 'runs'}"]


# (id, the config or data, a fragment the one line must hold)
CATALOGUE: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("wrong-type", _args("search.n_trials=many"), "search.n_trials:"),
    ("wrong-type-bool", _args("trainer.deterministic=perhaps"), "trainer.deterministic:"),
    ("unknown-key", _args("search.n_trails=3"), "search.n_trails: unknown key"),
    ("unknown-task", lambda f: ["task=tabular_clasification"], "did you mean 'tabular_classification'"),
    ("negative-n-trials", _args("search.n_trials=-3"), "search.n_trials: must be at least 1"),
    ("negative-timeout", _args("search.timeout=-5"), "search.timeout: must be a positive number"),
    ("zero-trial-timeout", _args("search.trial_timeout=0"), "search.trial_timeout: must be a positive"),
    ("zero-max-failures", _args("search.max_failures=0"), "search.max_failures: must be at least 1"),
    ("zero-workers", _args("search.n_workers=0"), "search.n_workers: must be at least 1"),
    ("grace-shorter-than-heartbeat", _args("search.grace_period=5"),
     "search.grace_period: must be longer than search.heartbeat_interval"),
    ("low-above-high", _args("arch.mlp.space.lr.low=0.5"),
     "arch.mlp.space.lr.low: is greater than high"),
    ("unknown-sampler", _args("search.sampler._target_=optuna.samplers.NoSuchSampler"),
     "search.sampler._target_: cannot be created"),
    ("unknown-pruner", _args("search.pruner._target_=optuna.pruners.NoSuchPruner"),
     "search.pruner._target_: cannot be created"),
    ("unknown-architecture", _args("selector.candidates=[perceptron,mpl]"),
     "selector.candidates: unknown architecture 'mpl'"),
    ("unknown-precision", _args("trainer.precision=fp8"), "trainer.precision: unknown precision"),
    ("storage-not-a-url", _args("search.storage=optuna.db"), "search.storage: not a storage URL"),
    ("storage-unreachable", _args(f"search.storage=mysql+pymysql://alice:{SECRET}@127.0.0.1:1/db"),
     "search.storage: cannot open the study storage"),
    ("storage-not-writable", lambda f: [*_runs_dir_is_a_file(f)[:-1],
                                        f"search.storage=sqlite:///{f}/plain.txt/optuna.db"],
     "search.storage: its file cannot be written"),
    ("tracking-not-writable", _args("tracking.uri=sqlite:////proc/archselect/mlflow.db"),
     "tracking.uri: its folder cannot be created"),
    ("runs-dir-not-writable", _runs_dir_is_a_file, "runs_dir: is not a writable folder"),
    ("csv-missing", lambda f: ["task=tabular_classification", "data=csv",
                               f"data.path={f / 'nope.csv'}", "data.target=label"],
     "data.path: file not found"),
    ("csv-no-rows", _csv("a,b,label\n"), "no rows"),
    ("csv-one-class", _csv(_rows("x")), "has a single class 'x'"),
    ("csv-ragged-line", _csv("a,b,label\n1,2,x\n3,4,y,5,6\n"), "cannot parse"),
    ("csv-wrong-encoding", _csv("a,b,label\n1,2,caf\xe9\n".encode("latin-1")), "is not UTF-8 text"),
    ("csv-no-target-column", _csv(_rows("").replace("label", "kind")),
     "data.target: no such column in the data"),
    ("image-folder-missing", lambda f: ["task=image_classification", "data=image_folder",
                                        f"data.path={f / 'photos'}"], "data.path"),
    ("fraction-too-big", _args("data.val_fraction=0.9"), "data."),
]


def error_line(args: list[str], runs: Path) -> str:
    """What the command would print after ``archselect: error:``."""
    line = precheck([*args, f"runs_dir={runs}"] if not any(a.startswith("runs_dir=")
                                                           for a in args) else args)
    if line is not None:
        return line
    with pytest.raises(ArchselectError) as info:
        run(compose_cfg(args, runs, cheap=False))
    return str(info.value)


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CATALOGUE],
                         ids=[c[0] for c in CATALOGUE])
def test_bad_input_gives_one_clear_line_and_writes_nothing(tmp_path: Path, make: Callable,
                                                           expected: str) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    line = error_line(make(tmp_path), runs)
    assert "\n" not in line and expected in line, line
    assert SECRET not in line
    assert ("fix:" in line or "expected" in line or "did you mean" in line), line
    assert sorted(p.name for p in runs.iterdir()) in ([], ["cache"]), list(runs.iterdir())


@pytest.mark.parametrize("case", ["storage-unreachable"])
def test_the_command_prints_the_line_and_exits_2(tmp_path: Path, case: str) -> None:
    make, expected = next(c[1:] for c in CATALOGUE if c[0] == case)
    runs = tmp_path / "runs"
    proc = archselect(*make(tmp_path), f"runs_dir={runs}", cwd=tmp_path)
    line = one_error_line(proc)
    assert line.startswith("archselect: error: ") and expected in line
    assert SECRET not in proc.stdout + proc.stderr
    assert not (runs / "optuna.db").exists() and not (runs / "mlflow.db").exists()
