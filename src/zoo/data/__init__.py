"""Datasets as data modules, found by name through :data:`DATASETS`.

The data modules are plain objects with Lightning's data-module hooks; training hands them to
Lightning through :func:`zoo.data.lightning.for_lightning`. They are imported on first use of
a name below (:mod:`zoo.data.modules` imports every module of the package, so a new dataset
is one new file that registers its builder). The parts that using a trained model needs import
without them: :mod:`zoo.data.inputs` (the preprocessing and vocabularies a checkpoint
records), :mod:`zoo.data.images`, :mod:`zoo.data.vocab`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DATASETS", "DataModule", "ImageDataModule", "build_datamodule"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("zoo.data.modules"), name)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
