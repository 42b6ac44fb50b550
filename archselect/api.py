"""The Python API: the command's study from a notebook or a script, one code path with the CLI.

    import archselect
    result = archselect.fit("tabular_classification", data=df, target="species")
    result.leaderboard            # a DataFrame: every trial and the reference
    result.predict(new_rows)      # the registered model, loaded from MLflow
    archselect.select("text_classification", data="reviews.csv", target="stars",
                      text_column="review")   # the selection report as data, nothing trained

``data`` is a DataFrame (written once to ``<runs_dir>/inputs/<hash>.csv``, so that the study, its
data hash and its resume work as for a file), a path (a CSV / JSON-lines file, or a folder of
images or sound files), or None for the row's built-in data. Keyword arguments become
``data.<key>=<value>``; ``overrides`` are the command's ``key=value`` strings. The config is
composed and checked exactly as the command does: a mistake raises ``ArchselectError`` with the
command's one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from archselect.config.errors import ArchselectError

#: the data group a path is read with, by the row's data kind (a folder) or the file's suffix
FOLDER_SOURCE = {"image": "image_folder", "image_generation": "image_folder",
                 "audio": "audio_folder", "detection": "yolo"}
FILE_SOURCE = {"text_pairs": "pairs"}


def _data_overrides(task: str, data: Any, target: str | None, runs_dir: Path,
                    keys: dict[str, Any]) -> list[str]:
    """The ``data=...`` overrides for what the caller handed over."""
    from archselect.config.compose import compose_config
    from archselect.config.validate import check_row
    from archselect.hashing import stable_hash

    out: list[str] = []
    if data is not None:
        cfg = compose_config([f"task={task}"])
        kind = check_row(task, cfg.selector.table).data_kind
        if isinstance(data, pd.DataFrame):
            folder = runs_dir / "inputs"
            folder.mkdir(parents=True, exist_ok=True)
            text = data.to_csv(index=False)
            path = folder / f"{stable_hash(text)[:16]}.csv"
            if not path.is_file():
                path.write_text(text)
        else:
            path = Path(str(data)).expanduser()
        if path.is_dir():
            group = FOLDER_SOURCE.get(kind)
            if group is None:
                raise ArchselectError(f"data: {task} reads a file, not a folder; given "
                                      f"{str(data)!r}; fix: give a CSV or JSON-lines file")
            if kind == "detection" and (path / "annotations.json").is_file():
                group = "coco"
        else:
            group = FILE_SOURCE.get(kind, "jsonl" if path.suffix.lower() in (".jsonl", ".json")
                                    else "csv")
        out += [f"data={group}", f"data.path={path}"]
    if target is not None:
        out.append(f"data.target={target}")
    out += [f"data.{k}={_value(v)}" for k, v in keys.items()]
    return out


def _value(v: Any) -> str:
    """A Python value as a Hydra override's value."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list | tuple):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return "null" if v is None else str(v)


def _compose(task: str, data: Any, target: str | None, overrides: list[str] | None,
             runs_dir: str | Path, keys: dict[str, Any]) -> Any:
    from archselect.config.compose import checked, compose_config
    from archselect.secrets import hide_secrets

    root = Path(runs_dir).expanduser().resolve()
    args = hide_secrets([f"task={task}", f"runs_dir={root}",
                         *_data_overrides(task, data, target, root, keys), *(overrides or [])])
    cfg, problem = checked(args)
    if problem:
        raise ArchselectError(problem)
    return cfg if cfg is not None else compose_config(args)


@dataclass
class Result:
    """What ``fit`` found: the study's figures, its leaderboard and the registered model."""

    run: Any
    tracking_uri: str
    model_name: str
    _model: Any = field(default=None, repr=False)

    @property
    def model_uri(self) -> str | None:
        """The registered model's URI (``models:/<name>/<version>``), or the run's model."""
        return self.run.model_ref

    @property
    def run_id(self) -> str | None:
        """The study's parent run in MLflow."""
        return self.run.parent_run_id

    @property
    def test_metrics(self) -> dict[str, float]:
        return dict(self.run.test_metrics)

    @property
    def leaderboard(self) -> pd.DataFrame:
        """Every trial (number, architecture, state, validation value, seconds, epochs, its
        hyperparameters) best first, and the reference as a row of its own."""
        from archselect.selector import Selection

        outcome = self.run.outcome
        sel: Selection = self.run.selection
        rows = [{"trial": r.number, "architecture": r.arch, "state": r.state,
                 sel.task.monitor: r.value, "seconds": round(r.duration_s, 1),
                 "epochs": r.epochs, "params": dict(r.params)}
                for r in (outcome.records if outcome is not None else [])]
        frame = pd.DataFrame(rows, columns=["trial", "architecture", "state", sel.task.monitor,
                                            "seconds", "epochs", "params"])
        ascending = sel.task.direction == "minimize"
        frame = frame.sort_values(sel.task.monitor, ascending=ascending, na_position="last")
        return frame.reset_index(drop=True)

    @property
    def model(self) -> Any:
        """The registered model as an MLflow pyfunc (loaded once)."""
        if self._model is None:
            import mlflow

            if self.model_uri is None:
                raise ArchselectError("result.model: the study registered no model (a dry run, "
                                      "or no trial finished); fix: run fit again with a budget")
            mlflow.set_tracking_uri(self.tracking_uri)
            self._model = mlflow.pyfunc.load_model(self.model_uri)
        return self._model

    def predict(self, frame: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The registered model's answer for ``frame`` (rows as the training data had them)."""
        return self.model.predict(frame, params=params)


def fit(task: str, data: Any = None, *, target: str | None = None,
        overrides: list[str] | None = None, runs_dir: str | Path = "runs",
        **data_keys: Any) -> Result:
    """Run the study ``archselect task=<task> ...`` would run, and return its Result.

    Args:
        task: the table's row (``tabular_classification``, ``text_classification``, ...).
        data: a DataFrame, a path (file or folder), or None for the row's built-in data.
        target: the column to predict (``data.target``).
        overrides: further ``key=value`` strings, as on the command line.
        runs_dir: where the stores go (``runs/`` by default, as for the command).
        **data_keys: ``data.<key>`` settings (``text_column="review"``, ``horizon=12``).

    Raises:
        ArchselectError: with the command's one-line message, for anything the user can fix.
    """
    from archselect.run import run

    cfg = _compose(task, data, target, overrides, runs_dir, data_keys)
    return Result(run=run(cfg), tracking_uri=str(cfg.tracking.uri),
                  model_name=str(cfg.tracking.model_name))


def select(task: str, data: Any = None, *, target: str | None = None,
           overrides: list[str] | None = None, runs_dir: str | Path = "runs",
           **data_keys: Any) -> dict[str, Any]:
    """The dry run's selection as data: the candidates (with their reasons and search spaces),
    those dropped and why, and the notes; nothing is trained or written to the stores."""
    from archselect.run import run

    cfg = _compose(task, data, target, [*(overrides or []), "dry_run=true"], runs_dir,
                   data_keys)
    found = run(cfg)
    return {**found.selection.to_dict(), "profile": dict(found.spec.profile),
            "hardware": {"accelerator": found.hardware.accelerator,
                         "cpu_cores": found.hardware.cpu_cores}}
