"""Optimizers and learning-rate schedules, built from configuration by name."""

from zoo.optim.factory import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler, param_groups

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler", "param_groups"]
