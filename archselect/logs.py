"""The libraries' own messages during a study go to the study's log file, not into the report.

MLflow's registration lines, Optuna's trial lines, Lightning's device lines and the like would
land between the report's tables; ``<runs_dir>/logs/<study>.log`` keeps them (appended, with the
time and the library's name) for whoever wants to read them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the loggers routed to the file (and their children)
LIBRARIES = ("mlflow", "alembic", "optuna", "lightning.pytorch", "lightning.fabric")


def log_path(runs_dir: Path, study_name: str) -> Path:
    """Where a study's library messages go."""
    return runs_dir / "logs" / f"{re.sub(r'[^0-9A-Za-z._=,-]+', '_', study_name)}.log"


@contextmanager
def library_log(path: Path) -> Iterator[Path]:
    """Route the ``LIBRARIES`` loggers' messages (INFO and up) to ``path`` while inside; their
    levels, handlers and propagation are as before afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    saved = []
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, list(logger.handlers), logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    try:
        yield path
    finally:
        for logger, level, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        handler.close()
