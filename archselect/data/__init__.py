"""Data: sources (files, bundled sets) and one DataModule per data kind (see ``base``).

Data kinds and sources register themselves; the registries import this package's modules on
first use, so a new kind or source is one module (or one function) and one ``conf/data`` file.
"""

from __future__ import annotations

from archselect.data.base import DataSpec, data_sources, datamodules, open_datamodule

__all__ = ["DataSpec", "data_sources", "datamodules", "open_datamodule"]
