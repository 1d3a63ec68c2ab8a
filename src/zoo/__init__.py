"""zoo: classic neural network architectures written from their papers.

Importing :mod:`zoo` registers every model family, so ``zoo.get_model("lenet5")``
works without further imports.
"""

from zoo.registry import get_model, list_models, register_model

from zoo import models as _models  # noqa: F401  (registers the model families)

__all__ = ["get_model", "list_models", "register_model"]
__version__ = "0.1.0"
