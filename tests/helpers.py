"""What tests share: the real config composed with cheap overrides, the real command in a
subprocess, data modules from a plain ``data`` node, and the selector on a composed config.

Test files import from here (never from each other); ``conftest.py`` turns these into fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from archselect.config.compose import compose_config
from archselect.config.validate import typed
from archselect.data.base import BaseDataModule, DataSpec, open_datamodule
from archselect.hardware import HardwareProfile
from archselect.selector import Selection, resolve_task, select

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # tests never touch the network

# Small and fast, but real: the built-in data, real stores, real training.
TEXT_ONLY = ["data.max_samples=450", "data.vocab_size=2000"]
# The networks are what most tests train and serve; the text, forecasting and tabular rows would
# register their reference when it wins on validation (tests/test_final.py has that).
NETWORKS_ONLY = "selector.register_references=false"
CHEAP = [
    NETWORKS_ONLY,
    "search.max_epochs=2",
    "search.patience=1",
    "trainer.progress_bar=false",
    # One validation split: cross-validation multiplies every trial (tests/test_final.py has it)
    "selector.rules.cross_validation.max_samples=0",
    "selector.rules.small_data.min_train_samples=50",
    "arch.lstm.model.hidden_size=32",
    "arch.lstm.model.embed_dim=32",
    "arch.lstm.space.hidden_size.low=32",
    "arch.lstm.space.hidden_size.high=64",
    "arch.lstm.space.hidden_size.step=32",
    "arch.lstm.space.embed_dim.choices=[32,64]",
    "arch.transformer.model.d_model=32",
    "arch.transformer.model.dim_feedforward=64",
    "arch.transformer.space.d_model.choices=[32,64]",
]
CPU = HardwareProfile(cpu_cores=2, torch_threads=2, memory_gb=8.0)


# One process per study unless a test asks for more: trial numbers and order are then what the
# test expects, and the test runner's own processes already share the cores. (The default, null,
# lets the selector run a trial per core for small models: tests/test_selector.py.)
ONE_WORKER = "search.n_workers=1"
# No pruning: whether a trial is pruned depends on which trials ended before its epochs, which
# differs from run to run when several processes share a study.
NO_PRUNING = ["~search.pruner.n_startup_trials", "~search.pruner.n_warmup_steps",
              "search.pruner._target_=optuna.pruners.NopPruner"]
# Tabular trials of a few seconds each on iris (only the MLP, 300 epochs, no pruning or early
# stop): a second worker process, which needs seconds to start, joins while the first is busy.
STEADY_TRIALS = ["selector.candidates=[mlp]", "search.max_epochs=300", "search.patience=300",
                 *NO_PRUNING]


def compose_cfg(overrides: list[str], tmp_path: Path, cheap: bool = True) -> Any:
    """The real config, composed as the CLI would, with stores under ``tmp_path``."""
    text = not any(o.startswith("task=") and o != "task=text_classification" for o in overrides)
    base = ([*CHEAP, *TEXT_ONLY] if text else CHEAP) if cheap else []
    return compose_config([ONE_WORKER, *base, f"runs_dir={tmp_path}", *overrides])


def archselect(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """The real command (``python -m archselect``) in a subprocess, without HYDRA_FULL_ERROR."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "archselect", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command that failed with exit code 2, without a traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def datamodule(kind: str, node: dict[str, Any], cache_dir: Path | str, seed: int = 0,
               target_kind: str | None = None) -> BaseDataModule:
    """The data module of ``kind`` for a plain ``data`` node, checked as a run checks it."""
    default = {"series": "forecast"}.get(kind, "classes")
    return open_datamodule(node, kind, seed=seed, cache_dir=cache_dir,
                           target_kind=target_kind or default)


def config_datamodule(cfg: Any, cache_dir: Path | str) -> BaseDataModule:
    """The data module a run of the composed ``cfg`` reads."""
    from archselect.run import open_data
    from archselect.tasks import families

    conf = typed(cfg)
    task = resolve_task(conf.task, conf.selector.table)
    return open_data(conf, task.data_kind, families.get(task.family), Path(cache_dir))


def select_for(cfg: Any, spec: DataSpec, hw: HardwareProfile = CPU) -> Selection:
    """What the selector picks for the composed ``cfg``, this data and this machine."""
    conf = typed(cfg)
    task = resolve_task(conf.task, conf.selector.table)
    return select(task, conf.selector, conf.arch, conf.search.max_epochs, spec, hw,
                  n_workers=conf.search.n_workers, threads=conf.search.threads,
                  n_trials=conf.search.n_trials, deterministic=conf.trainer.deterministic)


def mlflow_models_predict(store: str, uri: str, request: Path) -> pd.DataFrame:
    """``mlflow models predict -i <request> --env-manager local`` (``-t csv`` or ``json`` by the
    request's suffix) against the tracking store ``store``; its predictions as a DataFrame."""
    out = request.with_suffix(".cli.json")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mlflow")), "models", "predict", "-m", uri,
         "-i", str(request), "-t", request.suffix.lstrip("."), "-o", str(out),
         "--env-manager", "local"],
        env={**os.environ, "MLFLOW_TRACKING_URI": store}, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.DataFrame(json.loads(out.read_text())["predictions"])
