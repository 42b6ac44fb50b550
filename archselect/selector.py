"""Table + data profile + hardware profile -> Selection: candidates, reasons, search spaces.

Every rule lives here and says why it fired: the rules that drop, cap or fix candidates (read from
``selector.rules``), and the rule that switches the task itself (a classification whose target
turns out continuous runs as a regression). Nothing here changes the config: a rule returns a
new ``Task`` or ``Selection``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from archselect.architectures import architectures, check_hparams
from archselect.config.errors import ConfigError
from archselect.config.schema import (
    ArchConfig,
    ParallelRule,
    RowConfig,
    RulesConfig,
    SelectorConfig,
    SizeRule,
    TaskConfig,
    TaskSwitchRule,
)
from archselect.config.validate import check_row
from archselect.data.base import DataSpec
from archselect.hardware import HardwareProfile
from archselect.space import Param, parse_param

DIRECTIONS = ("maximize", "minimize")
#: the learning-rate schedules a family's optimiser runs (``arch.<name>.optim.schedule``)
SCHEDULES = ("cosine", "onecycle")
#: the optimisers (``arch.<name>.optim.optimizer``)
OPTIMIZERS = ("adamw", "adagrad")


@dataclass(frozen=True)
class Task:
    """One row of the table, resolved: what the study predicts and how it is judged."""

    name: str
    family: str
    data_kind: str
    candidates: tuple[str, ...]
    description: str
    monitor: str
    direction: str

    @property
    def mode(self) -> str:
        """``max`` or ``min``, as Lightning's callbacks take it."""
        return "max" if self.direction == "maximize" else "min"


@dataclass
class Candidate:
    """One architecture to try, with its defaults (the baseline trial) and its search space."""

    name: str
    description: str
    why: str
    input: str
    model: dict[str, Any]
    optim: dict[str, Any]
    data: dict[str, Any]
    space: dict[str, Param]
    max_epochs: int
    reasons: list[str] = field(default_factory=list)
    option: str | None = None  # the input option the data module needs (e.g. a tokenizer)

    def defaults(self) -> dict[str, Any]:
        """Values of the searched parameters in the baseline trial."""
        merged = {**self.model, **self.optim, **self.data}
        return {k: merged[k] for k in self.space}

    def split(self, values: dict[str, Any]
              ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Apply suggested values; return (builder kwargs, optimiser settings, data settings)."""
        model = {**self.model, **{k: v for k, v in values.items() if k in self.model}}
        optim = {**self.optim, **{k: v for k, v in values.items() if k in self.optim}}
        data = {**self.data, **{k: v for k, v in values.items() if k in self.data}}
        return model, optim, data


@dataclass
class Selection:
    """What the selector decided, and why."""

    task: Task
    candidates: list[Candidate]
    dropped: dict[str, str]
    notes: list[str]
    #: folds of the cross-validation every trial is scored by (1: the one validation split)
    folds: int = 1
    #: whether the chosen model(s) are trained again on train + val before the test
    refit: bool = False
    #: imbalanced classes with macro-F1 monitored: class weights searched, decision rule tuned
    imbalanced: bool = False
    #: trials run side by side on this machine (worker processes), torch threads each, and why
    workers: int = 1
    threads: int = 1
    parallel: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task.name, "family": self.task.family,
               "description": self.task.description, "monitor": self.task.monitor,
               "direction": self.task.direction,
               "candidates": [asdict(c) for c in self.candidates],
               "dropped": dict(self.dropped), "notes": list(self.notes),
               "folds": self.folds, "refit": self.refit, "imbalanced": self.imbalanced,
               "workers": self.workers, "threads": self.threads, "parallel": self.parallel}
        for c, cand in zip(out["candidates"], self.candidates, strict=True):
            c["space"] = {k: p.describe() for k, p in cand.space.items()}
        return out


def resolve_task(task: TaskConfig, table: dict[str, RowConfig]) -> Task:
    """The table row for ``task.name``; a clear error when it is not declared or not built."""
    row = check_row(task.name, table)
    if task.direction not in DIRECTIONS:
        raise ConfigError("task.direction", "unknown direction", given=task.direction,
                          allowed=DIRECTIONS)
    return Task(name=task.name, family=row.family, data_kind=row.data_kind,
                candidates=tuple(row.candidates), description=row.description,
                monitor=task.monitor, direction=task.direction)


def continuous_target_rule(task: Task, rule: TaskSwitchRule | None,
                           table: dict[str, RowConfig], finding: str) -> tuple[Task, str] | None:
    """``selector.rules.continuous_target``: a ``from_task`` study whose target the data profile
    found continuous (``finding`` says how) runs as ``to_task``. Returns the new task and the
    report's note, or None where the rule does not apply."""
    if rule is None or task.name != rule.from_task:
        return None
    switched = resolve_task(TaskConfig(name=rule.to_task, monitor=rule.monitor,
                                       direction=rule.direction), table)
    note = (f"{task.name} -> {switched.name}: {finding}; monitoring {switched.monitor} "
            f"({switched.direction})")
    return switched, note


def _candidate(name: str, arch: dict[str, ArchConfig], max_epochs: int) -> Candidate:
    key = f"arch.{name}"
    if name not in arch:
        raise ConfigError(key, "the table names an architecture with no config file",
                          given=name, allowed=list(arch), fix=f"add conf/arch/{name}.yaml")
    node = arch[name]
    model, optim, data = dict(node.model), asdict(node.optim), dict(node.data)
    check_hparams(name, model, f"{key}.model")
    if not optim["lr"] > 0:
        raise ConfigError(f"{key}.optim.lr", "must be a positive number", given=optim["lr"])
    if optim["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"{key}.optim.optimizer", "unknown optimizer", given=optim["optimizer"],
                          allowed=OPTIMIZERS)
    if optim["optimizer"] == "adagrad" and (optim["weight_decay"] or "weight_decay" in node.space):
        raise ConfigError(f"{key}.optim.weight_decay", "must be 0 and not searched with "
                          "optimizer adagrad (sparse gradients take no weight decay)",
                          given=optim["weight_decay"], fix="set it to 0 (and drop "
                          f"{key}.space.weight_decay), or use optimizer adamw")
    if optim["schedule"] not in SCHEDULES:
        raise ConfigError(f"{key}.optim.schedule", "unknown learning-rate schedule",
                          given=optim["schedule"], allowed=SCHEDULES)
    if not 0.0 <= optim["label_smoothing"] < 1.0:
        raise ConfigError(f"{key}.optim.label_smoothing", "must lie in [0, 1)",
                          given=optim["label_smoothing"])
    if not optim["batch_size"] > 0:
        raise ConfigError(f"{key}.optim.batch_size", "must be a positive integer",
                          given=optim["batch_size"])
    space: dict[str, Param] = {}
    for pname, spec in node.space.items():
        if pname not in model and pname not in optim and pname not in data:
            raise ConfigError(f"{key}.space.{pname}", "searches a parameter that is not in "
                              "model, optim or data", given=pname, allowed=[*model, *optim, *data])
        param = parse_param(pname, spec, f"{key}.space.{pname}")
        default = {**model, **optim, **data}[pname]
        if not param.contains(default):
            raise ConfigError(f"{key}.space.{pname}", f"range {param.describe()} does not contain "
                              "the default", given=default, fix="widen the range or change the default")
        space[pname] = param
    return Candidate(name=name, description=node.description, why=node.why,
                     input=str(architectures.meta(name).get("input", "")), model=model,
                     optim=optim, data=data, space=space, max_epochs=max_epochs)


def _reason(c: Candidate, first: bool, spec: DataSpec) -> str:
    """The candidate's ``why`` from its YAML, filled in with profile figures."""
    prof = spec.profile
    words = prof.get("words_per_text", {})
    values = {
        "n_train": prof.get("splits", {}).get("train", 0),
        "classes": prof.get("classes", spec.num_classes),
        "words_p50": words.get("p50"), "words_p95": words.get("p95"),
        "words_p99": words.get("p99"), "encoder": c.model.get("encoder", ""),
        "n_features": spec.n_features,
        "image_side": spec.input_shape[-1] if spec.input_shape else None,
        "steps": spec.input_shape[0] if len(spec.input_shape) == 2 else None,
    }
    try:
        why = c.why.format(**values) if c.why else c.description
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"arch.{c.name}.why", f"unknown placeholder {exc}", given=c.why,
                          allowed=sorted(values)) from None
    return f"baseline (start simple): {why}" if first else why


def _size_rules(rules: RulesConfig, spec: DataSpec) -> list[SizeRule]:
    """The size rules (``small_data``, ``few_windows``) that fire for this data."""
    n_train = int(spec.profile.get("splits", {}).get("train", 0))
    return [r for r in (rules.small_data, rules.few_windows)
            if r is not None and spec.kind in (r.kinds or [spec.kind])
            and n_train < r.min_train_samples]


def _encoder_rule(rules: RulesConfig, spec: DataSpec, hw: HardwareProfile, names: list[str]
                  ) -> dict[str, str]:
    """``selector.rules.encoder``: which way of using the pretrained encoder is dropped, and why
    (nothing when the row does not offer both)."""
    rule = rules.encoder
    if rule is None or rule.fine_tuned not in names or rule.frozen not in names:
        return {}
    n = int(spec.profile.get("splits", {}).get("train", 0))
    if hw.has_gpu:
        return {rule.frozen: f"a GPU fine-tunes the encoder ({rule.fine_tuned}) at little cost"}
    if n < rule.cpu_min_train:
        return {rule.fine_tuned: f"only {n} training texts (< {rule.cpu_min_train}) on CPU: the "
                f"frozen encoder's embeddings ({rule.frozen}) generalise from few labels, and "
                "cross-validation would fine-tune it once per fold"}
    if n > rule.cpu_max_train:
        return {rule.fine_tuned: f"{n} training texts (> {rule.cpu_max_train}) on CPU: "
                "fine-tuning would take most of the budget per epoch; the frozen encoder "
                f"({rule.frozen}) embeds each text once"}
    return {rule.frozen: f"{n} training texts on CPU ({rule.cpu_min_train} to "
            f"{rule.cpu_max_train}): fine-tuning its top layers ({rule.fine_tuned}) fits the "
            "budget and adapts the encoder to the labels"}


#: the class weightings a trial may train with (``optim.class_weight``)
CLASS_WEIGHTS = ("none", "balanced")


def _imbalanced(rules: RulesConfig, spec: DataSpec, task: Task) -> str:
    """``selector.rules.imbalanced``: the note when it fires (imbalanced classes, macro-F1
    monitored), else an empty string."""
    rule = rules.imbalanced
    ratio = float(spec.profile.get("balance", {}).get("imbalance_ratio", 1.0))
    if rule is None or not spec.num_classes or task.monitor != "val_f1" or ratio < rule.min_ratio:
        return ""
    return (f"imbalanced classes ({ratio:g}x between the largest and the smallest, >= "
            f"{rule.min_ratio:g}x) and macro-F1 monitored: a class-weighted loss is searched, and "
            "the final model's decision rule is tuned for macro-F1 on validation")


def validation_rules(rules: RulesConfig, spec: DataSpec, refit: bool | None
                     ) -> tuple[int, bool, list[str]]:
    """How trials are scored and the final model trained, by the size of train + val: the folds
    of ``selector.rules.cross_validation`` (1: the validation split), whether to refit
    (``search.refit``, or ``selector.rules.refit`` when it is null), and the notes saying why."""
    splits = spec.profile.get("splits", {})
    n_pool = int(splits.get("train", 0)) + int(splits.get("val", 0))
    unit = {"series": "windows", "sequences": "series", "text": "texts",
            "image": "images", "detection": "images",
            "text_pairs": "pairs"}.get(spec.kind, "rows")
    notes: list[str] = []
    folds = 1
    cv = rules.cross_validation
    if cv is not None and n_pool <= cv.max_samples and spec.kind in (cv.kinds or [spec.kind]):
        folds = cv.series_folds if spec.kind == "series" else cv.folds
        if folds > 1:
            how = (f"rolling-origin validation over {folds} origins" if spec.kind == "series"
                   else f"{folds}-fold {'stratified ' if spec.num_classes else ''}"
                   "cross-validation")
            notes.append(f"small data: {n_pool} train + val {unit} (<= {cv.max_samples}): each "
                         f"trial is scored by {how}, its value the mean over the folds, instead "
                         f"of one validation split of {splits.get('val', 0)}")
        folds = max(folds, 1)
    if refit is None:
        refit = rules.refit is not None and n_pool <= rules.refit.max_samples
        why = (f"{n_pool} train + val {unit} (<= {rules.refit.max_samples})"
               if refit and rules.refit is not None else "")
    else:
        why = f"search.refit={str(refit).lower()}"
    if refit:
        notes.append(f"refit: {why}: the chosen model is trained again on train + val for the "
                     "epochs the search found, then tested")
    return folds, refit, notes


def parallelism(rule: ParallelRule | None, spec: DataSpec, hw: HardwareProfile,
                n_workers: int | None, threads: int | None, n_trials: int,
                deterministic: bool = False, devices: int = 1) -> tuple[int, int, str]:
    """Worker processes, torch threads each, and why: ``search.n_workers`` / ``search.threads``
    where given, else ``selector.rules.parallel`` from the data, the models' size and the
    machine; ``trainer.devices`` > 1 (DDP: one trial on several processes) runs one trial at a
    time."""
    cores = max(1, hw.cpu_cores)
    small = False
    if n_workers is not None:
        workers = n_workers
        why = f"search.n_workers={n_workers}"
    elif devices > 1:
        workers = 1
        on = "GPUs" if hw.has_gpu else "CPU processes"
        why = (f"trainer.devices={devices}: each trial on {devices} {on} (DDP, "
               f"{'NCCL' if hw.has_gpu else 'gloo'}; its epochs reach the pruner when it ends)")
        if threads is None and not hw.has_gpu:
            return workers, max(1, cores // devices), why
    elif hw.has_gpu and len(hw.gpus) > 1:
        workers = min(len(hw.gpus), n_trials)
        why = f"{len(hw.gpus)} GPUs: one trial per GPU"
    elif rule is None or hw.has_gpu:
        workers = 1
        why = "one trial at a time" + (" on the GPU" if hw.has_gpu else "")
    else:
        pixels = (int(spec.input_shape[1]) * int(spec.input_shape[2])
                  if spec.kind == "image" and len(spec.input_shape) == 3 else None)
        small = spec.kind in rule.small_kinds or (pixels is not None and pixels <= rule.max_pixels)
        if small:
            by_memory = max(1, int(hw.memory_gb // rule.memory_gb_per_worker))
            # several workers interleave trials differently on every run
            workers = 1 if deterministic else max(1, min(cores, n_trials, rule.max_workers,
                                                         by_memory))
            what = f"{pixels}-pixel images" if pixels is not None else f"{spec.kind} data"
            why = (f"small models ({what}) on {cores} CPU core{'s' * (cores > 1)}: "
                   + (f"{workers} trials side by side, " if workers > 1 else "")
                   + "one torch thread each (selector.rules.parallel)"
                   + ("; one at a time: trainer.deterministic=true" if deterministic else ""))
        else:
            workers = 1
            why = f"larger models ({spec.kind} data): one trial at a time on every core"
    if threads is not None:
        return workers, threads, f"{why}; search.threads={threads}"
    share = 1 if small else max(1, cores // max(1, workers))
    if hw.thread_cap is not None and hw.thread_cap < share:
        return workers, hw.thread_cap, f"{why}; {hw.thread_cap} thread(s): OMP_NUM_THREADS"
    return workers, share, why


def select(task: Task, selector: SelectorConfig, arch: dict[str, ArchConfig], max_epochs: int,
           spec: DataSpec, hw: HardwareProfile, notes: list[str] | None = None, *,
           refit: bool | None = False, n_workers: int | None = 1, threads: int | None = None,
           devices: int = 1,
           n_trials: int = 1, deterministic: bool = False) -> Selection:
    """Choose the candidates for this task, data and machine, with a reason for each decision.

    Args:
        task: the resolved row.
        selector: ``selector`` (the restriction to some candidates, and the rules).
        arch: ``arch``: every architecture's config, by name.
        max_epochs: ``search.max_epochs``.
        spec: the data profile.
        hw: the hardware profile.
        notes: notes of rules that already fired (e.g. a task switch), reported first.
        refit: ``search.refit`` (None: by ``selector.rules.refit``).
        n_workers, threads, n_trials, deterministic: ``search.n_workers``, ``search.threads``,
            ``search.n_trials``, ``trainer.deterministic`` (None: by ``selector.rules.parallel``).

    Raises:
        ConfigError: for an unknown candidate, a bad range or model.
    """
    names: list[str] = list(task.candidates)
    notes = list(notes or [])
    dropped: dict[str, str] = {}
    asked = selector.candidates
    if asked is not None:
        asked = [str(a) for a in asked]
        if not asked:
            raise ConfigError("selector.candidates", "is empty", given=[], allowed=names,
                              fix="name at least one, or set it to null")
        for a in asked:
            if a not in names:
                raise ConfigError("selector.candidates", f"unknown architecture {a!r} for "
                                  f"{task.name}", given=a, allowed=names)
        notes.append(f"selector.candidates restricts the table to {', '.join(asked)} (in that order)")
        names = asked

    rules = selector.rules
    n_train = int(spec.profile.get("splits", {}).get("train", 0))
    unit = {"series": "windows", "sequences": "series"}.get(spec.kind, "samples")
    small_rules = _size_rules(rules, spec)
    for small in small_rules:
        for name in small.drop:
            if name in names and asked is None and len(names) > 1:
                names.remove(name)
                dropped[name] = (f"only {n_train} training {unit} (< {small.min_train_samples}): "
                                 "too few to train it from scratch")
    if asked is None:
        for name, why in _encoder_rule(rules, spec, hw, names).items():
            names.remove(name)
            dropped[name] = why
    if not hw.has_gpu and rules.no_gpu is not None and asked is None:
        for name in rules.no_gpu.drop:
            if name in names and len(names) > 1:
                names.remove(name)
                dropped[name] = "no GPU: too slow to train on CPU within the budget"
        pixels = (int(spec.input_shape[1]) * int(spec.input_shape[2])
                  if len(spec.input_shape) == 3 else 0)
        for name, limit in rules.no_gpu.max_pixels.items():
            if name in names and len(names) > 1 and pixels > limit:
                names.remove(name)
                dropped[name] = (f"no GPU: {spec.input_shape[1]}x{spec.input_shape[2]} images "
                                 f"({pixels} pixels > {limit}, selector.rules.no_gpu.max_pixels) "
                                 "cost too much a step on CPU within the trial budget")
    tiny = rules.tiny_images
    tiny_fixed: dict[str, dict[str, Any]] = {}
    if tiny is not None and len(spec.input_shape) == 3 and max(spec.input_shape[1:]) <= tiny.max_side:
        side = f"{spec.input_shape[1]}x{spec.input_shape[2]}"
        for name in tiny.drop:
            if name in names and asked is None and len(names) > 1:
                names.remove(name)
                dropped[name] = (f"images are tiny ({side} <= {tiny.max_side} px): too small "
                                 "for its depth and downsampling")
        tiny_fixed = {k: dict(v) for k, v in tiny.fixed.items()}
    imbalanced = _imbalanced(rules, spec, task)
    if imbalanced:
        notes.append(imbalanced)
    caps: dict[str, dict[str, Any]] = {}  # small data, small models: search ranges capped
    cap_why = ""
    for small in small_rules:
        for arch_name, limits in small.cap.items():
            caps.setdefault(arch_name, {}).update(dict(limits))
            cap_why = f"only {n_train} training {unit} (< {small.min_train_samples})"
    candidates = []
    for i, name in enumerate(names):
        cand = _candidate(name, arch, max_epochs)
        cand.reasons.append(_reason(cand, i == 0, spec))
        capped = []
        for k, limit in caps.get(name, {}).items():
            if k in cand.space:
                cand.space[k] = cand.space[k].capped(limit)
                if k in cand.model and cand.model[k] > limit:
                    cand.model[k] = limit
                capped.append(f"{k} up to {limit}")
        if capped:
            cand.reasons.append(f"{cap_why}: {', '.join(capped)} (small data, small model)")
        for k, v in tiny_fixed.get(name, {}).items():
            cand.model[k] = v
            cand.space.pop(k, None)
            cand.reasons.append(f"tiny images: {k} fixed at {v}, the search space shrinks")
        if not hw.has_gpu and rules.no_gpu is not None:
            for k, v in dict(rules.no_gpu.fixed.get(name) or {}).items():
                cand.model[k] = v
                cand.space.pop(k, None)
                cand.reasons.append(f"no GPU: {k} fixed at {v} to fit the CPU budget")
            cap = rules.no_gpu.max_epochs.get(name)
            if cap is not None and cap < cand.max_epochs:
                cand.max_epochs = cap
                cand.reasons.append(f"no GPU: at most {cap} epochs")
            most = rules.no_gpu.max_image_size
            edge = int(spec.input_shape[-1]) if spec.input_shape else 0
            if spec.kind == "detection" and most is not None and edge > most:
                cand.data["image_size"] = most
                cand.reasons.append(f"no GPU: trained on {most}x{most} images instead of "
                                    f"{edge}x{edge} (selector.rules.no_gpu.max_image_size)")
        long = rules.long_sequences
        steps = spec.input_shape[0] if len(spec.input_shape) == 2 else 0
        if long is not None and not hw.has_gpu and name in long.patch and steps > long.max_tokens:
            patch = -(-steps // long.max_tokens)
            cand.model["patch_size"] = patch
            cand.space.pop("patch_size", None)
            cand.reasons.append(f"no GPU: attention over {steps} steps capped at "
                                f"{long.max_tokens} tokens (patches of {patch} steps)")
        if "weights_path" in cand.model:
            weights = cand.model["weights_path"]
            cand.reasons.append(f"starts from the weights in {weights}" if weights else
                                "no weights_path: trained from scratch")
        if imbalanced:
            cand.optim["class_weight"] = "none"  # the baseline trial: start simple
            cand.space["class_weight"] = Param("class_weight", "categorical",
                                               choices=CLASS_WEIGHTS)
            cand.reasons.append("imbalanced classes: class_weight searched (none, balanced)")
        resolve = architectures.meta(name).get("resolve")
        if resolve is not None:  # e.g. a pretrained encoder: found offline now, or a clear error
            cand.option = resolve(cand.model)
        candidates.append(cand)
    if hw.has_gpu:
        notes.append(f"{len(hw.gpus)} GPU(s), precision {hw.precision}")
    else:
        notes.append(f"CPU only ({hw.cpu_cores} cores), precision {hw.precision}")
    folds, do_refit, more = validation_rules(rules, spec, refit)
    workers, share, parallel = parallelism(rules.parallel, spec, hw, n_workers, threads, n_trials,
                                           deterministic, devices)
    return Selection(task=task, candidates=candidates, dropped=dropped, notes=[*notes, *more],
                     folds=folds, refit=do_refit, imbalanced=bool(imbalanced), workers=workers,
                     threads=share, parallel=parallel)

