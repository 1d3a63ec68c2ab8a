"""Optimizers and learning-rate schedules, built from configuration by name."""

from zoo.optim import reference  # noqa: F401  (registers sgd_ref, momentum_ref, rmsprop_ref, adam_ref)
from zoo.optim.factory import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler, param_groups

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler", "param_groups", "reference"]
