"""Positional encodings: what tells attention, which is order-blind, where a token sits.

A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, L. Kaiser,
I. Polosukhin, "Attention Is All You Need", NeurIPS 2017. https://arxiv.org/abs/1706.03762

Section 3.5: the encoding has the model width ``d`` and is added to the token embeddings.
The sinusoidal one is fixed,

    PE(pos, 2i)     = sin(pos / 10000^(2i / d))
    PE(pos, 2i + 1) = cos(pos / 10000^(2i / d))

so each pair of dimensions is a sinusoid whose wavelength grows geometrically from
``2 pi`` to ``10000 * 2 pi``, and ``PE(pos + k)`` is a linear function of ``PE(pos)``.
The paper found learned position embeddings "nearly identical" (Table 3, row E); the
Vision Transformer (Dosovitskiy et al., 2020) learns them. Both are here, selectable by
name from :data:`POSITIONAL` (``"sinusoidal"``, ``"learned"``).

Both modules take ``(B, T, d)`` embeddings and an optional ``offset`` (the position of the
first token, for one-token-at-a-time decoding) and return ``x + PE[offset:offset + T]``.
Dropout on the sum (Section 5.4) is left to the model.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.registry import Registry

POSITIONAL = Registry("positional encoding")


def sinusoidal_table(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """The ``(length, dim)`` table ``PE`` of Section 3.5 (``dim`` even), in float32.

    Computed in float64: in float32 the angle ``pos / 10000^(2i/d)`` is off by ~1e-4 at
    position 1000.
    """
    if dim % 2:
        raise ValueError(f"the sinusoidal encoding needs an even width, got {dim}")
    if torch.empty(0, device=device).is_meta:  # a model built on the meta device: no values to compute
        return torch.empty(length, dim, device=device)
    position = torch.arange(length, dtype=torch.float64, device=device).unsqueeze(1)  # (L, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64, device=device)  # 2i = 0, 2, ..., d - 2
    angle = position / torch.pow(10000.0, two_i / dim)  # pos / 10000^(2i/d): (L, d/2)
    table = torch.empty(length, dim, dtype=torch.float64, device=device)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.float()


def _check(x: torch.Tensor, dim: int) -> None:
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"expected embeddings of shape (B, T, {dim}), got {tuple(x.shape)}")


@POSITIONAL.register("sinusoidal")
class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table: no parameters.

    The table for ``max_len`` positions is a non-persistent buffer (not in the state
    dict, so checkpoints do not depend on ``max_len``); longer inputs get a table
    computed on the fly.

    Args:
        dim: Model width ``d`` (even).
        max_len: Positions precomputed.
    """

    def __init__(self, dim: int, max_len: int = 1024):
        super().__init__()
        self.dim = dim
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check(x, self.dim)
        end = offset + x.shape[1]
        table = self.table if end <= len(self.table) else sinusoidal_table(end, self.dim, x.device)
        return x + table[offset:end].to(x.dtype)  # (B, T, d) + (T, d)


@POSITIONAL.register("learned")
class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned vector per position, ``x + E[pos]``, for up to ``max_len`` positions.

    Initialised N(0, 0.02^2) as in BERT and the Vision Transformer.

    Args:
        dim: Model width ``d``.
        max_len: Number of positions (longer inputs raise ``ValueError``).
    """

    def __init__(self, dim: int, max_len: int = 1024):
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check(x, self.dim)
        end = offset + x.shape[1]
        if end > self.max_len:
            raise ValueError(f"positions up to {end} requested, but only max_len={self.max_len} are learned")
        return x + self.weight[offset:end]  # (B, T, d) + (T, d)


def make_positional(name: str, dim: int, max_len: int = 1024) -> nn.Module:
    """The positional encoding ``name`` (``"sinusoidal"`` or ``"learned"``) for width ``dim``."""
    return POSITIONAL.build(name, dim=dim, max_len=max_len)

