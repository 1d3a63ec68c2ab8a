"""Freezing for the fine-tuning modes: which stages train, and a table of what does."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from torch import nn

from zoo.errors import ConfigError
from zoo.finetune.config import FinetuneConfig
from zoo.models.base import ImageModel
from zoo.models.pretrained import Pretrained, load_into
from zoo.optim.groups import stage_groups

log = logging.getLogger(__name__)


def set_trainable(modules: Iterable[nn.Module], trainable: bool) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(trainable)


def frozen_stage_names(net: nn.Module, config: FinetuneConfig) -> list[str]:
    """The stages ``config.mode`` freezes at the start of training."""
    names = [name for name, _ in stage_groups(net)]
    frozen: list[str] = []
    if config.mode in ("freeze", "gradual"):
        frozen = names[:-1]
    elif config.mode == "partial":
        k = config.freeze_stages if config.freeze_stages >= 0 else len(names) + config.freeze_stages
        if not 0 <= k < len(names):
            raise ConfigError(
                f"finetune.freeze_stages={config.freeze_stages} is out of range for {type(net).__name__}, whose "
                f"{len(names)} stages are {', '.join(names)}: use 0..{len(names) - 1} (or -1..-{len(names)})"
            )
        frozen = names[:k]
    return [name for name in frozen if name not in config.reinit_stages]  # fresh stages always train


def freeze_modules(net: nn.Module, prefixes: Iterable[str]) -> None:
    """Freeze the parameters whose names start with one of ``prefixes`` (``encoder``, ``decoder.embedding``)."""
    named = dict(net.named_parameters())
    for prefix in prefixes:
        chosen = [p for n, p in named.items() if n == prefix or n.startswith(prefix + ".")]
        if not chosen:
            tops = sorted({n.split(".")[0] for n in named})
            raise ConfigError(
                f"finetune.freeze_modules: no parameters under '{prefix}' in {type(net).__name__}; "
                f"its modules: {', '.join(tops)}"
            )
        for p in chosen:
            p.requires_grad_(False)


def parameter_table(net: nn.Module, lrs: Mapping[str, float] | None = None) -> str:
    """Trainable and frozen parameter counts per stage, as a text table for the log."""
    rows, seen = [], set()
    lrs = lrs or {}
    groups = stage_groups(net)
    for i, (name, module) in enumerate(groups):
        params = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        frozen = sum(p.numel() for p in params if not p.requires_grad)
        lr = lrs.get(name, lrs.get("head" if i == len(groups) - 1 else "backbone"))
        rate = "-" if not trainable else (f"{lr:g}" if lr else "optim.lr")
        rows.append((name, f"{trainable:,}", f"{frozen:,}", rate))
    total_t = sum(p.numel() for p in net.parameters() if p.requires_grad)
    total_f = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    rows.append(("total", f"{total_t:,}", f"{total_f:,}", ""))
    header = ("stage", "trainable", "frozen", "lr")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(header), *(line(r) for r in rows)])


def stage_keys(net: nn.Module, names: Iterable[str]) -> list[str]:
    """The ``state_dict`` keys of the stages ``names`` of ``net`` (see :func:`stage_groups`)."""
    groups = dict(stage_groups(net))
    if unknown := [n for n in names if n not in groups]:
        raise ConfigError(
            f"finetune.reinit_stages: {type(net).__name__} has no stage {', '.join(map(repr, unknown))}; "
            f"its stages are {', '.join(groups)}"
        )
    tensors = {id(t) for n in names for t in [*groups[n].parameters(), *groups[n].buffers()]}
    return [k for k, t in net.state_dict(keep_vars=True).items() if id(t) in tensors]


def apply_finetuning(net: nn.Module, config: FinetuneConfig, pretrained: Pretrained | None) -> None:
    """Load the weights into ``net`` and freeze what ``config.mode`` freezes; logs the table.

    Called before the trainer exists, so that weights that do not fit are reported before
    anything is written to the run folder.
    """
    if config.mode != "none" and not isinstance(net, ImageModel):
        raise ConfigError(
            f"finetune={config.mode} works on the stages of image models; for {type(net).__name__} "
            f"use finetune=none with finetune.freeze_modules=[<module name>, ...]"
        )
    if pretrained is not None:
        keep_fresh = stage_keys(net, config.reinit_stages)
        load_into(net, pretrained, config.adapt_channels, config.reset_head, keep_fresh)
        if config.reinit_stages:
            log.info("stages %s keep their fresh initialisation (finetune.reinit_stages)", ", ".join(config.reinit_stages))
    frozen = set(frozen_stage_names(net, config))
    set_trainable((m for n, m in stage_groups(net) if n in frozen), False)
    freeze_modules(net, config.freeze_modules)
    if pretrained is not None or frozen or config.freeze_modules:
        log.info(
            "fine-tuning (finetune=%s, weights: %s):\n%s",
            config.mode, pretrained.name if pretrained else "none", parameter_table(net, config.stage_lrs()),
        )  # fmt: skip
