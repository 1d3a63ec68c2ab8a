"""One LightningModule per task, found by name through :data:`TASKS`.

A task module takes ``model`` (``{"name": <registry name>, **kwargs}``), ``optim`` and
``sched`` configs plus its own options, builds its network from the model registry, and
names the validation metric that picks the best checkpoint (``monitor``, ``monitor_mode``).
Each data module says which task it serves (``DataModule.task``).

The task modules, and with them Lightning, are imported on first use of a name below
(:mod:`zoo.tasks.modules` imports every module of the package, so a new task is one new
file). What testing a trained network needs imports without them: :mod:`zoo.tasks.losses`
and :mod:`zoo.tasks.evaluation` (the test metrics and ``zoo-eval``'s loop).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TASKS", "ImageClassifier"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("zoo.tasks.modules"), name)
    raise AttributeError(f"module 'zoo.tasks' has no attribute {name!r}")
