"""Ctrl-C, SIGTERM and SIGHUP end what is running cleanly: as one KeyboardInterrupt, raised where
the process is, so the code around it closes its runs and says what happened in one line. A
second signal during that clean-up is ignored.

Never inside a write to a store: an exception raised between a database driver's statements leaves
its transaction open, and the SQLite file locked, under the very clean-up that must write the
trial's end ("database is locked" after the busy timeout). A signal that lands there is held back
and raised the moment the outermost store call returns (a trace on that one frame says when)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Code that talks to a database or writes a store's files: an interrupt waits until it is done.
STORE_CODE = ("/sqlalchemy/", "/sqlite3/", "/psycopg/", "/psycopg2/", "/alembic/",
              "/mlflow/store/", "/optuna/storages/")


def store_frame(frame: FrameType | None) -> FrameType | None:
    """The outermost frame, of ``frame`` and those that called it, that runs a database driver or
    store; None when there is none."""
    found = None
    while frame is not None:
        if any(part in frame.f_code.co_filename.replace("\\", "/") for part in STORE_CODE):
            found = frame
        frame = frame.f_back
    return found


def _raise_on_return(frame: FrameType, signum: int, received: list[str]) -> None:
    """Raise KeyboardInterrupt for ``signum`` when ``frame`` returns (or raises): in the caller,
    with the store's work done."""
    def local(f: FrameType, event: str, arg: Any) -> Any:
        if event == "return":
            sys.settrace(None)
            received.append(signal.Signals(signum).name)
            raise KeyboardInterrupt
        return local

    frame.f_trace_lines = False
    frame.f_trace = local
    sys.settrace(lambda f, event, arg: None)  # tracing on, for that frame's return only


@contextmanager
def interrupt_on_signals(received: list[str]) -> Iterator[None]:
    """While inside, the first of SIGINT / SIGTERM / SIGHUP raises KeyboardInterrupt (its name is
    appended to ``received``); later ones are ignored. The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    traced = sys.gettrace() is not None  # a debugger or coverage: never hold a signal back
    held: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received or held:
            return
        inside = None if traced else store_frame(frame)
        if inside is not None:
            held.append(signum)
            _raise_on_return(inside, signum, received)
            return
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    old: dict[int, Any] = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        if not traced:
            sys.settrace(None)
        for s, h in old.items():  # Lightning leaves SIGINT ignored after an interrupt
            signal.signal(s, h)
