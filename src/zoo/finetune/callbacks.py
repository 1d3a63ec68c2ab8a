"""Lightning callbacks of fine-tuning: frozen batch norms kept in eval mode, gradual unfreezing."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from zoo.finetune.config import FinetuneConfig
from zoo.finetune.freezing import set_trainable
from zoo.optim.groups import param_groups, stage_groups

log = logging.getLogger(__name__)


def _is_frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


class FrozenBatchNormEval(L.Callback):
    """Keep batch norms whose parameters are frozen in eval mode during training.

    Lightning puts the whole module in train mode at the start of every epoch and after
    every validation, which would let frozen batch norms update their running statistics
    (and normalise with batch statistics). This resets them before every training batch;
    batch norms that have been unfrozen (``gradual``) go back to train mode.
    """

    def _apply(self, pl_module: L.LightningModule) -> None:
        for module in pl_module.modules():
            if isinstance(module, _BatchNorm):
                module.train(pl_module.training and not _is_frozen(module))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply(pl_module)


class GradualUnfreezing(BaseFinetuning):
    """Unfreeze the backbone stages one by one, from the head backwards, at ``unfreeze_epochs``.

    Unfrozen stages join the optimizer as new parameter groups at ``lr`` (split by weight
    decay as :func:`zoo.optim.param_groups` splits them). Lightning's
    ``unfreeze_and_add_param_group`` is not used for that step: it recognises parameters
    already in the optimizer by *value* (equal-initialised batch-norm scales look like
    duplicates), puts decayed and undecayed parameters in one group, and gives the new
    group none of the keys a running scheduler keeps per group (``initial_lr``,
    ``max_lr``, ...). Here the new group copies the head group's keys with the rates
    scaled by ``lr / lr_head``, so it follows the same schedule shape. Stages named in
    ``fresh`` (re-initialised, see ``finetune.reinit_stages``) train from the start, like
    the head, and are not in the schedule.
    """

    def __init__(
        self, unfreeze_epochs: Iterable[int], lr: float | None, weight_decay: float = 0.0,
        decay_norm_and_bias: bool = False, fresh: Iterable[str] = (),
    ):  # fmt: skip
        super().__init__()
        self.unfreeze_epochs, self.lr, self.fresh = list(unfreeze_epochs), lr, set(fresh)
        self.weight_decay, self.decay_norm_and_bias = weight_decay, decay_norm_and_bias

    def _backbone(self, pl_module: L.LightningModule) -> list[tuple[str, nn.Module]]:
        return [(name, m) for name, m in stage_groups(pl_module.net)[:-1] if name not in self.fresh]

    def _schedule(self, pl_module: L.LightningModule) -> list[tuple[int, str, nn.Module]]:
        backbone = self._backbone(pl_module)
        return [(e, name, module) for e, (name, module) in zip(self.unfreeze_epochs, reversed(backbone))]

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable((m for _, m in self._backbone(pl_module)), False)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        for start, name, module in self._schedule(pl_module):
            if epoch < start:
                continue
            self.make_trainable(module)
            present = {id(p) for g in optimizer.param_groups for p in g["params"]}
            new = [(n, p) for n, p in module.named_parameters() if id(p) not in present]
            if not new:  # unfrozen before (or restored from a checkpoint)
                continue
            reference = optimizer.param_groups[0]
            base = reference.get("max_lr", reference.get("initial_lr", reference["lr"]))
            scale = (self.lr if self.lr is not None else base) / base
            for group in param_groups(new, self.weight_decay, self.decay_norm_and_bias):
                if not group["params"]:
                    continue
                keys = {k: v for k, v in reference.items() if k not in ("params", "weight_decay")}
                rates = ("lr", "initial_lr", "max_lr", "min_lr")
                keys.update({k: reference[k] * scale for k in rates if k in reference})
                optimizer.add_param_group({**keys, **group})
                _extend_schedulers(pl_module.trainer, optimizer.param_groups[-1])
            count = f"{sum(p.numel() for _, p in new):,}"
            log.info("epoch %d: unfroze stage %s (%s parameters, lr %g)", epoch, name, count, base * scale)


def _extend_schedulers(trainer: L.Trainer, group: dict[str, Any]) -> None:
    """Give the running schedulers a per-group entry for a group added after they were built."""
    n = len(trainer.optimizers[0].param_groups)
    pending = [c.scheduler for c in trainer.lr_scheduler_configs]
    while pending:
        scheduler = pending.pop()
        pending.extend(getattr(scheduler, "_schedulers", []))  # SequentialLR, ChainedScheduler
        entries = {"base_lrs": group.get("initial_lr", group["lr"]), "_last_lr": group["lr"], "min_lrs": None}
        for attr, value in entries.items():
            values = getattr(scheduler, attr, None)
            if isinstance(values, list) and len(values) == n - 1:
                values.append(values[0] if value is None else value)


def finetune_callbacks(config: FinetuneConfig, optim: Mapping[str, Any]) -> list[L.Callback]:
    """The callbacks ``config`` needs: frozen batch norms kept in eval; gradual unfreezing."""
    callbacks: list[L.Callback] = []
    if config.mode == "gradual":
        callbacks.append(
            GradualUnfreezing(
                config.unfreeze_epochs, config.lr_backbone,
                optim.get("weight_decay", 0.0), optim.get("decay_norm_and_bias", False), config.reinit_stages,
            )
        )  # fmt: skip
    if config.mode in ("freeze", "partial", "gradual") or config.freeze_modules:
        callbacks.append(FrozenBatchNormEval())
    return callbacks
