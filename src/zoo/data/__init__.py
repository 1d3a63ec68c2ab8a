"""Datasets as LightningDataModules, found by name through :data:`DATASETS`.

Importing this package imports every module in it, so a new dataset is one new file
that registers its builder.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from zoo.data.base import DATASETS, DataModule, ImageDataModule

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_datamodule(name: str, **kwargs: Any) -> DataModule:
    """Build the registered dataset ``name``; its settings are saved in every checkpoint."""
    datamodule = DATASETS.build(name, **kwargs)
    datamodule.save_hyperparameters({"name": name, **kwargs}, logger=False)  # the loggers get the run config
    return datamodule


__all__ = ["DATASETS", "DataModule", "ImageDataModule", "build_datamodule"]
