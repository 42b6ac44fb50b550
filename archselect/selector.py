"""Table + data profile + hardware profile -> Selection: candidates, reasons, search spaces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from archselect.architectures import architectures, check_hparams
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec
from archselect.hardware import HardwareProfile
from archselect.search.space import Param, parse_param

ARCH_KEYS = {"description", "why", "input", "model", "optim", "data", "space"}
OPTIM_KEYS = ("lr", "weight_decay", "batch_size")


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

    task: str
    family: str
    description: str
    candidates: list[Candidate]
    dropped: dict[str, str]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for c, cand in zip(out["candidates"], self.candidates, strict=True):
            c["space"] = {k: p.describe() for k, p in cand.space.items()}
        return out


def table_row(cfg: Any) -> dict[str, Any]:
    """The table row for ``task.name``; a clear error when it is not declared or not built."""
    table = cfg.selector.table
    task = str(cfg.task.name)
    if task not in table:
        raise ConfigError("task", f"task {task!r} is not in the table", allowed=list(table))
    row = table[task]
    if not row.available:
        ready = [k for k, v in table.items() if v.available]
        raise ConfigError(
            "task", f"task {task!r} is declared in the table but not available yet",
            allowed=ready, fix="choose an available task",
        )
    return {"family": str(row.family), "candidates": list(row.candidates),
            "data_kind": str(row.data_kind), "description": str(row.description)}


def _arch_config(cfg: Any, name: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    if name not in cfg.arch:
        raise ConfigError(f"arch.{name}", "the table names an architecture with no config file",
                          given=name, allowed=list(cfg.arch), fix=f"add conf/arch/{name}.yaml")
    raw = OmegaConf.to_container(cfg.arch[name], resolve=True)
    if not isinstance(raw, dict):
        raise ConfigError(f"arch.{name}", "must be a mapping", given=raw)
    node = {str(k): v for k, v in raw.items()}
    for key in node:
        if key not in ARCH_KEYS:
            raise ConfigError(f"arch.{name}.{key}", "unknown key", given=key, allowed=ARCH_KEYS)
    return node


def _candidate(cfg: Any, name: str, max_epochs: int) -> Candidate:
    node = _arch_config(cfg, name)
    key = f"arch.{name}"
    for part in ("model", "optim", "data", "space"):
        if not isinstance(node.get(part) or {}, dict):
            raise ConfigError(f"{key}.{part}", "must be a mapping", given=node.get(part),
                              fix=f"set keys below it, e.g. {key}.{part}.<name>=<value>")
    model, optim = dict(node.get("model") or {}), dict(node.get("optim") or {})
    data = dict(node.get("data") or {})
    check_hparams(name, model, f"{key}.model")
    for k in optim:
        if k not in OPTIM_KEYS:
            raise ConfigError(f"{key}.optim.{k}", "unknown optimiser setting", given=k,
                              allowed=OPTIM_KEYS)
    for k in OPTIM_KEYS:
        if k not in optim:
            raise ConfigError(f"{key}.optim", f"missing {k}", fix=f"add {key}.optim.{k}")
    if not (isinstance(optim["lr"], int | float) and optim["lr"] > 0):
        raise ConfigError(f"{key}.optim.lr", "must be a positive number", given=optim["lr"])
    if not (isinstance(optim["batch_size"], int) and optim["batch_size"] > 0):
        raise ConfigError(f"{key}.optim.batch_size", "must be a positive integer",
                          given=optim["batch_size"])
    space: dict[str, Param] = {}
    for pname, spec in (node.get("space") or {}).items():
        if pname not in model and pname not in optim and pname not in data:
            raise ConfigError(f"{key}.space.{pname}", "searches a parameter that is not in "
                              "model, optim or data", given=pname, allowed=[*model, *optim, *data])
        param = parse_param(pname, spec, f"{key}.space.{pname}")
        default = {**model, **optim, **data}[pname]
        if not param.contains(default):
            raise ConfigError(f"{key}.space.{pname}", f"range {param.describe()} does not contain "
                              "the default", given=default, fix="widen the range or change the default")
        space[pname] = param
    expected_input = architectures.meta(name).get("input")
    if node.get("input") != expected_input:
        raise ConfigError(f"{key}.input", "does not match the builder", given=node.get("input"),
                          allowed=[expected_input])
    return Candidate(name=name, description=str(node.get("description", "")),
                     why=str(node.get("why", "")), input=str(node["input"]), model=model,
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


def select(cfg: Any, spec: DataSpec, hw: HardwareProfile) -> Selection:
    """Choose the candidates for this task, data and machine, with a reason for each decision.

    Raises:
        ConfigError: for an unavailable task, an unknown candidate, a bad range or model.
    """
    row = table_row(cfg)
    names: list[str] = list(row["candidates"])
    notes: list[str] = []
    dropped: dict[str, str] = {}
    asked = cfg.selector.candidates
    if asked is not None:
        asked = [str(a) for a in asked]
        if not asked:
            raise ConfigError("selector.candidates", "is empty", given=[], allowed=names,
                              fix="name at least one, or set it to null")
        for a in asked:
            if a not in names:
                raise ConfigError("selector.candidates", f"unknown architecture {a!r} for "
                                  f"{cfg.task.name}", given=a, allowed=names)
        notes.append(f"selector.candidates restricts the table to {', '.join(asked)} (in that order)")
        names = asked

    rules = cfg.selector.rules
    n_train = int(spec.profile.get("splits", {}).get("train", 0))
    unit = {"series": "windows", "sequences": "series"}.get(spec.kind, "samples")
    def applies(rule: Any) -> bool:  # a rule may name the data kinds it is for
        return rule is not None and spec.kind in (rule.get("kinds") or [spec.kind]) and (
            n_train < int(rule.min_train_samples))

    for rule_name in ("small_data", "few_windows"):
        small = rules.get(rule_name)
        if not applies(small):
            continue
        for name in small.drop:
            if name in names and asked is None and len(names) > 1:
                names.remove(name)
                dropped[name] = (f"only {n_train} training {unit} (< {small.min_train_samples}): "
                                 "too few to train it from scratch")
    tiny = rules.get("tiny_images")
    tiny_fixed: dict[str, Any] = {}
    if tiny is not None and len(spec.input_shape) == 3 and max(spec.input_shape[1:]) <= int(
            tiny.max_side):
        side = f"{spec.input_shape[1]}x{spec.input_shape[2]}"
        for name in tiny.drop:
            if name in names and asked is None and len(names) > 1:
                names.remove(name)
                dropped[name] = (f"images are tiny ({side} <= {tiny.max_side} px): too small "
                                 "for its depth and downsampling")
        tiny_fixed = {k: dict(v) for k, v in (tiny.get("fixed") or {}).items()}
    caps: dict[str, dict[str, Any]] = {}  # small data, small models: search ranges capped
    cap_why = ""
    for rule_name in ("small_data", "few_windows"):
        small = rules.get(rule_name)
        if applies(small):
            for arch, limits in (small.get("cap") or {}).items():
                caps.setdefault(arch, {}).update(dict(limits))
                cap_why = f"only {n_train} training {unit} (< {small.min_train_samples})"
    max_epochs = int(cfg.search.max_epochs)
    candidates = []
    for i, name in enumerate(names):
        cand = _candidate(cfg, name, max_epochs)
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
        if not hw.has_gpu:
            fixed = dict(rules.no_gpu.fixed.get(name, {}) or {})
            for k, v in fixed.items():
                cand.model[k] = v
                cand.space.pop(k, None)
                cand.reasons.append(f"no GPU: {k} fixed at {v} to fit the CPU budget")
            cap = rules.no_gpu.max_epochs.get(name)
            if cap is not None and int(cap) < cand.max_epochs:
                cand.max_epochs = int(cap)
                cand.reasons.append(f"no GPU: at most {cap} epochs")
        long = rules.get("long_sequences")
        steps = spec.input_shape[0] if len(spec.input_shape) == 2 else 0
        if long is not None and not hw.has_gpu and name in long.patch and steps > int(
                long.max_tokens):
            patch = -(-steps // int(long.max_tokens))
            cand.model["patch_size"] = patch
            cand.space.pop("patch_size", None)
            cand.reasons.append(f"no GPU: attention over {steps} steps capped at "
                                f"{long.max_tokens} tokens (patches of {patch} steps)")
        if "weights_path" in cand.model:
            weights = cand.model["weights_path"]
            cand.reasons.append(f"starts from the weights in {weights}" if weights else
                                "no weights_path: trained from scratch")
        resolve = architectures.meta(name).get("resolve")
        if resolve is not None:  # e.g. a pretrained encoder: found offline now, or a clear error
            cand.option = resolve(cand.model)
        candidates.append(cand)
    if hw.has_gpu:
        notes.append(f"{len(hw.gpus)} GPU(s), precision {hw.precision}")
    else:
        notes.append(f"CPU only ({hw.cpu_cores} cores), precision {hw.precision}")
    return Selection(task=str(cfg.task.name), family=row["family"],
                     description=row["description"], candidates=candidates,
                     dropped=dropped, notes=notes)
