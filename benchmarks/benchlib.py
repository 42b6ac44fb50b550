"""What every benchmark shares: the machine line, composing the real config, timing probes,
cProfile summaries and the JSON files under ``benchmarks/results/``.

The benchmarks run archselect's own ``run(cfg)`` on real data with real stores in a temporary
folder; nothing here replaces a component, the probes only time calls on their way through.
"""

from __future__ import annotations

import contextlib
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Torch threads for every benchmark (and the processes it starts); unset: torch's default.
THREADS_ENV = "ARCHSELECT_BENCH_THREADS"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Every study a benchmark runs gets these: no bars in logs, nothing registered by accident.
QUIET = ["trainer.progress_bar=false"]
#: one fit per trial and nothing after the search but the test: what the trial-cost benchmarks
#: time (no cross-validation, refit, ensemble or reference model)
ONE_FIT = ["selector.rules.cross_validation=null", "search.refit=false",
           "search.ensemble_rounds=0"]


def machine() -> dict[str, Any]:
    """Cores, torch threads, device, load average and versions: printed and stored with results.

    Sets torch's threads first where ``ARCHSELECT_BENCH_THREADS`` asks for a number."""
    import lightning
    import mlflow
    import optuna
    import torch

    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
        os.environ["OMP_NUM_THREADS"] = os.environ[THREADS_ENV]  # for the processes started
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    device = (f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu")
    return {
        "when_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "device": device, "cpu": cpu,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "torch": torch.__version__,
        "lightning": lightning.__version__, "optuna": optuna.__version__,
        "mlflow": mlflow.__version__,
    }


def print_machine(info: dict[str, Any]) -> None:
    print(f"machine: {info['usable_cores']}/{info['cores']} cores, torch threads "
          f"{info['torch_threads']}, device {info['device']} ({info['cpu']}); load average "
          f"{' '.join(map(str, info['load_average']))} at {info['when_utc']}", flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def compose(overrides: list[str], runs_dir: Path) -> Any:
    """The real config, composed as the ``archselect`` command would, stores under ``runs_dir``.

    The study runs in this process with this process's torch threads (one worker: the probes
    see every trial, and a plain loop beside it gets the same threads); the selector's own
    choice of workers and threads is what benchmarks/workers.py measures."""
    import torch

    from archselect.config.compose import compose_config

    return compose_config([*QUIET, "search.n_workers=1", f"search.threads={torch.get_num_threads()}",
                           f"runs_dir={runs_dir}", *overrides])


def run_study(overrides: list[str], runs_dir: Path) -> Any:
    """``archselect.run.run`` on the composed config; the terminal output is kept, not shown."""
    from rich.console import Console

    from archselect.run import run

    cfg = compose(overrides, runs_dir)
    out = io.StringIO()
    # MLflow's hint about type hints on predict() (the signature is set explicitly) is noise here.
    warnings.filterwarnings("ignore", message=".*Add type hints to the .predict. method.*")
    result = run(cfg, console=Console(file=out, width=140))
    result.console_text = out.getvalue()
    return result


def study_summary(overrides: list[str]) -> dict[str, Any]:
    """Run one study in a temporary folder; what it found and what it cost."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_study(overrides, Path(tmp))
        wall = time.perf_counter() - start
    best = result.outcome.best
    records = result.outcome.records
    return {"test": {k: round(v, 4) for k, v in result.test_metrics.items()},
            "best_arch": best.arch, "best_val": round(float(best.value), 4),
            "trials": len(records), "epochs": sum(r.epochs for r in records),
            "by_state": {s: sum(r.state == s for r in records) for s in ("COMPLETE", "PRUNED", "FAIL")},
            "archs_tried": sorted({r.arch for r in records}),
            "study_s": round(result.outcome.elapsed_s, 2), "command_s": round(wall, 2)}


def datamodule(cfg: Any) -> Any:
    """The data module ``run`` would build for ``cfg`` (same seed, so the same split), prepared."""
    from archselect.config.validate import typed
    from archselect.data import open_datamodule
    from archselect.selector import resolve_task
    from archselect.tasks import families

    conf = typed(cfg)
    task = resolve_task(conf.task, conf.selector.table)
    family = families.get(task.family)
    dm = open_datamodule(conf.data, task.data_kind, seed=conf.seed,
                         cache_dir=Path(conf.runs_dir) / "cache", target_kind=family.target_kind)
    dm.prepare()
    return dm, family


class Probe:
    """Times calls by category on their way through (the originals run unchanged).

    A category counts only its outermost call, so nested calls are not counted twice. A wrap
    with ``region=`` names a region (e.g. ``"fit"``); every call is filed under the innermost
    region running when it starts (``"outside"`` when none).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.calls: dict[str, int] = defaultdict(int)
        self.depth: dict[str, int] = defaultdict(int)
        self.regions: list[str] = []
        self.after: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self._undo: list[tuple[Any, str, Any]] = []
        self._profiles: list[tuple[cProfile.Profile, dict[str, Any]]] = []

    def wrap(self, owner: Any, attr: str, category: str, *, region: str | None = None) -> None:
        original = owner.__dict__[attr]
        probe = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            outer = probe.depth[category] == 0
            probe.depth[category] += 1
            where = probe.regions[-1] if probe.regions else "outside"
            if region and outer:
                probe.regions.append(region)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                probe.depth[category] -= 1
                if outer:
                    probe.seconds[category][where] += time.perf_counter() - start
                    probe.calls[category] += 1
                    if region:
                        probe.regions.pop()
                    for hook in probe.after[category]:
                        hook()

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def profile(self, owner: Any, attr: str, sink: dict[str, Any]) -> None:
        """Run every call of ``owner.attr`` under cProfile; ``sink`` gets the summary on exit."""
        original = owner.__dict__[attr]
        prof = cProfile.Profile()

        def profiled_call(*args: Any, **kwargs: Any) -> Any:
            prof.enable()
            try:
                return original(*args, **kwargs)
            finally:
                prof.disable()

        setattr(owner, attr, profiled_call)
        self._undo.append((owner, attr, original))
        self._profiles.append((prof, sink))

    def total(self, category: str) -> float:
        return sum(self.seconds[category].values()) if category in self.seconds else 0.0

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()
        for prof, sink in self._profiles:
            with contextlib.suppress(TypeError):  # nothing was profiled
                sink.update(summarise_profile(pstats.Stats(prof)))
        self._profiles.clear()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def package_of(filename: str) -> str:
    """The top-level package a profiled function lives in (``torch``, ``lightning``, ...)."""
    if filename.startswith("<") or filename == "~":
        return "python (builtins)"
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1:]
            name = rest[0] if rest else "?"
            return name.removesuffix(".py").split(".")[0] if name.endswith(".py") else name
    if "archselect" in parts:
        return "archselect"
    if "benchmarks" in parts:
        return "benchmark"
    return "python (stdlib)"


def summarise_profile(stats: pstats.Stats, top: int = 12) -> dict[str, Any]:
    """Where the time goes: own time by package, the functions with the most own time, and
    archselect's own functions by cumulative time (its steps, with what they call)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_package: dict[str, float] = defaultdict(float)
    rows, ours = [], []
    total = imports = 0.0
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        package = package_of(filename)
        by_package[package] += tottime
        total += tottime
        short = "/".join(Path(filename).parts[-2:]) if not filename.startswith("<") else filename
        row = {"function": f"{short}:{line}({name})", "calls": ncalls,
               "own_s": round(tottime, 3), "cumulative_s": round(cumtime, 3)}
        rows.append(row)
        if package == "archselect":
            ours.append(row)
        if name == "_find_and_load":  # the import system: cumulative time is all imports
            imports = max(imports, cumtime)
    rows.sort(key=lambda r: -r["own_s"])
    ours.sort(key=lambda r: -r["cumulative_s"])
    packages = sorted(by_package.items(), key=lambda kv: -kv[1])
    return {"total_s": round(total, 3), "imports_s": round(imports, 3),
            "by_package": [{"package": k, "own_s": round(v, 3),
                            "share": round(v / total, 4) if total else 0.0} for k, v in packages[:10]],
            "top_functions": rows[:top], "archselect_cumulative": ours[:top]}


@contextlib.contextmanager
def profiled(sink: dict[str, Any]) -> Iterator[None]:
    """cProfile the block; ``sink`` gets its summary."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        sink.update(summarise_profile(pstats.Stats(prof)))


def write_result(name: str, payload: dict[str, Any], info: dict[str, Any]) -> Path:
    """``benchmarks/results/<name>.json`` with the machine and the command that produced it."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"benchmark": name, "command": " ".join(["python", *sys.argv]),
              "machine": info, **payload}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def verdict(value: float, goal: float, higher_is_better: bool) -> dict[str, Any]:
    """Whether ``value`` meets ``goal`` and, if not, by how much (relative to the goal)."""
    met = value >= goal if higher_is_better else value <= goal
    return {"value": round(value, 4), "goal": goal, "met": bool(met),
            "missed_by": None if met else round(abs(value - goal) / goal, 4)}


def best_on_val(estimators: list[Any], x: dict[str, Any], y: dict[str, Any],
                maximize_f1: bool = True) -> Any:
    """Fit each scikit-learn estimator on the train split, keep the best on the validation split
    (macro-F1 for classes, lowest squared error for numbers); return its test predictions."""
    from sklearn.metrics import f1_score, mean_squared_error

    best: tuple[float, Any] | None = None
    for est in estimators:
        est.fit(x["train"], y["train"])
        pred = est.predict(x["val"])
        score = (f1_score(y["val"], pred, average="macro") if maximize_f1
                 else -mean_squared_error(y["val"], pred))
        if best is None or score > best[0]:
            best = (score, est)
    if best is None:
        raise ValueError("best_on_val needs at least one estimator")
    return best[1].predict(x["test"])
