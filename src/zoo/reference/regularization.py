"""Regularization and normalization written from their equations.

Weight penalties, added to the loss:

    L1 (lasso)      L_total = L + lambda sum |w|          dL_total/dw = dL/dw + lambda sign(w)
    L2 (ridge)      L_total = L + lambda/2 sum w^2        dL_total/dw = dL/dw + lambda w

With the 1/2, the L2 gradient is ``lambda w``: one SGD step on ``L + lambda/2 sum w^2`` is
exactly ``torch.optim.SGD(weight_decay=lambda)``. The lecture writes ``L + lambda sum w^2``
(no 1/2); that equals ``weight_decay = 2 lambda``. (For Adam, weight_decay is this same
L2 gradient term; AdamW's decoupled decay is a different thing.)

Dropout (Srivastava et al., 2014) in its "inverted" form: during training

    y_i = x_i V_i / (1 - p),   V_i ~ Bernoulli(1 - p)   (unit i is dropped with probability p)

so ``E[y_i] = x_i`` and evaluation is the identity, with no rescaling at test time.

Batch normalization (Ioffe & Szegedy, 2015), per channel over the batch and the spatial
positions (the ``m = N H W`` values of a channel):

    mu_B = (1/m) sum x,    sigma_B^2 = (1/m) sum (x - mu_B)^2
    x_hat = (x - mu_B) / sqrt(sigma_B^2 + eps),    y = gamma x_hat + beta

In training the running averages used at evaluation time are updated as
``r <- (1 - momentum) r + momentum * stat``; like PyTorch, the running variance takes the
unbiased ``sigma_B^2 m / (m - 1)`` while the normalization uses the biased ``sigma_B^2``.

Layer normalization (Ba et al., 2016): the same ``x_hat``, but with ``mu`` and
``sigma^2`` (biased) over the features of each sample (the last dimensions) instead of
over the batch; train and evaluation behave alike.

The modules keep PyTorch's parameter and buffer names (``weight`` = gamma, ``bias`` = beta,
``running_mean``, ``running_var``, ``num_batches_tracked``), so state dicts load both ways.
Deviations: ``BatchNorm2d`` always has the affine parameters and running statistics
(PyTorch's ``affine=False``, ``track_running_stats=False`` and ``momentum=None`` are not offered).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn


def l1_penalty(params: Iterable[Tensor], lam: float) -> Tensor:
    """``lambda sum |w|`` over all ``params``."""
    return lam * sum(p.abs().sum() for p in params)


def l2_penalty(params: Iterable[Tensor], lam: float) -> Tensor:
    """``lambda/2 sum w^2`` over all ``params``; its gradient ``lambda w`` is SGD's ``weight_decay=lambda``."""
    return lam / 2 * sum((p * p).sum() for p in params)


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout ``x * V / (1 - p)``, ``V ~ Bernoulli(1 - p)``; the identity when not training.

    Args:
        x: input.
        p: probability of dropping each element, in [0, 1].
        training: apply dropout (True) or return ``x`` unchanged (False).
        generator: random number generator for the mask (default: the global one).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)  # every unit dropped; avoids dividing by 1 - p = 0
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p  # V, P(V = 1) = 1 - p
    return x * keep.to(x.dtype) / (1 - p)


class Dropout(nn.Module):
    """Module form of :func:`dropout`; active in ``train()`` mode only."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BatchNorm2d(nn.Module):
    """Batch normalization of (N, C, H, W) inputs, per channel.

    Args:
        num_features: number of channels ``C``.
        eps: added to the variance before the square root.
        momentum: weight of the current batch in the running averages.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"expected input (N, {self.num_features}, H, W), got {tuple(x.shape)}")
        if self.training:
            dims = (0, 2, 3)
            m = x.numel() // x.shape[1]  # values per channel: N H W
            if m < 2:
                raise ValueError("batch normalization in training needs more than 1 value per channel")
            mean = x.mean(dims)  # mu_B (C,)
            var = ((x - mean.view(1, -1, 1, 1)) ** 2).mean(dims)  # biased sigma_B^2 (C,)
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * m / (m - 1))
                self.num_batches_tracked.add_(1)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + self.eps)
        return self.weight.view(1, -1, 1, 1) * x_hat + self.bias.view(1, -1, 1, 1)  # (N, C, H, W)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm(nn.Module):
    """Layer normalization over the last ``len(normalized_shape)`` dimensions.

    Args:
        normalized_shape: the trailing shape normalized over (an int for the last dimension).
        eps: added to the variance before the square root.
        elementwise_affine: learn ``weight`` (gamma) and ``bias`` (beta) of that shape.
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(shape))
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-len(self.normalized_shape) :]) != self.normalized_shape:
            shape = ", ".join(map(str, self.normalized_shape))
            raise ValueError(f"expected input (..., {shape}), got {tuple(x.shape)}")
        dims = tuple(range(-len(self.normalized_shape), 0))
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dims, keepdim=True)  # biased
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        if self.weight is None:
            return x_hat
        return self.weight * x_hat + self.bias

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"
