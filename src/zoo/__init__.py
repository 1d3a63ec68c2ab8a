"""zoo: classic neural network architectures written from their papers.

The API, imported (with torch, registering every model family) on first use, so that the
command lines read their configuration, and refuse a bad one, before paying for it:

- ``zoo.create_model(name, weights=..., num_classes=...)`` (:mod:`zoo.models.pretrained`);
  ``zoo.list_weights(name)``, ``zoo.register_weights(name, tag, file, ...)``,
  ``zoo.weights_transforms(name, weights)`` (the weights table, :mod:`zoo.models.weights`);
- ``zoo.get_model``, ``zoo.list_models``, ``zoo.register_model`` (:mod:`zoo.models`);
- ``zoo.load(ckpt_path)``: a ``zoo-train`` checkpoint back as network, transform and class
  names or vocabularies (:func:`zoo.inference.load_trained`);
- fine-tuning: :mod:`zoo.finetune`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "create_model", "get_model", "list_models", "list_weights", "load", "register_model", "register_weights",
    "weights_transforms",
]  # fmt: skip
__version__ = "0.1.0"

_HOMES = {
    "create_model": ("zoo.models.pretrained", "create_model"),
    "list_weights": ("zoo.models.weights", "list_weights"),
    "register_weights": ("zoo.models.weights", "register_weights"),
    "weights_transforms": ("zoo.models.weights", "weights_transforms"),
    "get_model": ("zoo.models", "get_model"),
    "list_models": ("zoo.models", "list_models"),
    "register_model": ("zoo.models", "register_model"),
    "load": ("zoo.inference", "load_trained"),
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        module, attribute = _HOMES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
