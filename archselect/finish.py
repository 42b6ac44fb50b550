"""After the search: choose the final model (the best trial, or a greedy ensemble of trials that
beats it on validation), train it again on train + val (refit), test it, log and register it, move
the champion alias, export.

Also the study's pictures that need the finished study (Optuna's history, importances, parallel
coordinates) and the family's and data kind's pictures of the test split.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from archselect import report
from archselect.architectures import architectures
from archselect.config.errors import ArchselectError
from archselect.config.schema import ExportConfig, TrackingConfig
from archselect.data.base import BaseDataModule, View
from archselect.ensemble import combine
from archselect.hardware import HardwareProfile
from archselect.references import Reference
from archselect.search.fit import Configuration, TrialSettings, fit, predict
from archselect.search.trials import StudyOutcome, TrialRecord
from archselect.selector import Selection
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
    #: what was tested and registered: ``trial 3 (mlp)`` or an ensemble's members and weights
    model_name: str = ""
    #: trial number -> weight of the final model's members (one member: weight 1)
    weights: dict[int, float] = field(default_factory=dict)
    refit: bool = False
    #: how the final model compares with the classical reference on the test split
    comparison: str = ""
    #: the decision rule's bias on the log-probabilities (imbalanced classes), if any
    bias: list[float] | None = None
    #: the output rule chosen on validation (e.g. the translation memory's fallback), in words
    output_rule: str = ""


@dataclass
class Member:
    """One trial of the final model: its record, weight and the checkpoint that is tested."""

    record: TrialRecord
    weight: float
    checkpoint: str
    refitted: bool = False


def finish(outcome: StudyOutcome, *, selection: Selection, dm: BaseDataModule,
           hw: HardwareProfile, tracker: Tracker, console: Console, family_cls: Any,
           settings: TrialSettings, tracking: TrackingConfig, export: ExportConfig,
           ensemble_rounds: int, reference: Reference | None = None,
           register_references: bool = False) -> Finished:
    """Choose the final model (the best trial, or an ensemble of trials that beats it on
    validation), train it again on train + val when the selection says so, test it, log and
    register it as a pyfunc model.

    Args:
        outcome: the search's outcome (its ranked trials).
        selection: the candidates (a refit rebuilds their configurations), folds and refit.
        dm: the prepared data.
        hw: the hardware profile (accelerator, precision).
        tracker: the study's MLflow writer (its parent run open).
        console: where lines go.
        family_cls: the task family's LightningModule class.
        settings: the trial settings (a refit trains as the trials did).
        tracking: ``tracking`` (model name, registration, champion alias).
        export: ``export`` (ONNX).
        ensemble_rounds: ``search.ensemble_rounds`` (0: no ensemble).
        reference: the row's classical reference (tested beside the final model), if any.
        register_references: ``selector.register_references``: the reference is registered
            instead when it beats the final model on validation.
    """
    import matplotlib.pyplot as plt
    import torch

    task = selection.task
    best = outcome.best
    assert best is not None
    parent = tracker.parent_id
    assert parent is not None
    ties = outcome.ties
    if ties:
        console.print(f"[bold yellow]Tie[/]: {ties}", soft_wrap=True)
        tracker.set_tags(parent, {"archselect.tie": ties})
    choice = _ensemble(outcome, best, selection, dm, family_cls, console, tracker,
                       ensemble_rounds)
    bias = None
    if selection.imbalanced:
        bias, line = decision_rule(choice, dm.prepare(), family_cls, task.monitor)
        console.print(f"Decision rule: {line}", soft_wrap=True)
        tracker.set_tags(parent, {"archselect.decision_rule": line})
    weights, val_value = choice.weights, choice.value
    by_number = {r.number: r for r in outcome.records}
    members = [Member(by_number[n], w, str(by_number[n].checkpoint or ""))
               for n, w in weights.items()]
    for m in members:
        if not m.checkpoint or not Path(m.checkpoint).is_file():
            raise ArchselectError(
                f"finish: the checkpoint of trial {m.record.number} is missing ({m.checkpoint}); "
                "fix: keep runs_dir/checkpoints, or start a new study (search.study_name=...)")
    done = Finished(weights=dict(weights), refit=selection.refit, bias=bias)
    done.model_name = (f"trial {best.number} ({best.arch})" if len(members) == 1 else
                       "ensemble of " + " + ".join(f"trial {m.record.number} ({m.record.arch}, "
                                                   f"{m.weight:.2f})" for m in members))
    # The reference is registered when it beats the chosen trials on validation: they are then
    # tested as searched (beside it, for the comparison), not trained again.
    served_reference = (reference if reference is not None and register_references
                        and _better(reference.val_value, val_value, task.direction) else None)
    if selection.refit and served_reference is None:
        for m in members:
            m.checkpoint, m.refitted = _refit(m.record, selection, dm, hw, family_cls, settings,
                                              console)
    done.refit = any(m.refitted for m in members)
    how = ("" if not done.refit else ", refitted on train + val"
           if all(m.refitted for m in members) else ", partly refitted on train + val")
    modules = [family_cls.load_from_checkpoint(m.checkpoint, map_location="cpu")
               for m in members]
    rule = None
    if choice.scores is not None and len(modules) == 1:
        # A rule over the outputs the data kind offers, chosen on the searched model's
        # validation predictions, read as that model reads its data.
        dm.for_trial(_option(modules[0]), batch_size=128, num_workers=0, **_data(modules[0]))
        rule = dm.output_rule(choice.scores, choice.targets, family_cls)
        if rule is not None:
            done.output_rule = rule[1]
            console.print(f"Output rule: {rule[1]}", soft_wrap=True)
            tracker.set_tags(parent, {"archselect.output_rule": rule[1]})
    tested = []
    for mod in modules:  # each with its own input pipeline (its tokenizer), rows in one order
        dm.for_trial(_option(mod), batch_size=128, num_workers=0, **_data(mod))
        tested.append(predict(mod, dm.ordered_loader("test"), hw))
    targets = tested[0].targets
    scores = combine({i: t.scores for i, t in enumerate(tested)},
                     {i: m.weight for i, m in enumerate(members)})
    if bias is not None:  # the decision rule chosen on validation
        scores = torch.softmax(torch.log(scores.clamp_min(1e-12)) + torch.tensor(bias), -1)
    preds = family_cls.decode_scores(scores)
    if rule is not None:  # chosen on validation (e.g. the translation memory's exact matches)
        preds = dm.apply_output_rule(preds, "test", rule[0])
    spec = modules[0].spec
    done.test_metrics = family_cls.evaluate(preds, targets, spec)
    own = dm.baseline("test")  # e.g. seasonal naive, which needs the series' history
    done.baseline_name, trivial = own if own is not None else family_cls.trivial(
        dm.targets("train"), len(targets), spec)
    done.baseline_metrics = family_cls.evaluate(trivial, targets, spec)
    metric = family_cls.test_metric or task.monitor.removeprefix("val_")
    metric_direction = family_cls.test_direction or task.direction
    if reference is not None:
        done.comparison = _compare(done.test_metrics, reference, metric, metric_direction,
                                   who=(f"the networks' best, {done.model_name},"
                                        if served_reference is not None else "the final model"))
        if served_reference is not None:
            console.print(f"Registered: the reference {reference.name} ({task.monitor} "
                          f"{reference.val_value:.4f} on validation) beats {done.model_name} "
                          f"({val_value:.4f}); selector.register_references=true registers it",
                          soft_wrap=True)
    report.print_test(console, done.model_name + how,
                      done.test_metrics, done.baseline_name, done.baseline_metrics,
                      reference.test_metrics if reference is not None else None)
    if done.comparison:
        console.print(f"Against the reference: {done.comparison}", soft_wrap=True)
    tracker.log_metrics(parent, {
        **{f"test_{k}": v for k, v in done.test_metrics.items()},
        **{f"baseline_test_{k}": v for k, v in done.baseline_metrics.items()},
        f"best_{task.monitor}": float(best.value or 0.0), "best_trial": best.number,
    })
    tracker.set_tags(parent, {"archselect.best_arch": best.arch,
                              "archselect.best_trial": best.number,
                              "archselect.final_model": done.model_name,
                              "archselect.refit": str(done.refit).lower(),
                              "archselect.baseline": done.baseline_name})
    if done.comparison:
        tracker.set_tags(parent, {"archselect.versus_reference": done.comparison})
    worse = _worse_than_baseline(done, metric, metric_direction)
    if worse:
        tracker.set_tags(parent, {"archselect.warning": worse})
        console.print(f"[bold yellow]Warning[/]: {worse}", soft_wrap=True)
    figures = {**family_cls.figures(preds, targets, spec), **dm.extra_figures(preds, targets)}
    for name, fig in figures.items():
        if isinstance(fig, str):  # a table (Markdown) rather than a picture
            tracker.log_text(fig, name)
            continue
        tracker.log_figure(fig, name)
        plt.close(fig)
    if served_reference is not None:
        assert reference is not None
        done.model_name = f"reference: {reference.name}"
        done.test_metrics = dict(reference.test_metrics)
        done.weights = {}
        tracker.set_tags(parent, {"archselect.final_model": done.model_name})
        _register(done, [], family_cls, dm, tracker, console, tracking, metric,
                  metric_direction, spec.data_hash, reference=reference)
        return done
    _register(done, members, family_cls, dm, tracker, console, tracking, metric,
              metric_direction, spec.data_hash, options=[_inputs(m) for m in modules])
    if export.onnx:
        if len(modules) == 1:
            done.onnx_uri = _export_onnx(modules[0], dm, tracker, console, export.onnx_tolerance)
        else:
            line = (f"export.onnx: the final model ({done.model_name}) was not exported: ONNX "
                    "export takes one network, not an ensemble; fix: search.ensemble_rounds=0")
            tracker.set_tags(parent, {"archselect.onnx": line})
            console.print(f"[yellow]{line}[/]", soft_wrap=True)
    return done


@dataclass
class Choice:
    """The final model's members and weights, its validation value, and (where the trials kept
    them) its validation scores and their targets."""

    weights: dict[int, float]
    value: float
    scores: Any = None
    targets: Any = None


def _ensemble(outcome: StudyOutcome, best: TrialRecord, selection: Selection,
              dm: BaseDataModule, family_cls: Any, console: Console, tracker: Tracker,
              rounds: int) -> Choice:
    """An ensemble of trials when greedy selection over their validation predictions beats the
    best trial on the same rows, else the best trial."""
    import torch

    from archselect.ensemble import combine, greedy_selection

    alone = Choice({best.number: 1.0}, float(best.value or 0.0))
    if not best.val_predictions or not Path(best.val_predictions).is_file():
        return alone
    reference = torch.load(best.val_predictions, weights_only=False)
    # The best trial's validation outputs choose the output rule even where nothing is mixed.
    alone.scores, alone.targets = reference["scores"], reference["targets"]
    if rounds <= 0 or not getattr(family_cls, "ensembles", True):  # detections: no average
        return alone
    task = selection.task
    scores = {best.number: reference["scores"]}
    for r in outcome.ranked():
        if r.number == best.number or not r.val_predictions or not Path(
                r.val_predictions).is_file():
            continue
        saved = torch.load(r.val_predictions, weights_only=False)
        if np.array_equal(saved["rows"], reference["rows"]):
            scores[r.number] = saved["scores"]
    if len(scores) < 2:
        return alone
    spec = dm.prepare()

    def metric(s: Any, t: Any) -> float:
        return float(family_cls.monitor_value(s, t, spec, task.monitor))

    found = greedy_selection(scores, reference["targets"], metric,
                             maximize=task.direction == "maximize", rounds=rounds,
                             best=best.number)
    parent = tracker.parent_id
    assert parent is not None
    tracker.log_metrics(parent, {f"ensemble_{task.monitor}": found.value,
                                 f"single_{task.monitor}": found.single})
    if len(found.weights) < 2:
        console.print(f"Ensemble: no mix of the {len(scores)} trials beats trial {best.number} "
                      f"alone on validation ({task.monitor} {found.single:.4f}); it is the model",
                      soft_wrap=True)
        return alone
    console.print(f"Ensemble: {found.describe()} reaches {task.monitor} {found.value:.4f} on "
                  f"validation, trial {best.number} alone {found.single:.4f} (greedy selection "
                  f"over {len(scores)} trials, {rounds} rounds); the ensemble is the model",
                  soft_wrap=True)
    tracker.set_tags(parent, {"archselect.ensemble": found.describe()})
    return Choice(found.weights, found.value, combine(scores, found.weights), reference["targets"])


#: prior corrections tried for macro-F1: scores divided by the class prior to this power
PRIOR_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)


def decision_rule(choice: Choice, spec: Any, family_cls: Any, monitor: str
                  ) -> tuple[list[float] | None, str]:
    """Imbalanced classes with macro-F1 monitored: the prior correction (class probabilities
    divided by the training prior to a power, picked on validation) that gives the best
    macro-F1, as a bias added to the final model's log-probabilities (None when no correction
    beats none; ``choice.value`` then holds the corrected value), and the line that says so."""
    import torch

    if choice.scores is None:
        return None, "no validation predictions were kept: the plain argmax decides"
    counts = spec.profile.get("balance", {}).get("counts", {})
    prior = torch.tensor([float(counts.get(c, 0)) for c in spec.class_names]).clamp_min(1.0)
    log_prior = torch.log(prior / prior.sum())
    log_p = torch.log(choice.scores.float().clamp_min(1e-12))

    def value(power: float) -> float:
        adjusted = torch.softmax(log_p - power * log_prior, -1)
        return float(family_cls.monitor_value(adjusted, choice.targets, spec, monitor))

    tried = {power: value(power) for power in PRIOR_POWERS}
    power = max(PRIOR_POWERS, key=lambda p: (round(tried[p], 9), -p))  # ties: the smaller
    if power == 0.0 or tried[power] <= tried[0.0]:
        return None, (f"no prior correction beats the plain argmax on validation ({monitor} "
                      f"{tried[0.0]:.4f})")
    choice.value = tried[power]
    return ([round(float(b), 6) for b in -power * log_prior],
            f"probabilities divided by the class prior^{power:g}: {monitor} "
            f"{tried[power]:.4f} on validation, {tried[0.0]:.4f} without")


def _option(module: Any) -> str | None:
    """The input option (a pretrained tokenizer) the data kind needs for ``module``."""
    hp = module.hparams
    resolve = architectures.meta(hp["arch"]).get("resolve")
    return resolve(hp["arch_kwargs"]) if resolve else None


def _data(module: Any) -> dict[str, Any]:
    """The data settings ``module`` was trained with (a tokenizer layout, an image size...)."""
    return dict(module.hparams.get("data") or {})


#: what a member reads: its input option and its data settings (hashable, to compare members)
Inputs = tuple[str | None, tuple[tuple[str, Any], ...]]


def _inputs(module: Any) -> Inputs:
    return _option(module), tuple(sorted(_data(module).items()))


def _better(a: float, b: float, direction: str) -> bool:
    """Whether ``a`` is better than ``b`` in ``direction``."""
    return a > b if direction == "maximize" else a < b


def _compare(test: dict[str, float], reference: Reference, metric: str, direction: str,
             who: str = "the final model") -> str:
    """How ``who`` (the final model, or the networks' best where the reference is registered)
    compares with the reference on the test split, in one phrase."""
    mine, theirs = test.get(metric), reference.test_metrics.get(metric)
    if mine is None or theirs is None:
        return ""
    gap = abs(mine - theirs)
    verb = ("beats" if _better(mine, theirs, direction) else
            "ties with" if gap < 1e-9 else "trails")
    by = "" if verb == "ties with" else f" by {gap:.4f}"
    return (f"{who} {verb} the reference ({reference.name}){by} on test {metric} "
            f"({mine:.4f} vs {theirs:.4f})")


def _refit(record: TrialRecord, selection: Selection, dm: BaseDataModule, hw: HardwareProfile,
           family_cls: Any, settings: TrialSettings, console: Console) -> tuple[str, bool]:
    """Train trial ``record``'s configuration again on train + val, for about the epochs its
    best validation came after; returns the checkpoint that is tested and whether it is the
    refit (kept: a rerun of the finish reuses it and its decision).

    A refit starts from scratch and cannot be validated (nothing is held out but the test), so
    it is checked against the searched model on the train + val rows, which the refit has all
    trained on: a refit that fits them worse than the model it would replace (a noisy training
    that had its lucky epoch during the search) is not used, and the searched model is kept.
    """
    import json

    folder = settings.checkpoints / f"refit-{record.number}"
    last, decision = folder / "last.ckpt", folder / "decision.json"
    if last.is_file() and decision.is_file():
        kept = json.loads(decision.read_text())
        return (str(last), True) if kept["use"] == "refit" else (str(record.checkpoint), False)
    cand = next(c for c in selection.candidates if c.name == record.arch)
    config = Configuration.of(cand, record.params)
    epochs = (round(float(np.mean(record.best_epochs))) + 1 if record.best_epochs
              else max(record.epochs, 1))
    n_pool = sum(dm.pool_sizes())
    with console.status(f"Refitting trial {record.number} ({record.arch}) on train + val "
                        f"({n_pool} samples, {epochs} epochs)..."):
        fitted = fit(config, dm=dm, view=View.everything(n_pool), settings=settings, hw=hw,
                     family_cls=family_cls, folder=folder / "tmp",
                     seed=settings.seed + record.number,
                     batch_size=int(config.optim["batch_size"]), epochs=epochs, validate=False)
    assert fitted.checkpoint is not None
    task = selection.task
    spec = fitted.module.spec  # the spec of the trial's own data (its tokenizer, for one)
    pool = dm.ordered_loader("pool")

    def fits(module: Any) -> float:
        found = predict(module, pool, hw)
        return float(family_cls.monitor_value(found.scores, found.targets, spec, task.monitor))

    refit_value = fits(fitted.module)
    searched_value = fits(family_cls.load_from_checkpoint(record.checkpoint, map_location="cpu"))
    use = "search" if _better(searched_value, refit_value, task.direction) else "refit"
    fitted.checkpoint.replace(last)  # whole, or not there: a killed refit is done again
    shutil.rmtree(folder / "tmp", ignore_errors=True)
    what = (f"Refit: trial {record.number} ({record.arch}) trained again on train + val "
            f"({n_pool} samples) for {epochs} epochs: {task.monitor} {refit_value:.4f} on "
            f"those rows, the searched model {searched_value:.4f}")
    line = what + ("; the refit is used" if use == "refit" else
                   "; the refit fits them worse, so the searched model is kept")
    decision.write_text(json.dumps({"use": use, "line": line}) + "\n")
    console.print(line, soft_wrap=True)
    return (str(last), True) if use == "refit" else (str(record.checkpoint), False)


def _register(done: Finished, members: list[Member], family_cls: Any, dm: BaseDataModule,
              tracker: Tracker, console: Console, tracking: TrackingConfig, metric: str,
              direction: str, data_hash: str, reference: Reference | None = None,
              options: list[Inputs] | None = None) -> None:
    """Log the final model (its members, or the ``reference``) as a pyfunc and register it
    (once: a rerun finds its version), then move the champion alias when it beats the holder.
    Members whose input options differ (a pretrained tokenizer beside a trained one) each get
    their own codec, its artifacts logged as ``<name>__m<i>``."""
    import joblib
    from mlflow.models import infer_signature

    from archselect.references import ReferenceModel
    from archselect.serving import ServedModel, pip_requirements

    parent = tracker.parent_id
    assert parent is not None
    if reference is not None:
        key = "reference" + ("+refit" if done.refit else "")
    else:
        key = "+".join(f"{m.record.number}" + ("" if len(members) == 1 else f":{m.weight:.3f}")
                       + ("+refit" if m.refitted else "") for m in members)
    options = options or [(None, ())] * len(members)
    with tempfile.TemporaryDirectory() as tmp:
        if members:
            dm.for_trial(options[0][0], batch_size=128, num_workers=0, **dict(options[0][1]))
        bundle = dm.serving_bundle(members[0].checkpoint if members else "", Path(tmp))
        codecs: list[Any] | None = None
        member_artifacts: dict[str, str] = {}
        if len(set(options)) > 1:
            codecs = [bundle.codec]
            for i, (m, option) in enumerate(zip(members, options, strict=True)):
                if i == 0:
                    continue
                dm.for_trial(option[0], batch_size=128, num_workers=0, **dict(option[1]))
                own = dm.serving_bundle(m.checkpoint, Path(tmp) / f"m{i}")
                codecs.append(own.codec)
                member_artifacts.update({f"{k}__m{i}": v for k, v in own.artifacts.items()})
        # Classifiers answer params={"probabilities": "all"} with every class's probability.
        params = {"probabilities": "top"} if bundle.codec.class_names else None
        with warnings.catch_warnings(record=True):  # MLflow's hint on integer columns
            signature = infer_signature(bundle.input_example, bundle.output_example,
                                        params=params)
        if bundle.input_schema is not None:
            signature.inputs = bundle.input_schema
        # A rerun of a finished (or half-finished) study finds the version it registered.
        found = (tracker.registered_version(tracking.model_name, parent, key)
                 if tracking.register else None)
        if found is not None:
            done.model_version = found
            done.model_uri = f"models:/{tracking.model_name}/{found}"
            console.print(f"Model: version {found} of {tracking.model_name} already holds "
                          f"{done.model_name} of this study; not registered again",
                          soft_wrap=True)
        else:
            checkpoints = {("checkpoint" if i == 0 else f"checkpoint_{i}"): m.checkpoint
                           for i, m in enumerate(members)}
            served: Any = ServedModel(family_cls, bundle.codec,
                                      weights=[m.weight for m in members], bias=done.bias,
                                      codecs=codecs)
            checkpoints.update(member_artifacts)
            if reference is not None:
                joblib.dump(reference.model, Path(tmp) / "reference.joblib")
                checkpoints = {"reference": str(Path(tmp) / "reference.joblib")}
                served = ReferenceModel(bundle.codec, classes=bool(bundle.codec.class_names))
            with console.status("Logging and registering the final model..."):
                done.model_uri, done.model_version = tracker.log_model(
                    served,
                    artifacts={**checkpoints, **bundle.artifacts},
                    signature=signature, input_example=bundle.input_example,
                    code_paths=[str(Path(__file__).parent)], pip_requirements=pip_requirements(),
                    register_as=tracking.model_name if tracking.register else None,
                    trial=key,
                )
    if done.model_version is not None:
        done.champion = _crown(tracker, tracking, done, metric, direction, data_hash)
        tracker.set_tags(parent, {"archselect.champion": done.champion})
        console.print(f"Champion: {done.champion}", soft_wrap=True)


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
    refused = architectures.meta(arch).get("no_onnx")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if refused:  # known not to export (or to crash the exporter): not attempted
                raise RuntimeError(refused)
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
