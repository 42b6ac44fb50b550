"""One generic registry for architectures, task families and data sources."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from archselect.config.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (builders, classes).

    Args:
        kind: what the registry holds, used in messages (e.g. ``"architecture"``).
        key: the config key that names an entry, used in error messages (e.g. ``"arch"``).
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator that registers an object under ``name`` and returns it unchanged.

        Raises:
            ValueError: if ``name`` is already registered.
        """

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            self._meta[name] = dict(meta)
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry called ``name``.

        Raises:
            ConfigError: naming the known entries and the nearest match.
        """
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                self.key, f"unknown {self.kind} {name!r}", given=name, allowed=self.names()
            ) from None

    def meta(self, name: str) -> dict[str, Any]:
        """Return the metadata given at registration for ``name``."""
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
