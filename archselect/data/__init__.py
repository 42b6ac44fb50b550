"""Data sources and the DataModule of each data kind."""

from __future__ import annotations

from typing import Any

from archselect.data.base import DataSpec, data_sources
from archselect.registry import Registry

datamodules: Registry[Any] = Registry("data kind", "data.source")

from archselect.data.text import TextDataModule  # noqa: E402

datamodules.register("text")(TextDataModule)

__all__ = ["DataSpec", "TextDataModule", "data_sources", "datamodules"]
