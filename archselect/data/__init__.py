"""Data sources and the DataModule of each data kind."""

from __future__ import annotations

from typing import Any

from archselect.data.base import DataSpec, data_sources
from archselect.registry import Registry

datamodules: Registry[Any] = Registry("data kind", "data.source")

from archselect.data.image import ImageDataModule  # noqa: E402
from archselect.data.series import SequenceDataModule, SeriesDataModule  # noqa: E402
from archselect.data.tabular import TabularDataModule  # noqa: E402
from archselect.data.text import TextDataModule  # noqa: E402

datamodules.register("text")(TextDataModule)
datamodules.register("tabular")(TabularDataModule)
datamodules.register("image")(ImageDataModule)
datamodules.register("series")(SeriesDataModule)
datamodules.register("sequences")(SequenceDataModule)

__all__ = ["DataSpec", "ImageDataModule", "SequenceDataModule", "SeriesDataModule",
           "TabularDataModule", "TextDataModule", "data_sources",
           "datamodules"]
