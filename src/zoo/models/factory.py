"""The model registry and factory: ``register_model``, ``list_models``, ``get_model``,
``build_on_meta``.

Every family file registers its builders here (``@register_model``, or
``@register_model(weights=torchvision_weights("ResNet50_Weights"))`` for a model with
published weights: :mod:`zoo.models.weights`); importing :mod:`zoo.models` imports every
family, so the registry is complete from then on.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, overload

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models.features import FeatureExtractor
from zoo.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

MODELS = Registry("model")
#: The weights each model declares where it is registered (model name -> a source whose
#: ``entries(model)`` lists them, :class:`zoo.models.weights.TorchvisionWeights`).
DECLARED_WEIGHTS: dict[str, Any] = {}


@overload
def register_model(fn: F) -> F: ...
@overload
def register_model(*, weights: Any = None) -> Callable[[F], F]: ...
def register_model(fn: F | None = None, *, weights: Any = None) -> F | Callable[[F], F]:
    """Register a model builder under its function name, with the published ``weights``
    that exist for it (:func:`zoo.models.weights.torchvision_weights`; none by default)."""

    def decorator(builder: F) -> F:
        MODELS.register()(builder)
        if weights is not None:
            DECLARED_WEIGHTS[builder.__name__] = weights
        return builder

    return decorator(fn) if fn is not None else decorator


# torch.nn.init's in-place initialisers (normal_, kaiming_uniform_, ...), which every layer's
# reset_parameters calls through the module, so replacing them here reaches every layer.
_INITIALISERS = [name for name in vars(nn.init) if name.endswith("_") and not name.startswith("_")]


def _skipping_meta(initialise: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(initialise)
    def initialise_unless_meta(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return tensor if tensor.is_meta else initialise(tensor, *args, **kwargs)

    return initialise_unless_meta


@contextlib.contextmanager
def _no_meta_initialisation() -> Iterator[None]:
    """``torch.nn.init``'s initialisers leave ``meta`` tensors as they are (they hold no
    values): some of them run on meta tensors through torch's Python references, whose first
    call imports ``torch._dynamo``, over a second. Real tensors are initialised as always, so
    a model built meanwhile in another thread is unaffected."""
    saved = {name: vars(nn.init)[name] for name in _INITIALISERS}
    try:
        for name, initialise in saved.items():
            setattr(nn.init, name, _skipping_meta(initialise))
        yield
    finally:
        for name, initialise in saved.items():
            setattr(nn.init, name, initialise)


def build_on_meta(builder: Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
    """Build a model on the ``meta`` device: shapes without storage or initialisation cost."""
    with torch.device("meta"), _no_meta_initialisation():
        return builder(**kwargs)


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
