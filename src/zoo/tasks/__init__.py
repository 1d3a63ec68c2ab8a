"""One LightningModule per task, found by name through :data:`TASKS`.

A task module takes ``model`` (``{"name": <registry name>, **kwargs}``), ``optim`` and
``sched`` configs plus its own options, builds its network from the model registry, and
names the validation metric that picks the best checkpoint (``monitor``, ``monitor_mode``).
Each data module says which task it serves (``DataModule.task``). Importing this package
imports every module in it, so a new task is one new file.
"""

import importlib
import pkgutil

from zoo.registry import Registry

TASKS = Registry("task")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from zoo.tasks.classification import ImageClassifier  # noqa: E402

__all__ = ["TASKS", "ImageClassifier"]
