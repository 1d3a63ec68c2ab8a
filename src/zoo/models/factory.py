"""The model registry and factory: ``register_model``, ``list_models``, ``get_model``.

Every family file registers its builders here (``@register_model``); importing
:mod:`zoo.models` imports every family, so the registry is complete from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from zoo.errors import ConfigError
from zoo.models.features import FeatureExtractor
from zoo.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

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
    return FeatureExtractor(MODELS.build(name, **kwargs), out_indices, name=name)
