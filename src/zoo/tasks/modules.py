"""Every task module of :mod:`zoo.tasks`, registered in :data:`TASKS`.

Importing this module imports every module of the package (and so Lightning, which the task
modules are built on).
"""

from __future__ import annotations

import importlib
import pkgutil

import zoo.tasks
from zoo.tasks.registry import TASKS

for _module in pkgutil.iter_modules(zoo.tasks.__path__):
    importlib.import_module(f"zoo.tasks.{_module.name}")

from zoo.tasks.classification import ImageClassifier  # noqa: E402

__all__ = ["TASKS", "ImageClassifier"]
