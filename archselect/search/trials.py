"""Trial states and counting: which trials use up the budget, and the leaderboard's rows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

TS = optuna.trial.TrialState
#: a killed (SIGKILL, lost machine) or interrupted trial: FAIL without a fail_reason
KILLED_REASON = "stopped before it finished (its worker was killed or interrupted); not counted"


class TrialFailed(Exception):
    """A trial crashed; the study records it as FAIL and goes on."""


class Surplus(Exception):
    """A trial asked for after the budget was filled by other workers; it does not run."""


class EnvironmentFault(Exception):
    """A trial stopped by its environment (a full disk, a store that fails), not by its own
    fault: it is not counted, and the study stops so that the cause can be fixed first."""


# Failures that are the machine's, not the trial's: the same command resumes once they are fixed.
_ENVIRONMENT_WORDS = ("No space left", "disk is full", "Read-only file system", "file write failed",
                      "database is locked", "unable to open database")


def environment_fault(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) comes from the environment: a file system or store
    error rather than the trial's loss, memory or time."""
    import errno
    import sqlite3

    from mlflow.exceptions import MlflowException
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    seen: BaseException | None = exc
    for _ in range(20):  # the chain of causes, however long
        if seen is None:
            break
        if isinstance(seen, MemoryError) or (isinstance(seen, OSError)
                                             and seen.errno == errno.ENOMEM):
            return False  # the trial's own memory
        if isinstance(seen, OSError | sqlite3.Error | SQLAlchemyError | MlflowException
                      | StorageInternalError):
            return True
        if any(word in str(seen) for word in _ENVIRONMENT_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
    #: validation metrics at the best epoch (the mean over the folds of a cross-validation)
    val_metrics: dict[str, float] = field(default_factory=dict)
    #: the best epoch of each fold (a refit trains for about as many)
    best_epochs: list[int] = field(default_factory=list)
    #: the spread of the value over the folds (0 with one validation split)
    value_std: float = 0.0
    #: the saved validation predictions (for ensembles), if kept
    val_predictions: str | None = None


@dataclass
class StudyOutcome:
    """What one invocation of the search did."""

    study_name: str
    storage: str
    direction: str
    records: list[TrialRecord] = field(default_factory=list)
    #: the monitored metric (``val_f1``, ...): ties on it are broken by ``val_loss``
    monitor: str = ""
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
        """The completed trial with the best value; among trials tied on it, the one with the
        lowest validation loss, then the one with fewer parameters (see ``ties``)."""
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def ranked(self) -> list[TrialRecord]:
        """Completed trials, best first: by value, then (for ties) validation loss, then
        parameter count, then trial number."""
        done = [r for r in self.records if r.state == "COMPLETE" and r.value is not None]
        sign = -1.0 if self.direction == "maximize" else 1.0

        def key(r: TrialRecord) -> tuple[float, float, float, int]:
            loss = r.val_metrics.get("val_loss", math.inf) if self.monitor != "val_loss" else 0.0
            # values equal to 9 significant digits tie (a metric of a few rows often does)
            return (sign * round(float(r.value or 0.0), 9), loss,
                    float(r.n_params if r.n_params is not None else math.inf), r.number)

        return sorted(done, key=key)

    @property
    def ties(self) -> str | None:
        """A line saying which trials tie on the best value and what broke the tie, or None."""
        ranked = self.ranked()
        if len(ranked) < 2:
            return None
        top = round(float(ranked[0].value or 0.0), 9)
        tied = [r for r in ranked if round(float(r.value or 0.0), 9) == top]
        if len(tied) < 2:
            return None
        first = tied[0]
        names = ", ".join(str(r.number) for r in sorted(tied, key=lambda r: r.number))
        by = []
        if self.monitor != "val_loss" and "val_loss" in first.val_metrics:
            by.append(f"the lowest val_loss ({first.val_metrics['val_loss']:.4f})")
        if first.n_params is not None:
            by.append(f"then fewer parameters ({first.n_params:,})")
        return (f"trials {names} tie on {self.monitor or 'the value'} ({float(first.value or 0):.4f}, "
                f"a saturated or coarse metric); trial {first.number} is chosen by "
                + (" ".join(by) if by else "its number"))


def counts(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial uses up the budget: it finished, or failed by its own fault (a killed or
    interrupted trial has no fail_reason: the study owes it a rerun)."""
    return t.state in (TS.COMPLETE, TS.PRUNED) or (t.state == TS.FAIL
                                                  and "fail_reason" in t.user_attrs)


def counted(study: optuna.Study) -> int:
    """Trials of the study that use up the budget."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def taken(study: optuna.Study, below: int | None = None) -> int:
    """Trials that count, plus those running now (only numbers below ``below``, if given)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if (below is None or t.number < below)
               and (counts(t) or (t.state == TS.RUNNING and not t.user_attrs.get("surplus"))))


def fail_reason(exc: BaseException) -> str:
    """One line for a trial's failure; out-of-memory failures say so first."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    if cuda_oom(exc):
        return f"out of memory (CUDA): {text}"
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
        return f"out of memory (CPU): {text}"
    return text


def cuda_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is CUDA running out of memory."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(exc)


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
            environment = t.user_attrs.get("environment_failure")
            reason = f"not counted: {environment}" if environment else KILLED_REASON
        elif t.user_attrs.get("stopped_by"):
            reason = f"stopped by {t.user_attrs['stopped_by']}"
        out.append(TrialRecord(
            number=t.number, arch=arch, params=params,
            value=t.value if t.state == TS.COMPLETE else None,
            state=t.state.name, duration_s=float(t.user_attrs.get("duration_s", 0.0)),
            epochs=int(t.user_attrs.get("epochs", 0)), checkpoint=t.user_attrs.get("checkpoint"),
            reason=reason, n_params=t.user_attrs.get("n_params"),
            baseline=bool(t.user_attrs.get("baseline")),
            val_metrics=dict(t.user_attrs.get("val_metrics") or {}),
            best_epochs=list(t.user_attrs.get("best_epochs") or []),
            value_std=float(t.user_attrs.get("value_std") or 0.0),
            val_predictions=t.user_attrs.get("val_predictions"),
        ))
    return out
