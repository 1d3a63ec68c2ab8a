"""zoo: classic neural network architectures written from their papers.

Importing :mod:`zoo` imports :mod:`zoo.models`, which registers every model family, so ``zoo.get_model("lenet5")``
works without further imports.
"""

from zoo.models import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
__version__ = "0.1.0"
