"""Lightning's rich epoch bar with one more row: the study's progress over trials."""

from __future__ import annotations

import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar


class StudyProgressBar(RichProgressBar):
    """Shows ``trials done/total`` and the time budget left above the epoch bars.

    Args:
        done: trials finished so far in this invocation.
        total: ``search.n_trials``.
        deadline: ``time.monotonic()`` value at which the study's timeout ends, if any.
    """

    def __init__(self, done: int, total: int, deadline: float | None) -> None:
        super().__init__(leave=False)
        self.done = done
        self.total = total
        self.deadline = deadline

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self.progress is None:
            return
        left = ""
        if self.deadline is not None:
            left = f", {max(self.deadline - time.monotonic(), 0):.0f}s of budget left"
        self.progress.add_task(f"study: trial {self.done + 1}/{self.total}{left}",
                               total=self.total, completed=self.done)
