"""Config schemas, composition helpers and the errors users see."""

from __future__ import annotations

from archselect.config.errors import ArchselectError, ConfigError, DataError

__all__ = ["ArchselectError", "ConfigError", "DataError"]
