"""The errors archselect shows to users: one line each, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class ArchselectError(Exception):
    """A failure the user can act on; the CLI prints its message as one line."""


class ConfigError(ArchselectError):
    """A bad configuration value, named by its full key.

    The message reads: ``key: what is wrong; given X; expected one of: A, B (did you mean 'A'?);
    fix: ...``.
    """

    def __init__(
        self,
        key: str,
        problem: str,
        *,
        given: Any = None,
        allowed: Iterable[Any] | str | None = None,
        fix: str | None = None,
    ) -> None:
        self.key = key
        self.problem = problem
        self.given = given
        parts = [f"{key}: {problem}"]
        if given is not None and repr(given) not in problem:
            parts.append(f"given {given!r}")
        if allowed is not None:
            if isinstance(allowed, str):
                parts.append(f"expected {allowed}")
            else:
                names = sorted(str(a) for a in allowed)
                text = f"expected one of: {', '.join(names)}" if names else "nothing is allowed"
                hint = suggest(given, names) if isinstance(given, str) else None
                if hint:
                    text += f" (did you mean {hint!r}?)"
                parts.append(text)
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__("; ".join(parts))


def store_failure(key: str, what: str, exc: BaseException, url: str, fix: str) -> ConfigError:
    """A store's failure (``exc``) as one line naming the config ``key`` of the store at ``url``:
    the exception's first line, passwords masked."""
    from archselect.secrets import mask_secrets, scrub

    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return ConfigError(key, f"{what} ({type(exc).__name__}: {scrub(first, url)})",
                       given=mask_secrets(url), fix=fix)


class DataError(ArchselectError):
    """Data that cannot be used as given (missing file, missing column, one class, ...)."""


class ContinuousTarget(DataError):
    """A classification target that holds many distinct numbers (a regression in disguise).

    Args:
        message: the error line (shown when no rule switches the task).
        finding: what the profile found, for the rule's note.
    """

    def __init__(self, message: str, finding: str) -> None:
        super().__init__(message)
        self.finding = finding


def suggest(given: str, names: Iterable[str]) -> str | None:
    """Return the closest known name to ``given``, if one is close enough."""
    matches = difflib.get_close_matches(given, list(names), n=1, cutoff=0.6)
    return matches[0] if matches else None
