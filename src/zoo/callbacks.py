"""Callbacks Lightning lacks: stop at the first non-finite loss, resume exactly, stop on a
signal with a resumable checkpoint, an epoch line per epoch, a summary that counts MACs.

Non-finite loss: Lightning's ``EarlyStopping(check_finite=True)`` looks at a validation metric once per
epoch, after bad updates have already been applied (and perhaps saved). This guard
looks at the training loss of every step *before* its backward pass, so the step that
produced NaN/Inf never updates the weights, and raising here also keeps
``ModelCheckpoint`` (which Lightning runs last) from saving anything after it: the
last good checkpoint stays as it was.

Steps skipped by the fp16 gradient scaler are not affected: the scaler skips steps
whose *gradients* overflow, while their loss is finite.

Exact resume: see :class:`ExactResume`; signals: :class:`StopOnSignal`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from torchmetrics import Metric

from zoo.errors import ZooError

log = logging.getLogger("zoo")


class NonFiniteLossError(ZooError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(L.Callback):
    """Raise :class:`NonFiniteLossError` naming the step when the training loss is not finite."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            saved = [c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor is None and c.best_model_path]
            last = saved[0] if saved else "none written yet"
            raise NonFiniteLossError(
                f"train/loss is {loss.detach().float().item()} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}); "
                f"training stopped before applying it. Last good checkpoint: {last}"
            )


class Interrupted(Exception):
    """Training stopped on ``signum``; ``step`` is the optimizer step ``last.ckpt`` holds (``None``: none saved now)."""

    def __init__(self, signum: int, step: int | None):
        self.signum, self.step = signum, step
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class StopOnSignal(L.Callback):
    """SIGTERM (a scheduler's notice) and SIGINT (Ctrl-C) stop training at the end of the
    current batch with a resumable ``last.ckpt``, then raise :class:`Interrupted`.

    The handlers only note the signal; the batch in flight finishes, so the checkpoint is the
    same mid-epoch state ``every_n_train_steps`` saves (exact resume). A signal during
    validation or testing stops there, keeping the last checkpoint saved. A second Ctrl-C
    stops at once, without saving. :meth:`handling` installs the handlers around a run and
    puts the previous ones back (Lightning adds its own SIGTERM notifier beside ours).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None

    def _note(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C
        self.signum = signum
        log.warning("%s received: stopping after this batch (Ctrl-C again to stop at once)", signal.Signals(signum).name)

    @contextlib.contextmanager
    def handling(self) -> Iterator[StopOnSignal]:
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        for s in self.SIGNALS:
            signal.signal(s, self._note)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.signum is None:
            return
        last = [c for c in trainer.checkpoint_callbacks if c.monitor is None and c.dirpath]
        step = None
        if last:
            trainer.save_checkpoint(f"{last[0].dirpath}/last.ckpt")  # through the atomic CheckpointIO
            step = trainer.global_step
        raise Interrupted(self.signum, step)

    def _stop_if_noted(self, *args: Any) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum, None)

    on_validation_batch_end = on_test_batch_end = on_train_batch_start = _stop_if_noted


class ExactResume(L.Callback):
    """Make a resumed run continue exactly where the interrupted one stopped.

    Lightning restores weights, optimizer, scheduler and loop counters, but not the
    global random generators (dropout masks, augmentation) and, when the dataloader is
    first built to size the LR schedule, not the position inside the epoch either. This
    callback stores both in each checkpoint (tensors and lists, so checkpoints still
    load with ``weights_only=True``) and puts them back: the generators at restore time,
    the position in the training loader (:class:`zoo.data.base.ResumableDataLoader`)
    when training starts.
    """

    KEY = "zoo_exact_resume"

    def __init__(self) -> None:
        self._position: dict[str, int] | None = None
        self.resumes = 0  # how many times this run was resumed (metrics.json reports it)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        version, internal, gauss = random.getstate()
        state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        loader = trainer.train_dataloader
        if hasattr(loader, "state_dict"):
            state["train_loader"] = loader.state_dict()
        # The running means of the epoch (torchmetrics states are not in the state_dict):
        # a run resumed mid-epoch ends the epoch with the same means as an uninterrupted one.
        # At the end of an epoch they are about to be reset: the next epoch starts afresh.
        mid_epoch = not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        state["metrics"] = {} if not mid_epoch else {
            name: {
                "updates": metric.update_count,
                "states": {k: v.detach().clone() for k, v in metric.metric_state.items() if isinstance(v, torch.Tensor)},
            }
            for name, metric in pl_module.named_modules() if isinstance(metric, Metric)
        }  # fmt: skip
        state["resumes"] = self.resumes
        checkpoint[self.KEY] = state

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(self.KEY)
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self._position = state.get("train_loader")
        if trainer.state.fn == "fit":  # not the weights trainer.test reads back
            self.resumes = state.get("resumes", 0) + 1
        metrics = dict(pl_module.named_modules())
        for name, saved in state.get("metrics", {}).items():
            metric = metrics.get(name)
            if isinstance(metric, Metric):
                for key, value in saved["states"].items():
                    setattr(metric, key, value.to(getattr(metric, key).device))
                metric._update_count, metric._computed = saved["updates"], None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if self._position is not None and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(self._position)
        self._position = None


class EpochLog(L.Callback):
    """One plain line per epoch in the log (and so in ``train.log``): the epoch's training
    loss and accuracy, the validation metrics, the learning rate(s) (see :func:`learning_rates`)
    and the seconds it took.

    What a person reads after the run, and what stands in for the progress bar when
    stdout is not a terminal (a file, a pipe, a batch job). Lightning folds the epoch's
    training means into ``callback_metrics`` after every ``on_train_epoch_end`` hook, so the
    line is written when the next epoch starts, or when training ends.
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._pending: tuple[int, str, float] | None = None  # (epoch, lr, seconds) awaiting its metrics

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lr = learning_rates(trainer.optimizers[0], pl_module) if trainer.optimizers else ""
        self._pending = (trainer.current_epoch, lr, time.monotonic() - self._started)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def _flush(self, trainer: L.Trainer) -> None:
        if self._pending is None or not trainer.is_global_zero:
            return
        epoch, lr, seconds = self._pending
        self._pending = None
        parts = [
            f"{name.removesuffix('_epoch')} {float(value):.4f}" for name, value in sorted(trainer.callback_metrics.items())
            if (name.startswith("train/") and not name.endswith("_step")) or name.startswith("val/")
        ]  # fmt: skip
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("epoch %d%s: %s, %.1f s", epoch + 1, total, ", ".join([*parts, lr] if lr else parts), seconds)


def learning_rates(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> str:
    """``lr 0.001`` when every parameter group trains at one rate, else each named rate:
    ``lr head 0.001, backbone 1e-05`` (the head first, then in the optimizer's order).

    Groups are named by the task's ``param_group_names()`` (parameter name -> group name,
    e.g. fine-tuning's ``head`` and ``backbone``) through their first parameter; unnamed
    groups are ``pg1``, ``pg2``, ... as Lightning's ``LearningRateMonitor`` calls them.
    """
    groups = [g for g in optimizer.param_groups if g["params"]]
    if not groups:
        return ""
    if len({g["lr"] for g in groups}) == 1:
        return f"lr {groups[0]['lr']:.3g}"
    names = module.param_group_names() if callable(getattr(module, "param_group_names", None)) else {}
    by_id = {id(p): names[n] for n, p in module.named_parameters() if n in names}
    rates: dict[tuple[str, float], None] = {}  # ordered, without repeats
    for i, group in enumerate(optimizer.param_groups, start=1):
        if group["params"]:
            rates[(by_id.get(id(group["params"][0]), f"pg{i}"), group["lr"])] = None
    ordered = sorted(rates, key=lambda named: named[0] != "head")  # stable: the rest keep their order
    return "lr " + ", ".join(f"{name} {lr:.3g}" for name, lr in ordered)


class ModelSummaryWithMACs(ModelSummary):
    """Lightning's model table with this project's MAC count and the frozen/trainable split.

    Lightning counts FLOPs only for a module with an ``example_input_array`` (ours have
    none, so it printed "Total FLOPs: 0"); here the network is rebuilt on the meta device
    from the task's model config and counted (:func:`zoo.bench.profiling.count_macs`) on one input
    of the size the data feeds (the datamodule's ``in_channels`` x ``image_size``), or on the
    network's own example input where the data does not say (sequences), so nothing runs on
    the real (maybe compiled) network.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._macs = None
        if self._max_depth and trainer.is_global_zero:
            from zoo.models import get_model
            from zoo.models.factory import build_on_meta
            from zoo.bench.profiling import count_macs

            meta = build_on_meta(get_model, **pl_module.hparams["model"])
            inputs = data_example(trainer.datamodule, meta)
            self._example = tuple(tuple(x.shape) for x in inputs)
            self._macs = count_macs(meta, inputs)
        super().on_fit_start(trainer, pl_module)
        if trainer.is_global_zero and self._max_depth:
            log.info(split_line(pl_module))

    def summarize(self, summary_data: Any, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:  # fmt: skip
        flops = 2 * self._macs if self._macs is not None else total_flops  # a multiply-accumulate is 2 FLOPs
        super().summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, flops, **kwargs)
        if self._macs is not None:
            shapes = ", ".join("x".join(map(str, s)) for s in self._example)
            log.info("MACs per forward pass of the example input (%s): %s", shapes, f"{self._macs:,}")


def data_example(datamodule: Any, net: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """One input of the shape ``datamodule`` feeds an image network (``1 x in_channels x
    image_size x image_size``, on ``net``'s device); ``net.example_inputs()`` otherwise."""
    from zoo.models import ImageModel

    channels, size = getattr(datamodule, "in_channels", None), getattr(datamodule, "image_size", None)
    if isinstance(net, ImageModel) and isinstance(channels, int) and isinstance(size, int):
        return (torch.zeros(1, channels, size, size, device=next(net.parameters()).device),)
    return net.example_inputs()


def split_line(module: torch.nn.Module) -> str:
    """``parameters: N trainable, M frozen`` and how many modules hold only frozen parameters."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    holders = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    frozen_modules = sum(1 for m in holders if not any(p.requires_grad for p in m.parameters(recurse=False)))
    return (
        f"parameters: {trainable:,} trainable, {frozen:,} frozen "
        f"({frozen_modules} of {len(holders)} modules with parameters frozen)"
    )
