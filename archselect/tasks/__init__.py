"""Task families: the LightningModule (loss, metrics, steps) for each family of the table."""

from __future__ import annotations

from typing import Any

from archselect.registry import Registry

families: Registry[Any] = Registry("task family", "selector.table.<task>.family")

from archselect.tasks import classification as _classification  # noqa: E402, F401
from archselect.tasks import forecasting as _forecasting  # noqa: E402, F401
from archselect.tasks import regression as _regression  # noqa: E402, F401

__all__ = ["families"]
