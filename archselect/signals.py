"""Ctrl-C, SIGTERM and SIGHUP end what is running cleanly: as one KeyboardInterrupt, raised where
the process is, so the code around it closes its runs and says what happened in one line. A
second signal during that clean-up is ignored."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def interrupt_on_signals(received: list[str]) -> Iterator[None]:
    """While inside, the first of SIGINT / SIGTERM / SIGHUP raises KeyboardInterrupt (its name is
    appended to ``received``); later ones are ignored. The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if received:
            return
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():  # Lightning leaves SIGINT ignored after an interrupt
            signal.signal(s, h)
