"""One generic registry for architectures, task families, data kinds and data sources."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from archselect.config.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (builders, classes, loaders).

    Args:
        kind: what the registry holds, used in messages (e.g. ``"architecture"``).
        key: the config key that names an entry, used in error messages (e.g. ``"arch"``).
        package: the package whose modules register the entries; they are imported on the first
            lookup, so a new entry is one decorated function in any module of it (no list).
    """

    def __init__(self, kind: str, key: str, package: str | None = None) -> None:
        self.kind = kind
        self.key = key
        self._package = package
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def _discover(self) -> None:
        if self._package is None:
            return
        package, self._package = self._package, None  # once; modules register as they import
        path = importlib.import_module(package).__path__
        for module in pkgutil.iter_modules(path):
            if not module.name.startswith("_"):
                importlib.import_module(f"{package}.{module.name}")

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

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's temporary entry); unknown names are ignored."""
        self._items.pop(name, None)
        self._meta.pop(name, None)

    def get(self, name: str) -> T:
        """Return the entry called ``name``.

        Raises:
            ConfigError: naming the known entries and the nearest match.
        """
        self._discover()
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

    def name_of(self, obj: T) -> str:
        """The name ``obj`` is registered under.

        Raises:
            KeyError: if it is not registered.
        """
        self._discover()
        for name, item in self._items.items():
            if item is obj:
                return name
        raise KeyError(f"{obj!r} is not a registered {self.kind}")

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        self._discover()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._discover()
        return len(self._items)
