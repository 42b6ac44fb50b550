"""Locks: commands started at once in one folder take turns to create the stores (file locks), and
only one of the commands on a study finishes it (a file lock for a local study storage; a lock
held by the database server for PostgreSQL and MySQL, whose commands may run on other
machines)."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def held(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` while inside; yields True. With ``wait=False`` it yields
    False at once when another process holds it. A folder is locked as it is (nothing is written
    in it); a file is created if need be."""
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def study_lock(storage: str, name: str, local: Path | None, *, wait: bool) -> Iterator[bool]:
    """A lock named ``name`` among the commands on one study storage (e.g. the one that may finish
    a study); yields True while held. With ``wait=False`` it yields False at once when another
    process holds it. On a PostgreSQL or MySQL storage the database server holds it (a session
    lock: a killed process loses it), so commands on other machines take turns too; on a local
    storage the file ``local`` does (None: nothing, where the caller holds a local lock already)."""
    dialect = storage.split(":", 1)[0].split("+", 1)[0]
    if dialect not in ("postgresql", "mysql"):
        if local is None:
            yield True
            return
        with held(local, wait=wait) as mine:
            yield mine
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    digest = hashlib.sha256(f"archselect {name}".encode()).digest()
    args = {"k": int.from_bytes(digest[:8], "big", signed=True), "n": digest.hex()[:60]}
    if dialect == "postgresql":
        take = "SELECT pg_advisory_lock(:k)" if wait else "SELECT pg_try_advisory_lock(:k)"
        give = "SELECT pg_advisory_unlock(:k)"
    else:
        take = f"SELECT GET_LOCK(:n, {-1 if wait else 0})"
        give = "SELECT RELEASE_LOCK(:n)"
    engine = sqlalchemy.create_engine(storage, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            got = conn.execute(sqlalchemy.text(take), args).scalar()
            mine = wait or bool(got)  # pg_advisory_lock returns nothing when it has the lock
            conn.commit()
            try:
                yield mine
            finally:
                if mine:
                    conn.execute(sqlalchemy.text(give), args)
                    conn.commit()
    finally:
        engine.dispose()
