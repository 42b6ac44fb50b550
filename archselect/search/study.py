"""The study: storage, sampler, pruner, baselines first, one Lightning fit per trial."""

from __future__ import annotations

import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import optuna

from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec, stable_hash
from archselect.hardware import HardwareProfile
from archselect.search.progress import StudyProgressBar
from archselect.search.space import suggest
from archselect.selector import Candidate, Selection
from archselect.tracking import Tracker, mask_secrets


@dataclass
class TrialRecord:
    """One row of the leaderboard."""

    number: int
    arch: str
    params: dict[str, Any]
    value: float | None
    state: str
    duration_s: float
    epochs: int
    checkpoint: str | None = None
    reason: str | None = None
    n_params: int | None = None
    baseline: bool = False


@dataclass
class StudyOutcome:
    """What one invocation of the search did."""

    study_name: str
    storage: str
    direction: str
    records: list[TrialRecord] = field(default_factory=list)
    new_trials: int = 0
    stopped_by: str = "n_trials"
    elapsed_s: float = 0.0

    @property
    def best(self) -> TrialRecord | None:
        done = [r for r in self.records if r.state == "COMPLETE" and r.value is not None]
        if not done:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(done, key=lambda r: float(r.value))  # type: ignore[arg-type]


def storage_url(url: str) -> str:
    """Check a storage URL and create the folder of a SQLite file."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("search.storage", "not a storage URL", given=url,
                          allowed="sqlite:///path.db, postgresql://user:pw@host/db, ...")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url


def _instantiate(node: Any, key: str, base: type) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = node.get("_target_") if hasattr(node, "get") else None
    try:
        obj = instantiate(node)
    except InstantiationException as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{key}._target_", f"cannot be created ({first})", given=target,
                          fix=f"name an optuna class, e.g. optuna.{key.split('.')[-1]}s...") from None
    if not isinstance(obj, base):
        raise ConfigError(f"{key}._target_", f"is not an {base.__module__}.{base.__name__}",
                          given=target)
    return obj


def open_study(cfg: Any, study_name: str, selection: Selection, spec: DataSpec) -> optuna.Study:
    """Create the study, or load it to resume; refuse to mix different data or candidates."""
    # ERROR: a failed trial's reason is in its line and the leaderboard, not a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = storage_url(str(cfg.search.storage))
    sampler = _instantiate(cfg.search.sampler, "search.sampler", optuna.samplers.BaseSampler)
    pruner = _instantiate(cfg.search.pruner, "search.pruner", optuna.pruners.BasePruner)
    direction = str(cfg.task.direction)
    if direction not in ("maximize", "minimize"):
        raise ConfigError("task.direction", "unknown direction", given=direction,
                          allowed=["maximize", "minimize"])
    try:
        names = optuna.study.get_all_study_names(storage=url)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError("search.storage", f"cannot open the study storage ({type(exc).__name__}: "
                          f"{mask_secrets(first)})", given=mask_secrets(url),
                          fix="check the URL, the server, the path") from None
    identity = {"task": selection.task, "data_hash": spec.data_hash,
                "monitor": str(cfg.task.monitor), "candidates": ",".join(
                    c.name for c in selection.candidates),
                "space_hash": stable_hash({c.name: {k: p.describe() for k, p in c.space.items()}
                                           for c in selection.candidates})}
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=url, sampler=sampler,
                                  pruner=pruner)
        for k, v in identity.items():
            old = study.user_attrs.get(k)
            if old is not None and old != v:
                raise ConfigError(
                    "search.study_name", f"study {study_name!r} exists with a different {k} "
                    f"({old!r}, now {v!r}); its trials are not comparable", given=study_name,
                    fix="choose another search.study_name",
                )
        return study
    study = optuna.create_study(study_name=study_name, storage=url, sampler=sampler,
                                pruner=pruner, direction=direction)  # type: ignore[arg-type]
    for k, v in identity.items():
        study.set_user_attr(k, v)
    return study


def enqueue_baselines(study: optuna.Study, candidates: list[Candidate]) -> int:
    """Queue each candidate with its defaults, simplest first, unless already tried."""
    tried = set()
    for t in study.get_trials(deepcopy=False):
        # A queued trial has no params yet: its values wait in fixed_params.
        arch = t.params.get("arch", t.system_attrs.get("fixed_params", {}).get("arch"))
        tried.add((arch, bool(t.user_attrs.get("baseline"))))
    queued = 0
    for cand in candidates:
        if (cand.name, True) in tried:
            continue
        params = {"arch": cand.name, **{f"{cand.name}.{k}": v for k, v in cand.defaults().items()}}
        study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
        queued += 1
    return queued


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class Objective:
    """One trial: pick an architecture and its hyperparameters, fit, report the best value."""

    def __init__(self, cfg: Any, study_name: str, selection: Selection, datamodule: Any,
                 spec: DataSpec, hw: HardwareProfile, tracker: Tracker,
                 family_cls: type) -> None:
        self.cfg = cfg
        self.study_name = study_name
        self.selection = selection
        self.candidates = {c.name: c for c in selection.candidates}
        self.datamodule = datamodule
        self.spec = spec
        self.hw = hw
        self.tracker = tracker
        self.family_cls = family_cls
        self.ckpt_root = (Path(str(cfg.runs_dir)) / "checkpoints"
                          / f"{_safe(study_name)}-{stable_hash(str(cfg.search.storage))[:8]}")
        self.done = 0
        self.deadline: float | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        import lightning.pytorch as pl
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
        from optuna_integration import PyTorchLightningPruningCallback

        from archselect.architectures import count_parameters

        arch = trial.suggest_categorical("arch", list(self.candidates))
        cand = self.candidates[str(arch)]
        values = suggest(trial, cand.name, cand.space)
        model_kw, optim, data_opts = cand.split(values)
        trial.set_user_attr("max_epochs", cand.max_epochs)
        run_id = self.tracker.start_trial(
            self.study_name, trial.number, cand.name,
            {**{f"model.{k}": v for k, v in model_kw.items()},
             **{f"optim.{k}": v for k, v in optim.items()},
             **{f"data.{k}": v for k, v in data_opts.items()}, "max_epochs": cand.max_epochs},
        )
        monitor = str(self.cfg.task.monitor)
        mode = "max" if str(self.cfg.task.direction) == "maximize" else "min"
        start = time.monotonic()
        trainer = None
        try:
            dm = self.datamodule
            spec = dm.for_trial(cand.option, batch_size=int(optim["batch_size"]),
                                num_workers=int(self.cfg.trainer.num_workers), **data_opts)
            pl.seed_everything(int(self.cfg.seed) + trial.number, workers=True, verbose=False)
            module = self.family_cls(
                arch=cand.name, arch_kwargs=model_kw,
                optim={"lr": optim["lr"], "weight_decay": optim["weight_decay"]},
                spec=spec.to_dict(), max_epochs=cand.max_epochs,
            )
            n_params = count_parameters(module.model)
            trial.set_user_attr("n_params", n_params)
            ckpt = ModelCheckpoint(dirpath=self.ckpt_root / f"trial-{trial.number}",
                                   filename="best", monitor=monitor, mode=mode, save_top_k=1,
                                   save_weights_only=True)
            callbacks: list[pl.Callback] = [
                EarlyStopping(monitor=monitor, mode=mode, patience=int(self.cfg.search.patience)),
                ckpt,
                self.tracker.epoch_logger(run_id),
            ]
            if not trial.user_attrs.get("baseline"):
                # Baselines are the reference each candidate gets: they run to the end.
                callbacks.append(PyTorchLightningPruningCallback(trial, monitor=monitor))
            if bool(self.cfg.trainer.progress_bar):
                callbacks.append(StudyProgressBar(self.done, int(self.cfg.search.n_trials),
                                                  self.deadline))
            n_batches = max(len(dm.train_dataloader()), 1)
            limit = self.cfg.trainer.limit_train_batches
            trainer = pl.Trainer(
                max_epochs=cand.max_epochs, accelerator=self.hw.accelerator,
                # search.timeout is a wall for the whole study: the running trial stops there
                # too, keeping the best checkpoint it reached.
                max_time=(None if self.deadline is None else
                          timedelta(seconds=max(self.deadline - time.monotonic(), 1.0))),
                devices=self.cfg.trainer.devices,
                precision=self.hw.precision,  # type: ignore[arg-type]
                deterministic=bool(self.cfg.trainer.deterministic),
                gradient_clip_val=self.cfg.trainer.gradient_clip_val,
                callbacks=callbacks, logger=False, enable_model_summary=False,
                enable_progress_bar=bool(self.cfg.trainer.progress_bar),
                num_sanity_val_steps=0, log_every_n_steps=min(50, n_batches),
                limit_train_batches=1.0 if limit is None else limit,
                default_root_dir=str(self.ckpt_root),
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*does not have many workers.*")
                warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
                try:
                    trainer.fit(module, datamodule=dm)
                except SystemExit:
                    # Lightning turns Ctrl-C into SystemExit after its own clean-up.
                    raise KeyboardInterrupt from None
            if trainer.interrupted:
                raise KeyboardInterrupt
            score = ckpt.best_model_score
            if score is None and self.deadline is not None and time.monotonic() >= self.deadline:
                raise TimeoutError("search.timeout reached before the trial's first validation")
            if score is None or not bool(score.isfinite()):
                raise FloatingPointError(f"{monitor} was never finite")
            value = float(score)
            if self.deadline is not None and time.monotonic() >= self.deadline - 0.5:
                trial.set_user_attr("stopped_by", "search.timeout")
            trial.set_user_attr("checkpoint", str(ckpt.best_model_path))
            trial.set_user_attr("epochs", int(trainer.current_epoch))
            trial.set_user_attr("duration_s", round(time.monotonic() - start, 2))
            self.tracker.end_trial(run_id, "COMPLETE", metrics={
                f"best_{monitor}": value, "n_params": n_params,
                "duration_s": time.monotonic() - start, "epochs": trainer.current_epoch,
            })
            return value
        except optuna.TrialPruned:
            epochs = int(trainer.current_epoch) + 1 if trainer is not None else 0
            trial.set_user_attr("epochs", epochs)
            trial.set_user_attr("duration_s", round(time.monotonic() - start, 2))
            self.tracker.end_trial(run_id, "PRUNED", metrics={
                "duration_s": time.monotonic() - start, "epochs": epochs})
            self._drop_checkpoint(trial.number)
            raise
        except KeyboardInterrupt:
            self.tracker.end_trial(run_id, "FAIL", reason="interrupted by the user")
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("duration_s", round(time.monotonic() - start, 2))
            self.tracker.end_trial(run_id, "FAIL", reason=reason)
            self._drop_checkpoint(trial.number)
            raise TrialFailed(reason) from exc

    def _drop_checkpoint(self, number: int) -> None:
        shutil.rmtree(self.ckpt_root / f"trial-{number}", ignore_errors=True)


class TrialFailed(Exception):
    """A trial crashed; the study records it as FAIL and goes on."""


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every finished trial of the study, as leaderboard rows."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING or t.state == optuna.trial.TrialState.WAITING:
            continue
        arch = str(t.params.get("arch", "?"))
        params = {k.split(".", 1)[1]: v for k, v in t.params.items() if k.startswith(f"{arch}.")}
        out.append(TrialRecord(
            number=t.number, arch=arch, params=params,
            value=t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
            state=t.state.name, duration_s=float(t.user_attrs.get("duration_s", 0.0)),
            epochs=int(t.user_attrs.get("epochs", 0)), checkpoint=t.user_attrs.get("checkpoint"),
            reason=t.user_attrs.get("fail_reason"), n_params=t.user_attrs.get("n_params"),
            baseline=bool(t.user_attrs.get("baseline")),
        ))
    return out


def run_search(cfg: Any, study: optuna.Study, objective: Objective,
               on_trial: Any = None) -> StudyOutcome:
    """Run up to ``search.n_trials`` trials within ``search.timeout`` seconds (both checked by
    ``config.validate`` before any store is opened)."""
    n_trials = int(cfg.search.n_trials)
    timeout = cfg.search.timeout
    if bool(cfg.search.enqueue_baselines):
        enqueue_baselines(study, objective.selection.candidates)
    finished: list[int] = []

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished.append(trial.number)
        objective.done = len(finished)
        if on_trial is not None:
            on_trial(study, trial)

    start = time.monotonic()
    objective.deadline = None if timeout is None else start + float(timeout)
    study.optimize(objective, n_trials=n_trials,
                   timeout=None if timeout is None else float(timeout),
                   catch=(TrialFailed,), callbacks=[count], gc_after_trial=True)
    elapsed = time.monotonic() - start
    new = len(finished)
    outcome = StudyOutcome(study_name=study.study_name, storage=mask_secrets(str(cfg.search.storage)),
                           direction=str(cfg.task.direction), records=records(study),
                           new_trials=new, elapsed_s=elapsed)
    if new < n_trials and timeout is not None and elapsed >= float(timeout):
        outcome.stopped_by = "timeout"
    return outcome
