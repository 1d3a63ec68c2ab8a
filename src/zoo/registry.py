"""The registries through which models, datasets, optimizers and schedulers are found by name.

One small mechanism serves all of them: a :class:`Registry` maps a name to a builder
callable, refuses duplicates, lists names by shell pattern and answers an unknown name
with the close matches. This module knows nothing of what is registered: the models'
registry and factory (:func:`zoo.models.get_model`) live with the models.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from zoo.errors import UnknownNameError

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """A name -> builder table for one kind of thing (``"model"``, ``"dataset"``, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator registering a builder under ``name`` (default: the function's name)."""

        def decorator(fn: F) -> F:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._entries[key] = fn
            return fn

        return decorator

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name``; an unknown name lists the choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)
