"""Every data module of :mod:`zoo.data`, registered in :data:`DATASETS`, and :func:`build_datamodule`.

Importing this module imports every module of the package (and so Lightning, which the data
modules are built on).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import zoo.data
from zoo.data.base import DATASETS, DataModule, ImageDataModule

for _module in pkgutil.iter_modules(zoo.data.__path__):
    importlib.import_module(f"zoo.data.{_module.name}")


def build_datamodule(name: str, **kwargs: Any) -> DataModule:
    """Build the registered dataset ``name``; its settings are saved in every checkpoint."""
    datamodule = DATASETS.build(name, **kwargs)
    datamodule.save_hyperparameters({"name": name, **kwargs}, logger=False)  # the loggers get the run config
    return datamodule


__all__ = ["DATASETS", "DataModule", "ImageDataModule", "build_datamodule"]
