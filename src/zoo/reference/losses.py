"""Loss functions written from their equations.

With predictions ``y_hat``, targets ``y`` and ``n`` terms in the mean:

    MSE              (1/n) sum (y - y_hat)^2
    MAE              (1/n) sum |y - y_hat|
    binary CE        -(y log p + (1 - y) log(1 - p))                 p = sigmoid(z), y in {0, 1}
    ... from logits  log(1 + e^z) - z y                              (the same, never overflows)
    categorical CE   -sum_k y_k log softmax(z)_k = -sum_k y_k log_softmax(z)_k
    multi-class hinge  (1/K) sum_{j != c} max(0, margin - z_c + z_j)   (c = the true class)
    binary hinge     max(0, 1 - y z)                                 y in {-1, 1}
    KL divergence    KL(P || Q) = sum_x P(x) log(P(x) / Q(x))

Every loss is averaged over the batch. Notes on where the code and the lecture differ:

- binary CE from logits: ``-(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))) = log(1 + e^z) - z y``,
  with ``log(1 + e^z)`` computed piecewise so that it never overflows and its derivative
  is ``sigmoid(z)`` at ``z = 0`` too (:func:`softplus`);
- binary CE from probabilities clamps each log at -100, as PyTorch does, so that ``p = 0``
  or ``p = 1`` gives a large finite loss instead of ``inf``/``nan``, and writes its
  derivative out (finite at ``p = y = 0`` and ``1``, where autograd's is NaN);
- categorical CE takes logits and uses the stable ``log_softmax``; with
  ``label_smoothing = eps`` the target is ``(1 - eps) one_hot(c) + eps / K`` (Szegedy et al., 2016);
- the multi-class hinge (Weston & Watkins, 1999) is divided by the number of classes
  ``K``, as ``nn.MultiMarginLoss`` does; the lecture writes the
  hinge as ``sum max(theta, 1 - y_i y_hat_i)``, where ``theta`` is 0;
- KL takes ``log Q`` as input and ``P`` as target (the argument order of ``F.kl_div``),
  uses ``0 log 0 = 0`` and divides by the batch size ("batchmean").

The module forms at the bottom are what training runs when a ``*_ref`` loss is asked for
(``loss=cross_entropy_ref``, :mod:`zoo.tasks.losses`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.reference.activations import log_softmax, softmax

_LOG_FLOOR = -100.0  # PyTorch's clamp for log(0) in binary_cross_entropy
# PyTorch's floor for p (1 - p) in binary_cross_entropy's derivative: 1e-12 as ATen holds it, in float32.
_BCE_EPS = torch.tensor(1e-12, dtype=torch.float32).item()


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error ``(1/n) sum (y - y_hat)^2`` over all elements."""
    return ((target - pred) ** 2).mean()


def mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error ``(1/n) sum |y - y_hat|`` over all elements."""
    return (target - pred).abs().mean()


class _BinaryCrossEntropy(torch.autograd.Function):
    """Binary cross-entropy with its derivative written out.

    Autograd through the clamped logs would multiply ``1 / p = inf`` by the clamp's zero at
    ``p = 0`` (NaN, even where the target matches); the derivative itself,
    ``dL/dp = (p - y) / (p (1 - p))`` per element, is finite wherever ``p = y``. As PyTorch
    does, its denominator is kept at least ``1e-12``.
    """

    @staticmethod
    def forward(ctx, prob: Tensor, target: Tensor) -> Tensor:
        ctx.save_for_backward(prob, target)
        log_p = torch.log(prob).clamp(min=_LOG_FLOOR)
        log_not_p = torch.log(1 - prob).clamp(min=_LOG_FLOOR)
        return -(target * log_p + (1 - target) * log_not_p).mean()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        prob, target = ctx.saved_tensors
        return grad * (prob - target) / (prob * (1 - prob)).clamp(min=_BCE_EPS) / prob.numel(), None


def binary_cross_entropy(prob: Tensor, target: Tensor) -> Tensor:
    """``-(y log p + (1 - y) log(1 - p))`` averaged, for probabilities ``p`` and ``y`` in [0, 1]."""
    return _BinaryCrossEntropy.apply(prob, target)


def softplus(z: Tensor) -> Tensor:
    """``log(1 + e^z)``, as ``z + log(1 + e^{-z})`` where ``z >= 0`` and ``log(1 + e^z)`` below.

    Each piece is smooth where it is used, so the derivative is ``sigmoid(z)`` everywhere,
    ``1/2`` at ``z = 0`` included; ``max(z, 0) + log(1 + e^{-|z|})`` has the same value, but
    autograd gives both kinks a derivative of 0 there. The pieces read only their own side
    of 0, so neither overflows for the other's inputs.
    """
    positive = z >= 0
    z_pos = torch.where(positive, z, torch.zeros_like(z))
    z_neg = torch.where(positive, torch.zeros_like(z), z)
    return torch.where(positive, z_pos + torch.log1p(torch.exp(-z_pos)), torch.log1p(torch.exp(z_neg)))


def binary_cross_entropy_with_logits(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of ``sigmoid(z)``: ``log(1 + e^z) - z y`` averaged (:func:`softplus`)."""
    return (softplus(logits) - logits * target).mean()


def cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Categorical cross-entropy ``-sum_k y_k log softmax(z)_k`` averaged over the batch.

    Args:
        logits: ``z`` (B, K).
        target: class indices (B,) or class probabilities (B, K).
        label_smoothing: ``eps``; the target becomes ``(1 - eps) y + eps / K``.
    """
    log_p = log_softmax(logits, dim=1)  # (B, K)
    num_classes = logits.shape[1]
    if not target.is_floating_point():
        target = torch.zeros_like(logits).scatter_(1, target.long().unsqueeze(1), 1.0)  # one-hot (B, K)
    target = (1 - label_smoothing) * target + label_smoothing / num_classes
    return -(target * log_p).sum(1).mean()


def multi_margin(logits: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """Multi-class hinge ``(1/K) sum_{j != c} max(0, margin - z_c + z_j)`` averaged over the batch.

    Args:
        logits: ``z`` (B, K).
        target: true classes ``c`` (B,).
        margin: the margin by which the true class should win.
    """
    true = logits.gather(1, target.unsqueeze(1))  # z_c (B, 1)
    violations = (margin - true + logits).clamp(min=0)  # (B, K); the j = c term is max(0, margin)
    others = torch.ones_like(logits).scatter_(1, target.unsqueeze(1), 0.0)
    return (violations * others).sum(1).div(logits.shape[1]).mean()


def hinge(scores: Tensor, target: Tensor) -> Tensor:
    """Binary hinge ``mean(max(0, 1 - y z))`` for labels ``y`` in {-1, 1} and scores ``z``."""
    return (1 - target * scores).clamp(min=0).mean()


def kl_divergence(log_q: Tensor, p: Tensor) -> Tensor:
    """``KL(P || Q) = sum P log(P / Q)``, summed over classes and averaged over the batch.

    Args:
        log_q: ``log Q`` (B, K), e.g. a log-softmax.
        p: the target distribution ``P`` (B, K); zero entries contribute 0.
    """
    p_log_p = torch.where(p > 0, p * torch.log(p.clamp(min=torch.finfo(p.dtype).tiny)), torch.zeros_like(p))
    return (p_log_p - p * log_q).sum() / log_q.shape[0]


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`cross_entropy` (targets are class indices)."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(logits, target, self.label_smoothing)


class MultiMarginLoss(nn.Module):
    """Module form of :func:`multi_margin`."""

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = margin

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return multi_margin(logits, target, self.margin)


class MSEOneHotLoss(nn.Module):
    """MSE between ``softmax(z)`` and the one-hot target, as the lecture trains a classifier with MSE."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        one_hot = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1.0)
        return mse(softmax(logits, dim=1), one_hot)
