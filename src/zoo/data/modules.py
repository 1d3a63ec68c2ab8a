"""Every data module of :mod:`zoo.data`, registered in :data:`DATASETS`, and :func:`build_datamodule`.

Importing this module imports every module of the package but :mod:`zoo.data.lightning`
(the data modules need no Lightning; training wraps them for it).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import zoo.data
from zoo.data.base import DATASETS, DataModule, ImageDataModule

for _module in pkgutil.iter_modules(zoo.data.__path__):
    if _module.name != "lightning":
        importlib.import_module(f"zoo.data.{_module.name}")


def build_datamodule(name: str, **kwargs: Any) -> DataModule:
    """Build the registered dataset ``name``; its settings are saved in every checkpoint."""
    datamodule = DATASETS.build(name, **kwargs)
    datamodule.save_hyperparameters({"name": name, **kwargs})
    return datamodule


__all__ = ["DATASETS", "DataModule", "ImageDataModule", "build_datamodule"]
