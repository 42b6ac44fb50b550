"""After the search: test the best trial, log and register it, move the champion alias, export.

Also the study's pictures that need the finished study (Optuna's history, importances, parallel
coordinates) and the family's and data kind's pictures of the test split.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from archselect import report
from archselect.config.errors import ArchselectError
from archselect.config.schema import ExportConfig, TrackingConfig
from archselect.data.base import BaseDataModule
from archselect.hardware import HardwareProfile
from archselect.search.trials import TrialRecord
from archselect.tracking import Tracker


@dataclass
class Finished:
    """What the finish step found and where it put the model."""

    test_metrics: dict[str, float] = field(default_factory=dict)
    baseline_name: str = ""
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    model_version: int | None = None
    champion: str = ""
    onnx_uri: str | None = None


def finish(best: TrialRecord, *, dm: BaseDataModule, hw: HardwareProfile, tracker: Tracker,
           console: Console, family_cls: Any, monitor: str, direction: str,
           tracking: TrackingConfig, export: ExportConfig) -> Finished:
    """Test the best trial's checkpoint, log and register it as a pyfunc model.

    Args:
        best: the best trial of the study.
        dm: the prepared data.
        hw: the hardware profile (accelerator, precision).
        tracker: the study's MLflow writer (its parent run open).
        console: where lines go.
        family_cls: the task family's LightningModule class.
        monitor: ``task.monitor``; the champion compares the family's test metric, or this one.
        direction: ``task.direction``, used when the family declares no test direction.
        tracking: ``tracking`` (model name, registration, champion alias).
        export: ``export`` (ONNX).
    """
    import lightning.pytorch as pl
    import matplotlib.pyplot as plt
    import torch
    from mlflow.models import infer_signature

    from archselect.architectures import architectures
    from archselect.serving import ServedModel, pip_requirements

    if not best.checkpoint or not Path(best.checkpoint).is_file():
        raise ArchselectError(
            f"finish: the checkpoint of best trial {best.number} is missing ({best.checkpoint}); "
            "fix: keep runs_dir/checkpoints, or start a new study (search.study_name=...)"
        )
    done = Finished()
    module = family_cls.load_from_checkpoint(best.checkpoint, map_location="cpu")
    hp = module.hparams
    resolve = architectures.meta(hp["arch"]).get("resolve")
    dm.for_trial(resolve(hp["arch_kwargs"]) if resolve else None, batch_size=128, num_workers=0)
    trainer = pl.Trainer(accelerator=hw.accelerator, devices=1,
                         precision=hw.precision,  # type: ignore[arg-type]
                         logger=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs: Any = trainer.predict(module, dataloaders=dm.test_dataloader())
    preds = torch.cat([o["preds"] for o in outputs])
    targets = torch.cat([o["targets"] for o in outputs])
    spec = module.spec
    done.test_metrics = family_cls.evaluate(preds, targets, spec)
    own = dm.baseline("test")  # e.g. seasonal naive, which needs the series' history
    done.baseline_name, trivial = own if own is not None else family_cls.trivial(
        dm.targets("train"), len(targets), spec)
    done.baseline_metrics = family_cls.evaluate(trivial, targets, spec)
    report.print_test(console, best, done.test_metrics, done.baseline_name,
                      done.baseline_metrics)
    parent = tracker.parent_id
    assert parent is not None
    tracker.log_metrics(parent, {
        **{f"test_{k}": v for k, v in done.test_metrics.items()},
        **{f"baseline_test_{k}": v for k, v in done.baseline_metrics.items()},
        f"best_{monitor}": float(best.value or 0.0), "best_trial": best.number,
    })
    tracker.set_tags(parent, {"archselect.best_arch": best.arch,
                              "archselect.best_trial": best.number,
                              "archselect.baseline": done.baseline_name})
    metric = family_cls.test_metric or monitor.removeprefix("val_")
    metric_direction = family_cls.test_direction or direction
    worse = _worse_than_baseline(done, metric, metric_direction)
    if worse:
        tracker.set_tags(parent, {"archselect.warning": worse})
        console.print(f"[bold yellow]Warning[/]: {worse}", soft_wrap=True)
    figures = {**family_cls.figures(preds, targets, spec), **dm.extra_figures(preds, targets)}
    for name, fig in figures.items():
        tracker.log_figure(fig, name)
        plt.close(fig)

    with tempfile.TemporaryDirectory() as tmp:
        bundle = dm.serving_bundle(best.checkpoint, Path(tmp))
        # Classifiers answer params={"probabilities": "all"} with every class's probability.
        params = {"probabilities": "top"} if bundle.codec.class_names else None
        with warnings.catch_warnings(record=True):  # MLflow's hint on integer columns
            signature = infer_signature(bundle.input_example, bundle.output_example,
                                        params=params)
        if bundle.input_schema is not None:
            signature.inputs = bundle.input_schema
        # A rerun of a finished (or half-finished) study finds the version it registered.
        found = (tracker.registered_version(tracking.model_name, parent, best.number)
                 if tracking.register else None)
        if found is not None:
            done.model_version = found
            done.model_uri = f"models:/{tracking.model_name}/{found}"
            console.print(f"Model: version {found} of {tracking.model_name} already holds trial "
                          f"{best.number} of this study; not registered again", soft_wrap=True)
        else:
            with console.status("Logging and registering the best model..."):
                done.model_uri, done.model_version = tracker.log_model(
                    ServedModel(family_cls, bundle.codec),
                    artifacts={"checkpoint": best.checkpoint, **bundle.artifacts},
                    signature=signature, input_example=bundle.input_example,
                    code_paths=[str(Path(__file__).parent)], pip_requirements=pip_requirements(),
                    register_as=tracking.model_name if tracking.register else None,
                    trial=best.number,
                )
    if done.model_version is not None:
        done.champion = _crown(tracker, tracking, done, metric, metric_direction, spec.data_hash)
        tracker.set_tags(parent, {"archselect.champion": done.champion})
        console.print(f"Champion: {done.champion}", soft_wrap=True)
    if export.onnx:
        done.onnx_uri = _export_onnx(module, dm, tracker, console, export.onnx_tolerance)
    return done


def _worse_than_baseline(done: Finished, metric: str, direction: str) -> str | None:
    """A line when the best model's test metric trails the baseline's, else None."""
    value, base = done.test_metrics.get(metric), done.baseline_metrics.get(metric)
    if value is None or base is None:
        return None
    worse = value < base if direction == "maximize" else value > base
    if not worse:
        return None
    return (f"the best model's test {metric} {value:.4f} is worse than the {done.baseline_name}'s "
            f"{base:.4f}; it is registered all the same: check the data (a target with little to "
            "learn?) and the budgets (search.n_trials, search.max_epochs)")


def _crown(tracker: Tracker, tracking: TrackingConfig, done: Finished, metric: str,
           direction: str, data_hash: str) -> str:
    """Move the champion alias to the new version only if it beats the holder on the same split."""
    if metric not in done.test_metrics:
        return (f"{tracking.champion_alias} not considered: the test metrics "
                f"({', '.join(done.test_metrics)}) have no {metric!r}")
    return tracker.update_champion(
        tracking.model_name, int(done.model_version or 0), alias=tracking.champion_alias,
        metric=metric, value=done.test_metrics[metric], direction=direction, data_hash=data_hash)


def _export_onnx(module: Any, dm: BaseDataModule, tracker: Tracker, console: Console,
                 tolerance: float) -> str | None:
    """``export.onnx=true``: the best model as ONNX, checked with onnxruntime, logged next to the
    pyfunc. An architecture that cannot be exported is said in one line, not skipped silently."""
    from importlib.metadata import version

    from archselect.export import export_onnx

    parent = tracker.parent_id
    assert parent is not None
    arch = str(module.hparams["arch"])
    inputs = next(iter(dm.test_dataloader()))["inputs"]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = export_onnx(module, inputs, Path(tmp) / "model.onnx", tolerance)
        except RuntimeError as exc:
            line = f"export.onnx: the best model ({arch}) was not exported: {exc}"
            tracker.set_tags(parent, {"archselect.onnx": line})
            tracker.log_text(line + "\n", "onnx/NOT_EXPORTED.txt")
            console.print(f"[yellow]{line}[/]", soft_wrap=True)
            return None
        uri = tracker.log_onnx(done.path, input_example=done.example, signature=done.signature(),
                               pip_requirements=[f"onnx=={version('onnx')}",
                                                 f"onnxruntime=={version('onnxruntime')}"])
    line = (f"ONNX model logged at {uri} (inputs {', '.join(done.input_names)}; onnxruntime "
            f"matches PyTorch within {done.max_abs_diff:.1e})")
    tracker.set_tags(parent, {"archselect.onnx": line})
    tracker.log_metrics(parent, {"onnx_max_abs_diff": done.max_abs_diff})
    console.print(line, soft_wrap=True)
    return uri


def log_optuna_plots(tracker: Tracker, study: Any) -> None:
    """Optuna's history, parameter importances and parallel coordinates: each as a PNG
    (matplotlib), and all three on one interactive, self-contained HTML page (plotly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as ovp
    from optuna.visualization import matplotlib as ovm

    plots: dict[str, tuple[Any, Any]] = {
        "history": (ovm.plot_optimization_history, ovp.plot_optimization_history),
        "param_importances": (ovm.plot_param_importances, ovp.plot_param_importances),
        "parallel_coordinate": (ovm.plot_parallel_coordinate, ovp.plot_parallel_coordinate),
    }
    sections: list[str] = []
    for name, (png, html) in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = png(study)
                # plotly.js is embedded once, with the first plot: the page works offline.
                sections.append(html(study).to_html(include_plotlyjs=not sections,
                                                    full_html=False))
            fig: Any = ax.figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            tracker.log_figure(fig, f"optuna/{name}.png")
            plt.close(fig)
        except Exception as exc:  # e.g. too few completed trials: say so instead of a picture
            tracker.log_text(f"not drawn: {exc}\n", f"optuna/{name}.txt")
    if sections:
        tracker.log_text("<!doctype html><html><head><meta charset='utf-8'><title>Optuna plots"
                         "</title></head><body>" + "".join(sections) + "</body></html>\n",
                         "optuna/plots.html")
