"""Architectures: builders registered by name (see ``base``), one module per input kind."""

from __future__ import annotations

from archselect.architectures.base import (
    architectures,
    build,
    check_hparams,
    count_parameters,
    hparam_types,
)

__all__ = ["architectures", "build", "check_hparams", "count_parameters", "hparam_types"]
