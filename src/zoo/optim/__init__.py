"""Optimizers and learning-rate schedules, built from configuration by name."""

from zoo.optim.factory import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from zoo.optim.groups import param_groups, parameter_lrs, stage_groups

__all__ = [
    "OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler", "param_groups", "parameter_lrs", "stage_groups",
]  # fmt: skip
