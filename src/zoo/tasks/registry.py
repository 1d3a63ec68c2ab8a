"""The registry of task modules by name (``classification``, ``seq2seq``), filled as they are imported."""

from zoo.registry import Registry

TASKS = Registry("task")
