"""Task families: the LightningModule (loss, metrics, steps) of each family of the table."""

from __future__ import annotations

from archselect.tasks.base import FamilyModule, families

__all__ = ["FamilyModule", "families"]
