"""The losses a classifier of ``K`` logits can be trained with (``loss=`` / ``task.loss=``).

PyTorch's own (``cross_entropy``, ``multi_margin``) and this project's reference code
written from the lecture's equations (``cross_entropy_ref``, ``hinge_ref``,
``mse_onehot``; :mod:`zoo.reference.losses`). Each builder takes ``label_smoothing`` and
refuses a non-zero value when the loss has no such notion.
"""

from __future__ import annotations

from torch import nn

from zoo.reference.losses import CrossEntropyLoss, MSEOneHotLoss, MultiMarginLoss
from zoo.registry import Registry

LOSSES = Registry("loss")


def _refuse_smoothing(name: str, label_smoothing: float) -> None:
    if label_smoothing:
        raise ValueError(f"loss '{name}' has no label smoothing; set task.label_smoothing=0")


@LOSSES.register("cross_entropy")
def _cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """PyTorch's cross-entropy."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


@LOSSES.register("cross_entropy_ref")
def _cross_entropy_ref(label_smoothing: float = 0.0) -> nn.Module:
    """:func:`cross_entropy` from log-softmax."""
    return CrossEntropyLoss(label_smoothing)


@LOSSES.register("multi_margin")
def _multi_margin(label_smoothing: float = 0.0) -> nn.Module:
    """PyTorch's multi-class hinge."""
    _refuse_smoothing("multi_margin", label_smoothing)
    return nn.MultiMarginLoss()


@LOSSES.register("hinge_ref")
def _hinge_ref(label_smoothing: float = 0.0) -> nn.Module:
    """:func:`multi_margin` written out."""
    _refuse_smoothing("hinge_ref", label_smoothing)
    return MultiMarginLoss()


@LOSSES.register("mse_onehot")
def _mse_onehot(label_smoothing: float = 0.0) -> nn.Module:
    """MSE on the softmax against one-hot targets."""
    _refuse_smoothing("mse_onehot", label_smoothing)
    return MSEOneHotLoss()
