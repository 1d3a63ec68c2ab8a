"""zoo: classic neural network architectures written from their papers.

``zoo.get_model("lenet5")``, ``zoo.list_models()`` and ``zoo.register_model`` come from
:mod:`zoo.models`, imported (with torch, registering every model family) on first use:
the command lines read their configuration, and refuse a bad one, before paying for it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["get_model", "list_models", "register_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("zoo.models"), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
