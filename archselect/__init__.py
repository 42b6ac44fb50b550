"""archselect: a declarative AutoML architecture selector for PyTorch.

``archselect.fit(...)`` runs a study from Python and ``archselect.select(...)`` returns its
selection as data (see ``archselect.api``); both are imported on first use, so that the command
starts without them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Result", "__version__", "fit", "select"]


def __getattr__(name: str) -> Any:
    if name in ("fit", "select", "Result"):
        from archselect import api

        return getattr(api, name)
    raise AttributeError(f"module 'archselect' has no attribute {name!r}")
