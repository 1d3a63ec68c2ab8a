"""Stochastic depth: randomly drop whole residual branches during training.

G. Huang, Y. Sun, Z. Liu, D. Sedra, K. Weinberger, "Deep Networks with Stochastic
Depth", 2016. https://arxiv.org/abs/1603.09382

For a residual block ``y = x + f(x)`` with survival probability ``1 - p``:

    training:  y = x + (b / (1 - p)) f(x),   b ~ Bernoulli(1 - p)
    inference: y = x + f(x)

The paper scales the branch by ``1 - p`` at test time; dividing by ``1 - p`` during
training instead (as dropout does) keeps inference untouched. ``mode="row"`` draws one
``b`` per sample, ``mode="batch"`` one for the whole batch.
"""

from __future__ import annotations

import torch
from torch import nn


def stochastic_depth(x: torch.Tensor, p: float, mode: str = "row", training: bool = True) -> torch.Tensor:
    """Zero the residual branch ``x`` with probability ``p`` and rescale the survivors.

    Args:
        x: The residual branch output, batch first.
        p: Drop probability in [0, 1].
        mode: ``"row"`` (one draw per sample) or ``"batch"`` (one draw for the batch).
        training: Identity when ``False``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    if mode not in ("row", "batch"):
        raise ValueError(f"mode must be 'row' or 'batch', got {mode!r}")
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.dim() - 1) if mode == "row" else (1,) * x.dim()
    mask = x.new_empty(shape).bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


class StochasticDepth(nn.Module):
    """Module form of :func:`stochastic_depth`, active only in training mode.

    Args:
        p: Drop probability of the branch.
        mode: ``"row"`` or ``"batch"``.
    """

    def __init__(self, p: float, mode: str = "row"):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.p, self.mode, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"
