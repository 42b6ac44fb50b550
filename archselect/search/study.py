"""The study: open (or resume) it, queue the baselines, run trials until the budget is used.

One Optuna study per run, resumable by name: ``search.n_trials`` is the number of trials the study
should hold, counted across invocations and workers (see ``trials.counts``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from archselect.config.errors import ConfigError
from archselect.config.schema import SearchConfig
from archselect.data.base import DataSpec
from archselect.hashing import stable_hash
from archselect.search.objective import Objective
from archselect.search.storage import close_killed_run, make_storage, reap_dead_trials, storage_error
from archselect.search.trials import (
    KILLED_REASON,
    TS,
    EnvironmentFault,
    StudyOutcome,
    Surplus,
    TrialFailed,
    counted,
    counts,
    records,
    taken,
)
from archselect.secrets import mask_secrets
from archselect.selector import Candidate, Selection
from archselect.signals import interrupt_on_signals
from archselect.tracking import Tracker

OnTrial = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def _instantiate(node: dict[str, Any], key: str, base: type) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = node.get("_target_")
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


#: how far apart the sampler seeds of a study's resumes lie (a prime, past any worker count)
RESUME_SEED_STRIDE = 1_000_003
#: how far apart the sampler seeds of commands on one study lie (``search.worker``: a prime past
#: any count of worker processes one command starts)
COMMAND_SEED_STRIDE = 1_009


def sampler_and_pruner(search: SearchConfig, worker: int = 0, resumed_at: int = 0
                       ) -> tuple[Any, Any]:
    """Instantiate ``search.sampler`` and ``search.pruner``. Worker ``i`` seeds its sampler with
    ``seed + i``, so parallel workers do not propose the same trials; a study resumed when it
    holds ``resumed_at`` trials adds ``resumed_at * RESUME_SEED_STRIDE``, so the resume continues
    the sequence instead of proposing the first trials' parameters again (a study from scratch
    is seeded as before: the same seed gives the same study). Command ``search.worker=w`` of
    several on one study adds ``w * COMMAND_SEED_STRIDE``."""
    node = dict(search.sampler)
    worker += search.worker * COMMAND_SEED_STRIDE
    if node.get("seed") is not None and (worker or resumed_at):
        node["seed"] = (int(node["seed"]) + worker + resumed_at * RESUME_SEED_STRIDE) % 2**32
    sampler = _instantiate(node, "search.sampler", optuna.samplers.BaseSampler)
    pruner = _instantiate(dict(search.pruner), "search.pruner", optuna.pruners.BasePruner)
    return sampler, pruner


def open_study(search: SearchConfig, study_name: str, selection: Selection, spec: DataSpec, *,
               tracker: Tracker | None = None, worker: int = 0) -> optuna.Study:
    """Create the study, or load it to resume; refuse to mix different data or candidates."""
    # ERROR: a failed trial's reason is in its line and the leaderboard, not a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler, pruner = sampler_and_pruner(search, worker)
    task = selection.task

    def on_stale(study: optuna.Study, trial: Any) -> None:
        close_killed_run(tracker, trial, "no heartbeat for search.grace_period seconds; "
                         + KILLED_REASON)

    try:
        storage = make_storage(search.storage, heartbeat_interval=search.heartbeat_interval,
                               grace_period=search.grace_period, on_stale=on_stale)
        names = optuna.study.get_all_study_names(storage=storage)
    except ConfigError:
        raise
    except Exception as exc:
        raise storage_error(exc, search.storage) from None
    identity = {"task": task.name, "data_hash": spec.data_hash,
                "monitor": task.monitor, "candidates": ",".join(
                    c.name for c in selection.candidates),
                "space_hash": stable_hash({c.name: {k: p.describe() for k, p in c.space.items()}
                                           for c in selection.candidates}),
                "validation": (f"{selection.folds}-fold cross-validation" if selection.folds > 1
                               else "one validation split")}
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                                  pruner=pruner)
        held = len(study.get_trials(deepcopy=False))
        if held:
            study.sampler, _ = sampler_and_pruner(search, worker, resumed_at=held)
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
                                pruner=pruner, direction=task.direction,  # type: ignore[arg-type]
                                load_if_exists=True)  # another worker may have just created it
    for k, v in identity.items():
        study.set_user_attr(k, v)
    return study


def enqueue_baselines(study: optuna.Study, candidates: list[Candidate], room: int) -> int:
    """Queue each candidate with its defaults, simplest first, unless already tried (a baseline
    whose worker was killed is queued again); at most ``room`` of them, so that no queued trial
    outlives the budget."""
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
        if queued >= room:
            break
        params = {"arch": cand.name, **{f"{cand.name}.{k}": v for k, v in cand.defaults().items()}}
        study.enqueue_trial(params, user_attrs={"baseline": True})
        queued += 1
    return queued


@dataclass
class _Loop:
    new: int = 0
    failures: int = 0  # in a row
    stopped_by: str = "search.n_trials"
    last: str | None = None


def run_search(search: SearchConfig, study: optuna.Study, objective: Objective,
               candidates: list[Candidate], on_trial: OnTrial | None = None,
               enqueue: bool = True) -> StudyOutcome:
    """Run trials until the study holds ``search.n_trials`` counted trials (finished, or failed by
    their own fault; trials of other workers and earlier invocations included), no new trial
    after ``search.timeout`` seconds, stopping after ``search.max_failures`` failures in a row.

    ``enqueue``: queue the candidates' baselines first (the command's own worker does; extra
    workers only take trials)."""
    target = search.n_trials
    timeout = search.timeout
    max_failures = search.max_failures
    reap_dead_trials(study, objective.tracker)
    if enqueue and search.enqueue_baselines:
        enqueue_baselines(study, candidates, room=target - taken(study))
    loop = _Loop()
    progress = objective.progress

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get("surplus"):
            study.stop()
            return
        loop.new += 1
        progress.done = counted(study)
        if trial.state == TS.FAIL:
            loop.failures += 1
            loop.last = trial.user_attrs.get("fail_reason")
        else:
            loop.failures = 0
        if on_trial is not None:
            on_trial(study, trial)
        if max_failures is not None and loop.failures >= max_failures:
            loop.stopped_by = "search.max_failures"
            study.stop()
        elif taken(study) >= target:
            study.stop()

    start = time.monotonic()
    progress.total = target
    progress.deadline = None if timeout is None else start + float(timeout)
    progress.done = counted(study)
    received: list[str] = []
    if taken(study) < target:
        # Optuna collects garbage after each trial (gc_after_trial): what a trial left behind is
        # freed before the next. Everything alive before the search (the imported stack, the
        # data) is frozen out of those collections, which then take milliseconds, not the
        # quarter of a second a full walk of the stack's objects costs (benchmarks/bookkeeping).
        gc.collect()
        gc.freeze()
        try:
            with interrupt_on_signals(received):
                study.optimize(objective, timeout=None if timeout is None else float(timeout),
                               catch=(TrialFailed, Surplus), callbacks=[after],
                               gc_after_trial=True)
        except KeyboardInterrupt:
            loop.stopped_by = f"signal {received[0] if received else 'SIGINT'}"
        except EnvironmentFault as exc:
            loop.stopped_by, loop.last = "environment", str(exc)
        finally:
            gc.unfreeze()
    elapsed = time.monotonic() - start
    outcome = StudyOutcome(study_name=study.study_name, storage=mask_secrets(search.storage),
                           direction=str(study.direction.name.lower()), records=records(study),
                           monitor=objective.settings.monitor,
                           new_trials=loop.new, elapsed_s=elapsed,
                           stopped_by=loop.stopped_by, last_failure=loop.last)
    if (outcome.stopped_by == "search.n_trials" and counted(study) < target
            and timeout is not None and elapsed >= float(timeout)):
        outcome.stopped_by = "search.timeout"
    return outcome
