"""The registries through which models, datasets, optimizers and schedulers are found by name.

One small mechanism serves all of them: a :class:`Registry` maps a name to a builder
callable, refuses duplicates, lists names by shell pattern and answers an unknown name
with the close matches. Models use the module-level :data:`MODELS` registry through
:func:`register_model`, :func:`list_models` and :func:`get_model`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from zoo.errors import ConfigError, UnknownNameError

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


MODELS = Registry("model")


def register_model(fn: F) -> F:
    """Register a model builder under its function name."""
    return MODELS.register()(fn)


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching ``pattern`` (``fnmatch`` syntax), sorted."""
    return MODELS.names(pattern)


def get_model(name: str, *, features_only: bool = False, out_indices: Sequence[int] | None = None, **kwargs: Any):
    """Build the registered model ``name`` with constructor ``kwargs``.

    With ``features_only=True`` the result is a :class:`zoo.models.features.FeatureExtractor`:
    the model without its head, whose ``forward(x)`` returns the feature maps at
    ``out_indices`` (default: all of them) and whose ``feature_info`` describes them.
    """
    if not features_only:
        if out_indices is not None:
            raise ConfigError(f"out_indices={list(out_indices)} is only used with features_only=True")
        return MODELS.build(name, **kwargs)
    from zoo.models.features import FeatureExtractor  # zoo.models imports this module

    return FeatureExtractor(MODELS.build(name, **kwargs), out_indices, name=name)
