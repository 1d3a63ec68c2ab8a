"""The one Lightning callback Lightning lacks: stop at the first non-finite loss.

Lightning's ``EarlyStopping(check_finite=True)`` looks at a validation metric once per
epoch, after bad updates have already been applied (and perhaps saved). This guard
looks at the training loss of every step *before* its backward pass, so the step that
produced NaN/Inf never updates the weights, and raising here also keeps
``ModelCheckpoint`` (which Lightning runs last) from saving anything after it: the
last good checkpoint stays as it was.

Steps skipped by the fp16 gradient scaler are not affected: the scaler skips steps
whose *gradients* overflow, while their loss is finite.
"""

from __future__ import annotations

import lightning as L
import torch

from zoo.errors import ZooError


class NonFiniteLossError(ZooError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(L.Callback):
    """Raise :class:`NonFiniteLossError` naming the step when the training loss is not finite."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            checkpoint = trainer.checkpoint_callback
            last = getattr(checkpoint, "last_model_path", "") or "none written yet"
            raise NonFiniteLossError(
                f"train/loss is {loss.detach().float().item()} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}); "
                f"training stopped before applying it. Last good checkpoint: {last}"
            )
