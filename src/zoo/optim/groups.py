"""Parameter groups: weight decay by parameter kind, learning rates by stage.

The optimizer gets one group per (learning rate, decay or not) pair; fine-tuning's
discriminative rates come from the model's stages (``stages()`` of the model contract,
the top-level modules of other networks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from zoo.models.base import ImageModel


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    decay_norm_and_bias: bool,
    lrs: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and, optionally, a no-decay group.

    ``lrs`` (parameter name -> learning rate) gives parameters their own rate, as
    fine-tuning's discriminative rates do: each rate gets its own pair of groups with
    ``lr`` set; the other parameters keep the optimizer's ``lr``.
    """
    buckets: dict[float | None, tuple[list, list]] = {None: ([], [])}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        decay, no_decay = buckets.setdefault((lrs or {}).get(name), ([], []))
        (decay if decay_norm_and_bias or p.ndim > 1 else no_decay).append(p)
    groups = []
    for lr, (decay, no_decay) in buckets.items():
        rate = {} if lr is None else {"lr": lr}
        if decay or (lr is None and not lrs):  # without lrs: always a first, decayed group
            groups.append({"params": decay, "weight_decay": weight_decay, **rate})
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, **rate})
    return groups or [{"params": [], "weight_decay": weight_decay}]


def stage_groups(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """An image model's ``stages()``; for other networks, their top-level modules."""
    return net.stages() if isinstance(net, ImageModel) else list(net.named_children())


def parameter_lrs(net: nn.Module, stage_lrs: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """Learning rate of each parameter (by name, with ``prefix``) from rates by stage.

    Keys of ``stage_lrs`` are stage names of ``net.stages()``, ``head`` (the last
    stage) and ``backbone`` (every other stage); a stage's own name wins. Parameters
    of stages without a rate are left out (they take the optimizer's ``lr``).
    """
    groups = stage_groups(net)
    by_param: dict[int, float] = {}
    for i, (name, module) in enumerate(groups):
        alias = "head" if i == len(groups) - 1 else "backbone"
        lr = stage_lrs.get(name, stage_lrs.get(alias))
        for p in module.parameters():
            if lr is not None:
                by_param.setdefault(id(p), lr)
    return {prefix + n: by_param[id(p)] for n, p in net.named_parameters() if id(p) in by_param}
