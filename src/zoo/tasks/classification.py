"""Image classification: one LightningModule for every image model in the registry.

The loss is the cross-entropy ``L = -sum_k y_k log softmax(z)_k`` with optional label
smoothing (Szegedy et al., 2016), or another loss of :data:`zoo.tasks.losses.LOSSES` chosen by name
(``task.loss=hinge_ref``). Models with auxiliary classifiers (GoogLeNet) return
``(logits, *aux_logits)`` in training; their losses are added with weight
``aux_loss_weight`` (0.3 in Szegedy et al., 2014). ``l1 > 0`` adds the penalty
``l1 * sum |w|`` over the weight matrices and kernels (not biases or norm parameters);
the L2 penalty is the optimizer's ``weight_decay``.

All constructor arguments are plain values (dicts, numbers, strings), so
``save_hyperparameters()`` writes checkpoints that load with ``weights_only=True`` and
rebuild the network by its registry name.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection
from torchvision.transforms import v2

from zoo.errors import ConfigError
from zoo.optim.groups import parameter_lrs, stage_groups
from zoo.tasks.evaluation import classification_loss, classification_metrics
from zoo.tasks.losses import LOSSES
from zoo.reference.regularization import l1_penalty
from zoo.models import get_model
from zoo.tasks.registry import TASKS
from zoo.tasks.base import TaskModule


def batch_mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int, loss: str) -> v2.Transform | None:
    """The batch transform that mixes images and turns labels into class probabilities."""
    mixers = [cls(alpha=a, num_classes=num_classes) for cls, a in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if a > 0]
    if not mixers:
        return None
    if loss != "cross_entropy":
        raise ConfigError(f"task.mixup_alpha/cutmix_alpha need loss=cross_entropy (soft targets); got loss={loss}")
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


@TASKS.register("classification")
class ImageClassifier(TaskModule):
    """Train, validate and test any registered image model.

    Args:
        model: ``{"name": <registry name>, **constructor kwargs}``.
        optim: optimizer config, see :func:`zoo.optim.build_optimizer`.
        sched: scheduler config ``{"name": ..., **options}``, or ``None`` for a constant LR.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        loss: name of the loss in :data:`zoo.tasks.losses.LOSSES` (``"cross_entropy"``: PyTorch's).
        aux_loss_weight: weight of each auxiliary classifier's loss.
        l1: weight of the L1 penalty on weights (0: none).
        stage_lrs: learning rates by stage of ``net.stages()`` for fine-tuning (``head``:
            the last stage, ``backbone``: the others); other parameters use ``optim.lr``.
        mixup_alpha: MixUp (Zhang et al., 2017) with ``lambda ~ Beta(alpha, alpha)`` on each
            training batch; 0: off.
        cutmix_alpha: CutMix (Yun et al., 2019) likewise; with both on, each batch gets one
            of the two at random, as torchvision's reference recipes do. Training accuracy is
            then measured against each image's original label.
    """

    monitor, monitor_mode = "val/acc", "max"  # the metric that picks the best checkpoint

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        sched: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        aux_loss_weight: float = 0.3,
        loss: str = "cross_entropy",
        l1: float = 0.0,
        stage_lrs: dict[str, float] | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the whole run config (zoo-train)
        kwargs = dict(model)
        self.net = get_model(kwargs.pop("name"), **kwargs)
        self.criterion = LOSSES.build(loss, label_smoothing=label_smoothing)
        self.mix = batch_mixing(mixup_alpha, cutmix_alpha, self.net.num_classes, loss)
        self.aux_loss_weight = aux_loss_weight
        metrics = classification_metrics(self.net.num_classes)  # zoo-eval computes the same (zoo.tasks.evaluation)
        # Training tracks top-1 only: it is updated every step, where each metric costs time.
        self.train_metrics = MetricCollection({"acc": metrics["acc"].clone()}).clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], y: torch.Tensor):
        return classification_loss(outputs, y, self.criterion, self.aux_loss_weight)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        x, target = self.mix(x, y) if self.mix is not None else (x, y)  # target: class probabilities when mixed
        loss, logits = self._loss(self.net(x), target)
        if self.hparams.l1:
            loss = loss + l1_penalty((p for p in self.net.parameters() if p.ndim > 1), self.hparams.l1)
        self.train_metrics.update(logits.detach(), y)
        self.log_train_loss(loss, len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def _eval_step(self, batch, metrics: MetricCollection, stage: str) -> None:
        x, y = batch
        loss, logits = self._loss(self.net(x), y)
        metrics.update(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=len(y))
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=len(y))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def parameter_lrs(self) -> dict[str, float] | None:
        stage_lrs = self.hparams.get("stage_lrs")
        return parameter_lrs(self.net, stage_lrs, prefix="net.") if stage_lrs else None

    def param_group_names(self) -> dict[str, str]:
        """With ``stage_lrs``: a stage with a rate of its own by its name, else ``head`` (the
        last stage) or ``backbone`` (the others), the names ``stage_lrs`` gives rates by."""
        stage_lrs = self.hparams.get("stage_lrs")
        if not stage_lrs:
            return {}
        stages = stage_groups(self.net)
        by_param: dict[int, str] = {}
        for i, (name, module) in enumerate(stages):
            label = name if name in stage_lrs else "head" if i == len(stages) - 1 else "backbone"
            for p in module.parameters():
                by_param.setdefault(id(p), label)
        return {f"net.{n}": by_param[id(p)] for n, p in self.net.named_parameters() if id(p) in by_param}
