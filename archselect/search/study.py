"""The study: storage, sampler, pruner, baselines first, one Lightning fit per trial."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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

TS = optuna.trial.TrialState
#: a killed (SIGKILL, lost machine) or interrupted trial: FAIL without a fail_reason
KILLED_REASON = "stopped before it finished (its worker was killed or interrupted); not counted"


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
    #: the last failure's reason when search.max_failures stopped the study
    last_failure: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.stopped_by.startswith("signal")

    @property
    def best(self) -> TrialRecord | None:
        done = [r for r in self.records if r.state == "COMPLETE" and r.value is not None]
        if not done:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(done, key=lambda r: float(r.value))  # type: ignore[arg-type]


def storage_file(url: str) -> Path | None:
    """The local file behind a SQLite or journal storage URL (None for a server)."""
    if url.startswith("journal:///"):
        return Path(url.removeprefix("journal:///")).expanduser()
    if url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        return Path(database).expanduser() if database and database != ":memory:" else None
    return None


def check_storage(url: Any) -> str:
    """Check that the study storage can be opened, writing nothing: a local file's folder must be
    writable, a database server must answer."""
    from archselect.config.validate import writable_folder

    allowed = ("sqlite:///path.db, journal:///path.log, postgresql://user:pw@host/db, "
               "mysql+pymysql://...")
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("search.storage", "not a storage URL", given=url, allowed=allowed)
    try:
        path = storage_file(url)
    except Exception as exc:
        raise ConfigError("search.storage", f"not a storage URL ({type(exc).__name__})",
                          given=mask_secrets(url), allowed=allowed) from None
    if path is not None:
        if not writable_folder(path.parent) or (path.exists() and not os.access(path, os.W_OK)):
            raise ConfigError("search.storage", "its file cannot be written",
                              given=mask_secrets(url), fix="point it into a writable folder")
        return url
    if url.startswith(("sqlite:", "journal:")):
        raise ConfigError("search.storage", "names no file", given=mask_secrets(url),
                          allowed=allowed)
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        raise _storage_error(exc, url) from None
    return url


def _storage_error(exc: BaseException, url: str) -> ConfigError:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return ConfigError("search.storage", f"cannot open the study storage ({type(exc).__name__}: "
                       f"{mask_secrets(first)})", given=mask_secrets(url),
                       fix="check the URL, the server (and its driver), the path")


def make_storage(cfg: Any, on_stale: Callable[[optuna.Study, Any], None] | None = None
                 ) -> optuna.storages.BaseStorage:
    """The study storage: a journal file, or an RDB with heartbeats so that any worker fails the
    trials of a worker that died (another machine, a SIGKILL) after ``search.grace_period``."""
    url = check_storage(str(cfg.search.storage))
    path = storage_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    interval = cfg.search.heartbeat_interval
    return optuna.storages.RDBStorage(
        url,
        # Several local workers on one SQLite file wait for its lock instead of failing.
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else None,
        heartbeat_interval=None if interval is None else int(interval),
        grace_period=None if interval is None else int(cfg.search.grace_period),
        heartbeat_stale_trial_callback=on_stale,
    )


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str, started: Any) -> bool:
    """Whether the local process that owns a trial still runs (a foreign host counts as alive:
    the heartbeat judges those)."""
    import psutil

    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        proc = psutil.Process(int(pid))
        # A recycled pid belongs to a process started after the trial.
        return started is None or proc.create_time() <= started.timestamp() + 1.0
    except psutil.Error:
        return False


def counts(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial uses up the budget: it finished, or failed by its own fault (a killed or
    interrupted trial has no fail_reason: the study owes it a rerun)."""
    return t.state in (TS.COMPLETE, TS.PRUNED) or (t.state == TS.FAIL
                                                  and "fail_reason" in t.user_attrs)


def taken(study: optuna.Study, below: int | None = None) -> int:
    """Trials that count, plus those running now (only numbers below ``below``, if given)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if (below is None or t.number < below)
               and (counts(t) or (t.state == TS.RUNNING and not t.user_attrs.get("surplus"))))


def close_killed_run(tracker: Tracker | None, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """End the MLflow run of a trial whose worker died, as KILLED with the reason."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if tracker is None or not run_id:
        return
    with suppress(Exception):  # the run was deleted meanwhile: nothing to close
        tracker.end_trial(str(run_id), "KILLED", reason=why)


def reap_dead_trials(study: optuna.Study, tracker: Tracker | None) -> list[int]:
    """Fail the RUNNING trials of local workers that no longer exist (SIGKILL, a crash), now
    rather than after the heartbeat's grace period, and close their MLflow runs."""
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
        owner = str(t.user_attrs.get("worker", ""))
        if not owner or _alive(owner, t.datetime_start):
            continue
        try:
            study.tell(t.number, state=TS.FAIL)
        except (RuntimeError, ValueError):  # another worker reaped it first
            continue
        close_killed_run(tracker, t, f"worker {owner} died mid-trial; {KILLED_REASON}")
        reaped.append(t.number)
    return reaped


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


def sampler_and_pruner(cfg: Any, worker: int = 0) -> tuple[Any, Any]:
    """Instantiate ``search.sampler`` and ``search.pruner`` (worker ``i`` seeds its sampler with
    ``seed + i``, so parallel workers do not propose the same trials)."""
    from omegaconf import OmegaConf, open_dict

    node: Any = OmegaConf.create(OmegaConf.to_container(cfg.search.sampler, resolve=True))
    if worker and node.get("seed") is not None:
        with open_dict(node):
            node.seed = int(node.seed) + worker
    sampler = _instantiate(node, "search.sampler", optuna.samplers.BaseSampler)
    pruner = _instantiate(cfg.search.pruner, "search.pruner", optuna.pruners.BasePruner)
    return sampler, pruner


def open_study(cfg: Any, study_name: str, selection: Selection, spec: DataSpec, *,
               tracker: Tracker | None = None, worker: int = 0) -> optuna.Study:
    """Create the study, or load it to resume; refuse to mix different data or candidates."""
    # ERROR: a failed trial's reason is in its line and the leaderboard, not a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler, pruner = sampler_and_pruner(cfg, worker)
    direction = str(cfg.task.direction)
    if direction not in ("maximize", "minimize"):
        raise ConfigError("task.direction", "unknown direction", given=direction,
                          allowed=["maximize", "minimize"])

    def on_stale(study: optuna.Study, trial: Any) -> None:
        close_killed_run(tracker, trial, "no heartbeat for search.grace_period seconds; "
                         + KILLED_REASON)

    url = mask_secrets(str(cfg.search.storage))
    try:
        storage = make_storage(cfg, on_stale)
        names = optuna.study.get_all_study_names(storage=storage)
    except ConfigError:
        raise
    except Exception as exc:
        raise _storage_error(exc, url) from None
    identity = {"task": selection.task, "data_hash": spec.data_hash,
                "monitor": str(cfg.task.monitor), "candidates": ",".join(
                    c.name for c in selection.candidates),
                "space_hash": stable_hash({c.name: {k: p.describe() for k, p in c.space.items()}
                                           for c in selection.candidates})}
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
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
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                                pruner=pruner, direction=direction,  # type: ignore[arg-type]
                                load_if_exists=True)  # another worker may have just created it
    for k, v in identity.items():
        study.set_user_attr(k, v)
    return study


def enqueue_baselines(study: optuna.Study, candidates: list[Candidate]) -> int:
    """Queue each candidate with its defaults, simplest first, unless already tried (a baseline
    whose worker was killed is queued again)."""
    tried = set()
    for t in study.get_trials(deepcopy=False):
        if not (counts(t) or t.state in (TS.RUNNING, TS.WAITING)):
            continue
        # A queued trial has no params yet: its values wait in fixed_params.
        arch = t.params.get("arch", t.system_attrs.get("fixed_params", {}).get("arch"))
        tried.add((arch, bool(t.user_attrs.get("baseline"))))
    queued = 0
    for cand in candidates:
        if (cand.name, True) in tried:
            continue
        params = {"arch": cand.name, **{f"{cand.name}.{k}": v for k, v in cand.defaults().items()}}
        study.enqueue_trial(params, user_attrs={"baseline": True})
        queued += 1
    return queued


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _cuda_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(exc)


def _fail_reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    if _cuda_oom(exc):
        return f"out of memory (CUDA): {text}"
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
        return f"out of memory (CPU): {text}"
    return text


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
        self.trial_timeout = (None if cfg.search.trial_timeout is None
                              else float(cfg.search.trial_timeout))

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        target = int(self.cfg.search.n_trials)
        if taken(trial.study, below=trial.number) >= target:
            # Another worker filled the budget between this worker's check and its ask.
            trial.set_user_attr("surplus", True)
            raise Surplus(f"the study already has its {target} trials")
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
        trial.set_user_attr("mlflow_run_id", run_id)
        monitor = str(self.cfg.task.monitor)
        start = time.monotonic()
        trainer = None
        try:
            batch_size, accumulate = int(optim["batch_size"]), 1
            while True:
                try:
                    trainer, ckpt = self._fit(trial, cand, model_kw, optim, data_opts, run_id,
                                              batch_size, accumulate)
                    break
                except Exception as exc:
                    if not (_cuda_oom(exc) and accumulate == 1 and batch_size > 1):
                        raise
                    # Once: half the batch, twice the accumulation, the same effective batch.
                    note = (f"CUDA out of memory at batch size {batch_size}; retried at "
                            f"{batch_size // 2} with gradient accumulation 2")
                    trial.set_user_attr("oom_retry", note)
                    self.tracker.set_tags(run_id, {"archselect.oom_retry": note})
                    self._free_memory(trial.number)
                    batch_size, accumulate = batch_size // 2, 2
            fit_s = time.monotonic() - start
            trial.set_user_attr("epochs", int(trainer.current_epoch))
            trial.set_user_attr("duration_s", round(fit_s, 2))
            score = ckpt.best_model_score
            timed_out = self.trial_timeout is not None and fit_s >= self.trial_timeout
            if timed_out and score is None:
                raise TimeoutError(f"search.trial_timeout ({self.trial_timeout:g}s) reached "
                                   "before the trial's first validation")
            if score is None or not bool(score.isfinite()):
                raise FloatingPointError(f"{monitor} was never finite")
            if timed_out:
                trial.set_user_attr("stopped_by", "search.trial_timeout")
                raise optuna.TrialPruned(f"search.trial_timeout ({self.trial_timeout:g}s) "
                                         f"stopped it after {int(trainer.current_epoch)} epochs")
            value = float(score)
            trial.set_user_attr("checkpoint", str(ckpt.best_model_path))
            self.tracker.end_trial(run_id, "COMPLETE", metrics={
                f"best_{monitor}": value, "n_params": float(trial.user_attrs["n_params"]),
                "duration_s": fit_s, "epochs": trainer.current_epoch,
            })
            return value
        except optuna.TrialPruned as exc:
            epochs = int(trainer.current_epoch) + 1 if trainer is not None else 0
            trial.set_user_attr("epochs", epochs)
            trial.set_user_attr("duration_s", round(time.monotonic() - start, 2))
            self.tracker.end_trial(run_id, "PRUNED", reason=str(exc) or None, metrics={
                "duration_s": time.monotonic() - start, "epochs": epochs})
            self._drop_checkpoint(trial.number)
            raise
        except KeyboardInterrupt:
            self.tracker.end_trial(run_id, "KILLED", reason=f"interrupted (Ctrl-C or SIGTERM); "
                                   f"{KILLED_REASON}")
            self._drop_checkpoint(trial.number)
            raise
        except Exception as exc:
            reason = _fail_reason(exc)
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("duration_s", round(time.monotonic() - start, 2))
            self.tracker.end_trial(run_id, "FAIL", reason=reason)
            self._drop_checkpoint(trial.number)
            raise TrialFailed(reason) from exc

    def _fit(self, trial: optuna.Trial, cand: Candidate, model_kw: dict[str, Any],
             optim: dict[str, Any], data_opts: dict[str, Any], run_id: str, batch_size: int,
             accumulate: int) -> tuple[Any, Any]:
        """One Lightning fit; returns the trainer and its checkpoint callback."""
        import lightning.pytorch as pl
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
        from optuna_integration import PyTorchLightningPruningCallback

        from archselect.architectures import count_parameters

        monitor = str(self.cfg.task.monitor)
        mode = "max" if str(self.cfg.task.direction) == "maximize" else "min"
        dm = self.datamodule
        spec = dm.for_trial(cand.option, batch_size=batch_size,
                            num_workers=int(self.cfg.trainer.num_workers), **data_opts)
        pl.seed_everything(int(self.cfg.seed) + trial.number, workers=True, verbose=False)
        module = self.family_cls(
            arch=cand.name, arch_kwargs=model_kw,
            optim={"lr": optim["lr"], "weight_decay": optim["weight_decay"]},
            spec=spec.to_dict(), max_epochs=cand.max_epochs,
        )
        trial.set_user_attr("n_params", count_parameters(module.model))
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
            # search.trial_timeout bounds one trial; it keeps the best checkpoint it reached.
            max_time=(None if self.trial_timeout is None
                      else timedelta(seconds=self.trial_timeout)),
            devices=self.cfg.trainer.devices,
            precision=self.hw.precision,  # type: ignore[arg-type]
            deterministic=bool(self.cfg.trainer.deterministic),
            gradient_clip_val=self.cfg.trainer.gradient_clip_val,
            accumulate_grad_batches=accumulate,
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
                # Lightning turns Ctrl-C (and SIGTERM) into SystemExit after its own clean-up.
                raise KeyboardInterrupt from None
        if trainer.interrupted:
            raise KeyboardInterrupt
        return trainer, ckpt

    def _free_memory(self, number: int) -> None:
        import gc

        import torch

        self._drop_checkpoint(number)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _drop_checkpoint(self, number: int) -> None:
        shutil.rmtree(self.ckpt_root / f"trial-{number}", ignore_errors=True)


class TrialFailed(Exception):
    """A trial crashed; the study records it as FAIL and goes on."""


class Surplus(Exception):
    """A trial asked for after the budget was filled by other workers; it does not run."""


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every finished trial of the study, as leaderboard rows."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TS.RUNNING, TS.WAITING) or t.user_attrs.get("surplus"):
            continue
        arch = str(t.params.get("arch", "?"))
        params = {k.split(".", 1)[1]: v for k, v in t.params.items() if k.startswith(f"{arch}.")}
        reason = t.user_attrs.get("fail_reason")
        if t.state == TS.FAIL and reason is None:
            reason = KILLED_REASON
        elif t.user_attrs.get("stopped_by"):
            reason = f"stopped by {t.user_attrs['stopped_by']}"
        out.append(TrialRecord(
            number=t.number, arch=arch, params=params,
            value=t.value if t.state == TS.COMPLETE else None,
            state=t.state.name, duration_s=float(t.user_attrs.get("duration_s", 0.0)),
            epochs=int(t.user_attrs.get("epochs", 0)), checkpoint=t.user_attrs.get("checkpoint"),
            reason=reason, n_params=t.user_attrs.get("n_params"),
            baseline=bool(t.user_attrs.get("baseline")),
        ))
    return out


@contextmanager
def _graceful_stop(received: list[str]) -> Iterator[None]:
    """Ctrl-C and SIGTERM end the running trial cleanly (it raises KeyboardInterrupt); further
    signals during that clean-up are ignored."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if received:
            return
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():  # Lightning leaves SIGINT ignored after an interrupt
            signal.signal(s, h)


@dataclass
class _Progress:
    new: int = 0
    failures: int = 0  # in a row
    stopped_by: str = "search.n_trials"
    last: str | None = None


def run_search(cfg: Any, study: optuna.Study, objective: Objective,
               on_trial: Any = None, enqueue: bool = True) -> StudyOutcome:
    """Run trials until the study holds ``search.n_trials`` counted trials (finished, or failed by
    their own fault; trials of other workers and earlier invocations included), no new trial
    after ``search.timeout`` seconds, stopping after ``search.max_failures`` failures in a row."""
    target = int(cfg.search.n_trials)
    timeout = cfg.search.timeout
    max_failures = cfg.search.max_failures
    reap_dead_trials(study, objective.tracker)
    if enqueue and bool(cfg.search.enqueue_baselines):
        enqueue_baselines(study, objective.selection.candidates)
    state = _Progress()

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get("surplus"):
            study.stop()
            return
        state.new += 1
        objective.done = sum(counts(t) for t in study.get_trials(deepcopy=False))
        if trial.state == TS.FAIL:
            state.failures += 1
            state.last = trial.user_attrs.get("fail_reason")
        else:
            state.failures = 0
        if on_trial is not None:
            on_trial(study, trial)
        if max_failures is not None and state.failures >= int(max_failures):
            state.stopped_by = "search.max_failures"
            study.stop()
        elif taken(study) >= target:
            study.stop()

    start = time.monotonic()
    objective.deadline = None if timeout is None else start + float(timeout)
    objective.done = sum(counts(t) for t in study.get_trials(deepcopy=False))
    received: list[str] = []
    if taken(study) < target:
        try:
            with _graceful_stop(received):
                study.optimize(objective, timeout=None if timeout is None else float(timeout),
                               catch=(TrialFailed, Surplus), callbacks=[after],
                               gc_after_trial=True)
        except KeyboardInterrupt:
            state.stopped_by = f"signal {received[0] if received else 'SIGINT'}"
    elapsed = time.monotonic() - start
    outcome = StudyOutcome(study_name=study.study_name, storage=mask_secrets(str(cfg.search.storage)),
                           direction=str(cfg.task.direction), records=records(study),
                           new_trials=state.new, elapsed_s=elapsed,
                           stopped_by=state.stopped_by, last_failure=state.last)
    done = sum(counts(t) for t in study.get_trials(deepcopy=False))
    if (outcome.stopped_by == "search.n_trials" and done < target and timeout is not None
            and elapsed >= float(timeout)):
        outcome.stopped_by = "search.timeout"
    return outcome
