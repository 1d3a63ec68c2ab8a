"""Model families, one file each.

Importing this package imports every module in it, so a new family is registered by
adding its file: no list to keep in sync.
"""

import importlib
import pkgutil

from zoo.models.base import ImageModel, Seq2SeqModel
from zoo.models.factory import MODELS, build_on_meta, get_model, list_models, register_model

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "ImageModel", "Seq2SeqModel", "build_on_meta", "get_model", "list_models", "register_model"]
