"""Optuna search: trial states and counting (``trials``), storages and dead workers
(``storage``), one trial (``objective``), the study and its loop (``study``), worker processes
(``workers``), the progress bar (``progress``)."""
