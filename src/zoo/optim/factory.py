"""Build ``torch.optim`` optimizers and schedulers from plain config dictionaries.

Optimizer config: ``{name, lr, weight_decay, decay_norm_and_bias, **options}`` where the
options are the optimizer's own keyword arguments (``momentum``, ``nesterov``, ``betas``,
...). With ``decay_norm_and_bias: false`` (the usual practice since Goyal et al., 2017),
one-dimensional parameters, i.e. biases and the scales/shifts of normalisation layers,
get no weight decay.

Scheduler config: ``{name, debug, **options}``; see :func:`build_scheduler`. ``debug: true``
(set by the ``debug=`` configs, ``configs/debug/``) lets a schedule that needs more optimizer
steps than a short run has give way to a constant learning rate, with one log line; without
it such a run is refused.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from zoo.errors import ConfigError
from zoo.optim.groups import param_groups
from zoo.reference import optim as reference
from zoo.registry import Registry

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd")(torch.optim.SGD)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("rmsprop")(torch.optim.RMSprop)
# The lecture's update rules written out (zoo.reference.optim), trainable by name.
OPTIMIZERS.register("sgd_ref")(reference.SGD)
OPTIMIZERS.register("momentum_ref")(reference.Momentum)
OPTIMIZERS.register("rmsprop_ref")(reference.RMSProp)
OPTIMIZERS.register("adam_ref")(reference.Adam)

SCHEDULERS = Registry("scheduler")

log = logging.getLogger("zoo")


class ScheduleTooShort(ConfigError):
    """The schedule needs at least ``needed`` optimizer steps and the run has ``total``."""

    def __init__(self, message: str, needed: int, total: int):
        super().__init__(message)
        self.needed, self.total = needed, total


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]],
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    decay_norm_and_bias: bool = False,
    param_lrs: Mapping[str, float] | None = None,
    **options: Any,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``named_params`` (e.g. ``model.named_parameters()``);
    ``param_lrs`` sets the rate of some parameters by name (see :func:`param_groups`)."""
    cls = OPTIMIZERS.get(name)
    check_option_types("optim", cls, {"lr": lr, "weight_decay": weight_decay, **options})
    groups = param_groups(named_params, weight_decay, decay_norm_and_bias, param_lrs)
    try:
        return cls(groups, lr=lr, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer '{name}': {err}") from None


def check_option_types(group: str, target: Any, options: Mapping[str, Any]) -> None:
    """Refuse an option whose kind differs from its default's in ``target``'s signature
    (``optim.lr=abc``), naming the key: the callee's own error would not."""
    parameters = inspect.signature(target).parameters
    for key, value in options.items():
        default = parameters[key].default if key in parameters else None
        if isinstance(default, bool):
            kind, ok = "true or false", isinstance(value, bool)
        elif isinstance(default, (int, float)):
            kind, ok = "a number", isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, tuple):
            kind, ok = "a list", isinstance(value, (list, tuple))
        else:
            continue
        if not ok:
            raise ConfigError(f"{group}.{key} must be {kind}, got {value!r}")


def _steps(value: float, steps_per_epoch: int) -> int:
    """Scheduler lengths are given in epochs (may be fractional); convert to steps."""
    return int(round(value * steps_per_epoch))


@SCHEDULERS.register("none")
def _none(optimizer, total_steps, steps_per_epoch):
    return None


@SCHEDULERS.register("step")
def _step(optimizer, total_steps, steps_per_epoch, step_size: int = 30, gamma: float = 0.1, milestones: list[int] | None = None):
    """Multiply the LR by ``gamma`` every ``step_size`` epochs, or at each of the epochs in
    ``milestones`` when given (He et al., 2015: epochs 30, 60 on ImageNet)."""
    if milestones:
        return {"scheduler": lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma), "interval": "epoch"}
    return {"scheduler": lr_scheduler.StepLR(optimizer, step_size, gamma), "interval": "epoch"}


@SCHEDULERS.register("cosine")
def _cosine(
    optimizer, total_steps, steps_per_epoch,
    warmup_epochs: float = 0.0, warmup_start_factor: float = 0.01, min_lr: float = 0.0,
):  # fmt: skip
    """Linear warmup, then cosine decay to ``min_lr`` (Loshchilov & Hutter, 2017), per step."""
    warmup = min(_steps(warmup_epochs, steps_per_epoch), max(total_steps - 1, 0))
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup, 1), eta_min=min_lr)
    if warmup == 0:
        return {"scheduler": cosine, "interval": "step"}
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup)
    return {
        "scheduler": lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup]),
        "interval": "step",
    }


@SCHEDULERS.register("onecycle")
def _onecycle(
    optimizer, total_steps, steps_per_epoch,
    pct_start: float = 0.25, div_factor: float = 25.0, final_div_factor: float = 1e4,
    anneal_strategy: str = "cos", cycle_momentum: bool = True,
):  # fmt: skip
    """One-cycle policy (Smith & Topin, 2018): LR up to ``optim.lr``, then annealed, per step."""
    # OneCycleLR's warm-up phase ends at step pct_start * total_steps - 1, which must be past
    # step 0: fewer steps than that divide by zero inside it.
    needed = math.floor(1 / pct_start) + 1 if 0 < pct_start < 1 else 2
    if total_steps < needed:
        raise ScheduleTooShort(
            f"the one-cycle schedule (sched=onecycle, pct_start={pct_start}) needs at least {needed} optimizer "
            f"steps, this run has {total_steps}; train longer (trainer.max_epochs, trainer.max_steps, more data) "
            f"or choose sched=cosine or sched=none",
            needed, total_steps,
        )
    defaults = optimizer.defaults
    has_momentum = defaults.get("momentum", 0) > 0 or "betas" in defaults
    scheduler = lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal_strategy=anneal_strategy,
        cycle_momentum=cycle_momentum and has_momentum,
    )
    return {"scheduler": scheduler, "interval": "step"}


@SCHEDULERS.register("plateau")
def _plateau(
    optimizer, total_steps, steps_per_epoch,
    monitor: str = "val/loss", mode: str = "min", factor: float = 0.1, patience: int = 10,
):  # fmt: skip
    """Divide the LR by 1/``factor`` when ``monitor`` stops improving for ``patience`` epochs."""
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)
    return {"scheduler": scheduler, "interval": "epoch", "monitor": monitor}


@SCHEDULERS.register("inverse_sqrt")
def _inverse_sqrt(optimizer, total_steps, steps_per_epoch, d_model: int | None = None, warmup_steps: int = 4000):
    """Vaswani et al. (2017), eq. 3: ``lr = optim.lr * d_model^-0.5 * min(s^-0.5, s * warmup^-1.5)``
    at step ``s`` (from 1): linear warmup, then decay as ``1/sqrt(s)``, per step. With
    ``optim.lr=1`` this is the paper's schedule; ``optim.lr`` scales it. ``d_model=None``
    (the config's default) is filled in by the task with the model's own width."""
    if d_model is None:
        raise ConfigError("inverse_sqrt needs sched.d_model: the model has no d_model (it is a Transformer schedule)")
    if d_model < 1 or warmup_steps < 1:
        raise ConfigError(f"inverse_sqrt needs d_model >= 1 and warmup_steps >= 1, got {d_model}, {warmup_steps}")

    def factor(step: int) -> float:
        s = step + 1  # LambdaLR counts from 0
        return d_model**-0.5 * min(s**-0.5, s * warmup_steps**-1.5)

    return {"scheduler": lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, steps_per_epoch: int, debug: bool = False,
    **options: Any,
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` config dict for the schedule ``name``, or ``None`` (a constant rate).

    A schedule that needs more than the run's ``total_steps`` is refused, unless ``debug``
    (a ``debug=`` run, a few batches by design): then the rate stays constant and one line says so.
    """
    builder = SCHEDULERS.get(name)
    check_option_types("sched", builder, options)
    if not isinstance(debug, bool):
        raise ConfigError(f"sched.debug must be true or false, got {debug!r}")
    try:
        return builder(optimizer, total_steps, steps_per_epoch, **options)
    except ScheduleTooShort as err:
        if not debug:
            raise ConfigError(f"scheduler '{name}': {err}") from None
        log.info(
            "debug run: sched=%s needs at least %d optimizer steps and this run has %d; "
            "training at a constant learning rate instead", name, err.needed, err.total,
        )  # fmt: skip
        return None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"scheduler '{name}': {err}") from None
