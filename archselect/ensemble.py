"""Greedy ensemble selection over the trials' validation predictions (Caruana et al., "Ensemble
selection from libraries of models", ICML 2004): start from the best single trial, then add, with
replacement, the trial whose addition scores best; the weights are how often each was added.
The ensemble that scored best along the way is kept; it is used only when it beats the best
single trial on the same validation rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Ensemble:
    """What the selection found.

    Attributes:
        weights: trial number -> weight (they sum to 1), in the order first added.
        value: the ensemble's validation value.
        single: the best single trial's validation value on the same rows.
        history: the value after each round (the first is the best single trial's).
    """

    weights: dict[int, float]
    value: float
    single: float
    history: list[float]

    @property
    def members(self) -> list[int]:
        return list(self.weights)

    def describe(self) -> str:
        """``trial 3 (0.60) + trial 5 (0.40)``."""
        return " + ".join(f"trial {n} ({w:.2f})" for n, w in self.weights.items())


def combine(scores: dict[int, torch.Tensor], weights: dict[int, float]) -> torch.Tensor:
    """The weighted mean of the members' scores (class probabilities, or values)."""
    return sum((w * scores[n] for n, w in weights.items()),
               torch.zeros_like(next(iter(scores.values()))))


def greedy_selection(scores: dict[int, torch.Tensor], targets: torch.Tensor,
                     metric: Callable[[torch.Tensor, torch.Tensor], float], *, maximize: bool,
                     rounds: int, best: int) -> Ensemble:
    """Caruana's selection with replacement.

    Args:
        scores: each trial's validation scores, on the same rows in the same order.
        targets: the targets of those rows.
        metric: the monitored metric of scores against targets.
        maximize: whether a higher metric is better.
        rounds: how many members to add after the first (the ensemble's size is at most
            ``rounds + 1``).
        best: the best single trial (the first member).
    """
    def better(a: float, b: float) -> bool:
        return a > b if maximize else a < b

    counts: Counter[int] = Counter({best: 1})
    order = [best]
    total = scores[best].clone()
    single = metric(total, targets)
    history = [single]
    kept = (dict(counts), single)
    for _ in range(rounds):
        size = sum(counts.values()) + 1
        trial_value: tuple[int, float] | None = None
        for n, s in scores.items():
            value = metric((total + s) / size, targets)
            if trial_value is None or better(value, trial_value[1]):
                trial_value = (n, value)
        assert trial_value is not None
        n, value = trial_value
        counts[n] += 1
        if n not in order:
            order.append(n)
        total = total + scores[n]
        history.append(value)
        if better(value, kept[1]):
            kept = (dict(counts), value)
    chosen, value = kept
    size = sum(chosen.values())
    weights = {n: chosen[n] / size for n in order if n in chosen}
    return Ensemble(weights=weights, value=value, single=single, history=history)
