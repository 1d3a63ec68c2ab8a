"""What every task module shares: the optimizer/scheduler wiring and the training-loss log.

The training loss is logged the way a small model can afford every step: its epoch mean
accumulates in a :class:`torchmetrics.MeanMetric` (synchronised across processes, logged
once per epoch as ``train/loss_epoch``), and the per-step value ``train/loss_step`` is
passed to ``self.log`` only on the steps the loggers write (every
``trainer.log_every_n_steps``): each ``self.log`` call costs Python work that, for a model
as small as LeNet-5, is a visible share of the step (``scripts/bench_default.py`` times the
training loop against plain PyTorch).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from zoo.checkpoint import INPUTS_KEY
from zoo.errors import ConfigError
from zoo.optim import build_optimizer, build_scheduler

# Schedules whose shape is fixed by their length (OneCycleLR's total_steps, cosine's T_max):
# a resumed run cannot stretch them to a longer run.
LENGTH_BOUND_SCHEDULES = frozenset({"onecycle", "cosine"})
# The schedule length a fast_dev_run builds its schedule for (long enough for any schedule's phases).
SMOKE_TEST_SCHEDULE_STEPS = 100


class TaskModule(L.LightningModule):
    """Base class of the task modules: subclasses set ``monitor`` and ``monitor_mode``.

    Subclasses call :meth:`log_train_loss` in ``training_step`` and, if they override
    ``on_train_epoch_end``, ``super().on_train_epoch_end()``. ``hparams.optim`` and
    ``hparams.sched`` hold the optimizer and scheduler configs.
    """

    monitor: str  # the validation metric that picks the best checkpoint
    monitor_mode: str  # "max" or "min"

    def __init__(self) -> None:
        super().__init__()
        # NaN losses are the business of the StopOnNonFiniteLoss callback, not of a warning here.
        self.train_loss = MeanMetric(nan_strategy="disable")

    def log_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        loss = loss.detach()
        self.train_loss.update(loss, batch_size)
        trainer = self._trainer  # None when a step is run by hand, without a Trainer
        every = trainer.log_every_n_steps if trainer is not None else 0
        if every and (self.global_step + 1) % every == 0:
            self.log("train/loss_step", loss, prog_bar=True, batch_size=batch_size)

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_epoch", self.train_loss.compute())
        self.train_loss.reset()

    def parameter_lrs(self) -> dict[str, float] | None:
        """Learning rates by parameter name that differ from ``optim.lr`` (``None``: none)."""
        return None

    def param_group_names(self) -> dict[str, str]:
        """The name of each parameter's rate, by parameter name, for the epoch line's
        ``lr head 0.001, backbone 1e-05`` (:func:`zoo.callbacks.learning_rates`); empty: unnamed."""
        return {}

    def scheduler_options(self) -> dict[str, Any]:
        """``sched`` with what the config leaves to the model filled in (``inverse_sqrt``'s
        ``d_model: null`` is the model's width)."""
        options = dict(self.hparams.sched)
        if "d_model" in options and options["d_model"] is None:
            options["d_model"] = getattr(self.net, "d_model", None)
        return options

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.named_parameters(), **self.hparams.optim, param_lrs=self.parameter_lrs())
        if not self.hparams.sched:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        if self.trainer.fast_dev_run:  # a smoke test of a batch or two: the schedule's length is moot
            total = max(total, SMOKE_TEST_SCHEDULE_STEPS)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        steps_per_epoch = max(1, math.ceil(total / epochs))
        name = self.hparams.sched.get("name")
        saved = getattr(self, "_resumed_schedule", None)
        if saved and saved.get("name") == name and name in LENGTH_BOUND_SCHEDULES and saved["total_steps"] != total:
            raise ConfigError(
                f"this run's sched={name} schedule was built for {saved['total_steps']} optimizer steps and cannot "
                f"stretch to {total}; resume with the trainer.max_epochs/max_steps it was started with, or start a "
                f"new run from its weights (finetune=full finetune.weights=<its last.ckpt>); sched=step, plateau "
                f"and none can be extended"
            )
        self._schedule = {"name": name, "total_steps": total}
        scheduler = build_scheduler(optimizer, total_steps=total, steps_per_epoch=steps_per_epoch, **self.scheduler_options())
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # The schedule's length travels in the checkpoint: a resume that would stretch a
    # schedule whose shape is fixed by its length is refused above, in one line. So does what
    # using the network needs from its data (zoo.data.inputs), read back without Lightning.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if getattr(self, "_schedule", None):
            checkpoint["zoo_schedule"] = dict(self._schedule)
        datamodule = getattr(self._trainer, "datamodule", None)  # None without a Trainer or a data module
        inputs = datamodule.inputs() if datamodule is not None else None
        if inputs is not None:
            checkpoint[INPUTS_KEY] = inputs.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_schedule = checkpoint.get("zoo_schedule")
