"""Attention: score functions, masked softmax, and multi-head attention.

D. Bahdanau, K. Cho, Y. Bengio, "Neural Machine Translation by Jointly Learning to Align
and Translate", ICLR 2015. https://arxiv.org/abs/1409.0473
M.-T. Luong, H. Pham, C. D. Manning, "Effective Approaches to Attention-based Neural
Machine Translation", EMNLP 2015. https://arxiv.org/abs/1508.04025
A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, L. Kaiser,
I. Polosukhin, "Attention Is All You Need", NeurIPS 2017. https://arxiv.org/abs/1706.03762

A query ``s`` (a decoder state) reads a set of keys ``h_1..h_S`` and values: each key
gets a score, the scores become weights by a softmax over the keys, and the output is
the weighted sum of the values (Bahdanau et al., Section 3.1):

    e_s     = score(s, h_s)
    alpha_s = exp(e_s) / sum_s' exp(e_s')
    c       = sum_s alpha_s v_s                    (v_s = h_s unless values are given)

Score functions (:data:`SCORES`, chosen by name):

    dot          s^T h                             (Luong et al., Eq. 8 "dot")
    scaled_dot   s^T h / sqrt(d_k)                 (Vaswani et al., Eq. 1)
    additive     v^T tanh(W_s s + W_h h)           (Bahdanau et al., Appendix A.1.2)
    cosine       s^T h / (|s| |h|)
    general      s^T W h                           (Luong et al., Eq. 8 "general")

Masks: a key marked in ``key_padding_mask`` (``True`` = padding, as in PyTorch) or
blocked by ``attn_mask`` / the causal mask gets the score ``-inf`` and hence exactly zero
weight; a query whose keys are all masked gets zero weights, a zero output and zero
gradients (instead of the NaN of ``0 / 0``). Every mask and bias here is read as
:class:`torch.nn.MultiheadAttention` reads its masks: bool ``True`` = masked out (the
opposite of the bool ``attn_mask`` of :func:`torch.nn.functional.scaled_dot_product_attention`,
where ``True`` = may attend), floating point = added to the scores; any other dtype (an
integer 0/1 mask) raises ``TypeError`` naming the argument, as PyTorch refuses it too.

Multi-head attention (Vaswani et al., Section 3.2.2), with ``d_k = d_model / h``:

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
    head_i             = Attention(Q W_i^Q, K W_i^K, V W_i^V)
    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V        (M: 0 or -inf)

:class:`MultiHeadAttention` stores ``W^Q, W^K, W^V`` stacked as ``in_proj_weight`` and
``W^O`` as ``out_proj``, the layout of :class:`torch.nn.MultiheadAttention`, so either's
``state_dict`` loads into the other. Like it, it also takes one unbatched sequence:
query ``(T, E)``, key and value ``(S, E)``, ``key_padding_mask`` ``(S,)``, ``attn_mask``
``(T, S)`` or ``(h, T, S)``, giving ``(T, E)`` and weights ``(T, S)`` or ``(h, T, S)``.
It computes attention one of two ways, with equal results (tested): the fast path calls
:func:`torch.nn.functional.scaled_dot_product_attention` (fused flash / memory-efficient
kernels on GPU), the reference path (:func:`scaled_dot_product_attention_ref`) writes the
equation out. The reference path is used whenever the attention weights are requested,
and everywhere when ``fast=False``.

Deviations from the papers:

- The additive and general scores have no bias terms, as written in the papers' equations.
- The cosine score is the plain cosine in [-1, 1] (no learned temperature), so its
  softmax is never sharp; it is here for comparison.
- ``need_weights`` defaults to ``False`` (PyTorch: ``True``) and the weights returned are
  those before attention dropout (PyTorch returns them after).
- A query whose keys are all masked gets a zero output before ``W^O`` on both paths;
  ``nn.MultiheadAttention`` returns NaN there on some paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.registry import Registry

SCORES = Registry("attention score")


# ---------------------------------------------------------------------------- scores


def _same_width(name: str, query_dim: int, key_dim: int) -> None:
    if query_dim != key_dim:
        raise ValueError(f"the {name} score needs queries and keys of one width, got {query_dim} and {key_dim}")


@SCORES.register("dot")
class DotScore(nn.Module):
    """``score(s, h) = s^T h``."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None):
        super().__init__()
        _same_width("dot", query_dim, key_dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return query @ keys.transpose(-2, -1)  # (B, T, d) @ (B, d, S) -> (B, T, S)


@SCORES.register("scaled_dot")
class ScaledDotScore(nn.Module):
    """``score(s, h) = s^T h / sqrt(d_k)``: keeps the logits' variance near 1 for unit-variance inputs."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None):
        super().__init__()
        _same_width("scaled_dot", query_dim, key_dim)
        self.scale = 1.0 / math.sqrt(key_dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return (query @ keys.transpose(-2, -1)) * self.scale  # (B, T, S)


@SCORES.register("additive")
class AdditiveScore(nn.Module):
    """Bahdanau's ``score(s, h) = v^T tanh(W_s s + W_h h)``, a one-hidden-layer MLP.

    Args:
        query_dim: Width of ``s``.
        key_dim: Width of ``h``.
        hidden_dim: Width of the hidden layer (default ``key_dim``).
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or key_dim
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)  # W_s
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False)  # W_h
        self.v = nn.Linear(hidden_dim, 1, bias=False)  # v^T

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        q = self.query_proj(query).unsqueeze(2)  # (B, T, 1, h)
        k = self.key_proj(keys).unsqueeze(1)  # (B, 1, S, h)
        return self.v(torch.tanh(q + k)).squeeze(-1)  # (B, T, S, h) -> (B, T, S)


@SCORES.register("cosine")
class CosineScore(nn.Module):
    """``score(s, h) = s^T h / (|s| |h|)`` (norms floored at 1e-8)."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None):
        super().__init__()
        _same_width("cosine", query_dim, key_dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        q = F.normalize(query, dim=-1, eps=1e-8)
        k = F.normalize(keys, dim=-1, eps=1e-8)
        return q @ k.transpose(-2, -1)  # (B, T, S), in [-1, 1]


@SCORES.register("general")
class GeneralScore(nn.Module):
    """Luong's ``score(s, h) = s^T W h``, a bilinear form (queries and keys may differ in width)."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None):
        super().__init__()
        self.weight = nn.Linear(key_dim, query_dim, bias=False)  # W: h -> W h

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return query @ self.weight(keys).transpose(-2, -1)  # (B, T, d_q) @ (B, d_q, S) -> (B, T, S)


def make_score(name: str, query_dim: int, key_dim: int | None = None, hidden_dim: int | None = None) -> nn.Module:
    """The score function ``name`` for queries of width ``query_dim`` and keys of ``key_dim``."""
    return SCORES.build(name, query_dim=query_dim, key_dim=key_dim or query_dim, hidden_dim=hidden_dim)


# ---------------------------------------------------------------------------- masks and softmax


def check_mask_dtypes(**masks: torch.Tensor | None) -> None:
    """Refuse, in one line naming the argument, a mask that is neither bool nor floating point.

    PyTorch reads only these two kinds (``nn.MultiheadAttention`` asserts it; an integer mask
    is an error in ``F.scaled_dot_product_attention``): added as numbers, an integer 0/1 mask
    would shift the scores by 1 and block nothing.

    Args:
        masks: The masks by argument name (``attn_mask=...``); ``None`` is skipped.

    Raises:
        TypeError: ``"<name> must be bool (True = masked out) or floating point (added to
            the scores), got <dtype>"``.
    """
    for name, mask in masks.items():
        if mask is not None and mask.dtype != torch.bool and not mask.is_floating_point():
            raise TypeError(
                f"{name} must be bool (True = masked out) or floating point (added to the scores), got {mask.dtype}"
            )


def check_bool_mask(mask: torch.Tensor, name: str, meaning: str) -> None:
    """Refuse a ``mask`` that is not bool, in one line naming it and what its ``True`` means.

    For the masks that only have a bool reading (a source's ``src_mask``, ``True`` at real
    tokens): a float there could be a 0/1 mask or a 0/-inf bias, and the two read oppositely.

    Raises:
        TypeError: ``"<name> must be a bool tensor (<meaning>), got <dtype>"``.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor ({meaning}), got {mask.dtype}")


def _as_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A checked mask as an additive bias of ``dtype``: bool ``True`` -> ``-inf``, ``False`` -> 0;
    a float mask as it is (cast, so that a bias that requires grad keeps its gradient)."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def causal_mask(tgt_len: int, src_len: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """``(T, S)`` bool, ``True`` where query ``t`` may not see key ``s > t`` (top-left aligned).

    ``True`` = masked out, as every mask of this module and ``nn.MultiheadAttention``'s
    ``attn_mask`` read it; ``F.scaled_dot_product_attention`` reads a bool mask the other way
    round (``True`` = may attend): give it ``~causal_mask(...)`` or ``is_causal=True``.
    """
    src_len = tgt_len if src_len is None else src_len
    return torch.ones(tgt_len, src_len, dtype=torch.bool, device=device).triu(1)


def attention_bias(
    batch: int,
    num_heads: int,
    tgt_len: int,
    src_len: int,
    key_padding_mask: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """All masks as one additive bias ``M`` broadcastable to ``(B, H, T, S)``: 0 where a key
    is visible, ``-inf`` where it is not, plus any float mask given. ``None`` if no mask.

    The masks are read as ``nn.MultiheadAttention`` reads them: bool ``True`` = masked out,
    floating point = added (cast to ``dtype``); a bool and a float mask may be combined.

    Args:
        key_padding_mask: ``(B, S)``; bool ``True`` at padding, or float (added).
        attn_mask: ``(T, S)``, ``(B * H, T, S)`` or ``(B, H, T, S)``; bool ``True`` where
            attending is not allowed, or float (added).
        is_causal: Add the causal mask when ``attn_mask`` is ``None`` (with a mask given,
            ``is_causal`` is only a hint that it is causal, as in PyTorch).

    Raises:
        TypeError: A mask neither bool nor floating point (see :func:`check_mask_dtypes`).
        ValueError: A mask of the wrong shape.
    """
    check_mask_dtypes(key_padding_mask=key_padding_mask, attn_mask=attn_mask)
    bias = None

    def add(mask: torch.Tensor) -> None:
        nonlocal bias
        mask = _as_bias(mask, dtype)
        bias = mask if bias is None else bias + mask

    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (batch, src_len):
            raise ValueError(
                f"key_padding_mask must have shape (B, S) = {(batch, src_len)}, got {tuple(key_padding_mask.shape)}"
            )
        add(key_padding_mask.view(batch, 1, 1, src_len))
    if attn_mask is None and is_causal:
        attn_mask = causal_mask(tgt_len, src_len, device)
    if attn_mask is not None:
        if attn_mask.dim() == 2 and tuple(attn_mask.shape) == (tgt_len, src_len):
            add(attn_mask.view(1, 1, tgt_len, src_len))
        elif attn_mask.dim() == 3 and tuple(attn_mask.shape) == (batch * num_heads, tgt_len, src_len):
            add(attn_mask.view(batch, num_heads, tgt_len, src_len))
        elif attn_mask.dim() == 4 and tuple(attn_mask.shape) == (batch, num_heads, tgt_len, src_len):
            add(attn_mask)
        else:
            raise ValueError(
                f"attn_mask must have shape (T, S) = {(tgt_len, src_len)}, (B * H, T, S) or (B, H, T, S), "
                f"got {tuple(attn_mask.shape)}"
            )
    return bias


def masked_softmax(scores: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(scores + bias)`` over the last dimension (the keys).

    ``bias`` (broadcastable to ``scores``) is read as ``nn.MultiheadAttention`` reads an
    ``attn_mask``: bool ``True`` = masked out (``-inf``), floating point = added (cast to the
    scores' dtype); another dtype raises ``TypeError``. Keys with bias ``-inf`` get exactly
    zero weight; rows with every key masked get all zeros, and zero gradients, rather than NaN.
    """
    if bias is None:
        return torch.softmax(scores, dim=-1)
    check_mask_dtypes(bias=bias)
    scores = scores + _as_bias(bias, scores.dtype)
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)  # every key masked: 0/0
    # The softmax of a dead row is taken over zeros, not -inf: its NaN would leak into the
    # gradients of every key through the backward pass even after the weights are zeroed.
    return torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)


def scaled_dot_product_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(Q K^T / sqrt(d_k) + M) V`` written out; returns ``(output, weights)``.

    Shapes ``(..., T, d_k)``, ``(..., S, d_k)``, ``(..., S, d_v)``; bias broadcastable to
    ``(..., T, S)``. The weights are those before dropout.

    ``bias`` is ``M``, read as by :func:`masked_softmax`: floating point is added to the
    scores (as ``F.scaled_dot_product_attention`` adds a float ``attn_mask``); bool ``True`` =
    masked out, the reading of :func:`causal_mask`, :func:`attention_bias` and
    ``nn.MultiheadAttention``, and the opposite of ``F.scaled_dot_product_attention``'s bool
    ``attn_mask`` (``True`` = may attend), which here is ``~attn_mask``. An integer mask
    raises ``TypeError``. A query whose keys are all masked gets zero weights, a zero output
    and zero gradients (as ``F.scaled_dot_product_attention`` gives in torch 2.14).
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (..., T, S)
    weights = masked_softmax(scores, bias)
    return F.dropout(weights, dropout_p, training) @ v, weights  # (..., T, d_v), (..., T, S)


# ---------------------------------------------------------------------------- single-head attention


class Attention(nn.Module):
    """One attention head with a selectable score: ``c = sum_s softmax(score(s, h))_s v_s``.

    The RNN encoder-decoders' attention (Bahdanau: ``additive``; Luong: ``dot``,
    ``general``). Queries may be ``(B, d_q)`` (one decoder step) or ``(B, T, d_q)``.

    Args:
        score: Name in :data:`SCORES`.
        query_dim: Width of the queries.
        key_dim: Width of the keys (default ``query_dim``).
        hidden_dim: Hidden width of the ``additive`` score.
        dropout: Dropout on the weights (training only).
    """

    def __init__(
        self,
        score: str,
        query_dim: int,
        key_dim: int | None = None,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.score = make_score(score, query_dim, key_dim, hidden_dim)
        self.dropout = dropout

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(context (B, [T,] d_v), weights (B, [T,] S))``.

        ``key_padding_mask`` ``(B, S)`` and ``attn_mask`` ``(T, S)`` or ``(B, T, S)`` as in
        :func:`attention_bias` (``nn.MultiheadAttention``'s reading): bool ``True`` = masked
        out, floating point = added to the scores, another dtype ``TypeError``.
        """
        one_step = query.dim() == 2
        if one_step:
            query = query.unsqueeze(1)  # (B, 1, d_q)
        values = keys if values is None else values
        if query.dim() != 3 or keys.dim() != 3 or values.shape[:2] != keys.shape[:2] or len(query) != len(keys):
            raise ValueError(
                "expected query (B, [T,] d_q), keys (B, S, d_k) and values (B, S, d_v), got "
                f"{tuple(query.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}"
            )
        b, t, s = len(query), query.shape[1], keys.shape[1]
        bias = attention_bias(b, 1, t, s, key_padding_mask, attn_mask, is_causal, query.dtype, query.device)
        scores = self.score(query, keys)  # (B, T, S)
        weights = masked_softmax(scores, None if bias is None else bias.squeeze(1))  # (B, T, S)
        context = F.dropout(weights, self.dropout, self.training) @ values  # (B, T, d_v)
        if one_step:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


# ---------------------------------------------------------------------------- multi-head attention


def _each(
    fn: Callable[[torch.Tensor], torch.Tensor], query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``fn`` of query, key and value, keeping one tensor where they were one (so that
    self-attention keeps :meth:`MultiHeadAttention.project`'s single matrix product)."""
    q = fn(query)
    k = q if key is query else fn(key)
    return q, k, (k if value is key else fn(value))


# The number of dimensions nn.MultiheadAttention accepts for each input beside the query:
# (with a batched query, with an unbatched one). The 4-D (B, h, T, S) attn_mask is ours.
_INPUT_DIMS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "key": ((3,), (2,)),
    "value": ((3,), (2,)),
    "key_padding_mask": ((2,), (1,)),
    "attn_mask": ((2, 3, 4), (2, 3)),
}


def _is_batched(query: torch.Tensor, **others: torch.Tensor | None) -> bool:
    """Whether ``query`` and the ``others`` (by name: ``key``, ``value``, the masks) are a
    batch (3-D query) or one unbatched sequence (2-D query); a mix of the two is refused."""
    if query.dim() not in (2, 3):
        raise ValueError(f"expected query (T, E) unbatched or batched with 3 dimensions, got {tuple(query.shape)}")
    batched = query.dim() == 3
    wrong = []
    for name, x in others.items():
        allowed = _INPUT_DIMS[name][0 if batched else 1]
        if x is not None and x.dim() not in allowed:
            wrong.append(f"{name} {tuple(x.shape)} is not {' or '.join(f'{d}-D' for d in allowed)}")
    if wrong:
        kind, others_wrong = ("batched (3-D)" if batched else "unbatched (2-D)"), "; ".join(wrong)
        raise ValueError(f"batched and unbatched inputs mixed: query {tuple(query.shape)} is {kind}, {others_wrong}")
    return batched


class MultiHeadAttention(nn.Module):
    """``Concat(head_1..head_h) W^O`` with ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``.

    Parameters have the names and shapes of :class:`torch.nn.MultiheadAttention`:
    ``in_proj_weight`` ``(3 E, E)`` = ``[W^Q; W^K; W^V]`` (rows of head ``i`` at
    ``i d_k:(i + 1) d_k`` of each block), or ``q_proj_weight`` / ``k_proj_weight`` /
    ``v_proj_weight`` when keys or values have other widths (``kdim``, ``vdim``);
    ``in_proj_bias`` ``(3 E,)``; ``out_proj`` (``W^O``, a Linear E -> E). Initialised as
    PyTorch does: Xavier-uniform ``W^{Q,K,V}``, zero biases.

    Args:
        embed_dim: Model width ``E = h d_k``.
        num_heads: Number of heads ``h``.
        dropout: Dropout on the attention weights (training only).
        bias: Biases on the input and output projections.
        kdim: Width of the keys (default ``E``).
        vdim: Width of the values (default ``E``).
        batch_first: Inputs and outputs are ``(B, T, E)`` (else ``(T, B, E)``).
        fast: Use ``F.scaled_dot_product_attention`` unless weights are requested.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        fast: bool = True,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first, self.fast = dropout, batch_first, fast
        if self.kdim == self.vdim == embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d_k)

    def _weights(self) -> tuple[torch.Tensor, ...]:
        """``W^Q, W^K, W^V`` and their biases (``None`` without biases)."""
        if self.in_proj_weight is not None:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        return w_q, w_k, w_v, b_q, b_k, b_v

    def project_query(self, query: torch.Tensor) -> torch.Tensor:
        """``Q W^Q`` split into heads: ``(B, T, E)`` -> ``(B, h, T, d_k)``."""
        w_q, _, _, b_q, _, _ = self._weights()
        return self._split_heads(F.linear(query, w_q, b_q))

    def project_key_value(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``K W^K`` and ``V W^V`` split into heads: ``(B, h, S, d_k)`` each (cacheable for decoding)."""
        _, w_k, w_v, _, b_k, b_v = self._weights()
        return self._split_heads(F.linear(key, w_k, b_k)), self._split_heads(F.linear(value, w_v, b_v))

    def project(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Q W^Q``, ``K W^K``, ``V W^V`` split into heads: ``(B, h, T, d_k)``, ``(B, h, S, d_k)`` x2."""
        if self.in_proj_weight is not None and query is key and key is value:
            # Self-attention: one matrix product for Q, K and V.
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            return self._split_heads(q), self._split_heads(k), self._split_heads(v)
        return (self.project_query(query), *self.project_key_value(key, value))

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``query`` ``(B, T, E)`` to ``key`` ``(B, S, kdim)`` / ``value`` ``(B, S, vdim)``.

        Masks as in :func:`attention_bias`, read as ``nn.MultiheadAttention`` reads them:
        ``key_padding_mask`` bool ``True`` at padding, ``attn_mask`` bool ``True`` where
        attending is not allowed, either floating point = added to the scores (cast to the
        query's dtype, where PyTorch refuses a float mask of another dtype); an integer mask
        raises ``TypeError`` naming it (PyTorch: ``AssertionError``). A query whose keys are
        all masked gets a zero output before ``W^O``. Returns the output ``(B, T, E)`` and, if
        ``need_weights``, the weights ``(B, T, S)`` averaged over heads (or ``(B, h, T, S)``
        with ``average_attn_weights=False``), else ``None``.

        One unbatched sequence, as :class:`torch.nn.MultiheadAttention` takes it (whatever
        ``batch_first``): query ``(T, E)``, key / value ``(S, kdim)`` / ``(S, vdim)``,
        ``key_padding_mask`` ``(S,)``, ``attn_mask`` ``(T, S)`` or ``(h, T, S)``; the output is
        ``(T, E)``, the weights ``(T, S)`` or ``(h, T, S)``. Batched and unbatched inputs
        mixed raise ``ValueError``.
        """
        batched = _is_batched(query, key=key, value=value, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
        if not batched:  # a batch of one, batch first; an (h, T, S) attn_mask is then the (B * h, T, S) form
            query, key, value = _each(lambda x: x.unsqueeze(0), query, key, value)  # (1, T, E), (1, S, kdim), ...
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)  # (1, S)
        elif not self.batch_first:
            query, key, value = _each(lambda x: x.transpose(0, 1), query, key, value)
        self._check(query, key, value, batched)
        q, k, v = self.project(query, key, value)  # (B, h, T, d_k), (B, h, S, d_k), (B, h, S, d_k)
        out, weights = self.attend(q, k, v, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)
        if not batched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)  # (T, E), (T, S) or (h, T, S)
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention of projected heads ``q`` ``(B, h, T, d_k)`` over ``k``, ``v`` ``(B, h, S, d_k)``,
        then ``Concat(heads) W^O``: ``(B, T, E)`` (batch first), and the weights as in :meth:`forward`."""
        b, _, t, _ = q.shape
        s = k.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        causal_only = is_causal and attn_mask is None and key_padding_mask is None
        bias = None
        if not causal_only or need_weights or not self.fast:
            bias = attention_bias(b, self.num_heads, t, s, key_padding_mask, attn_mask, is_causal, q.dtype, q.device)
        weights = None
        if need_weights or not self.fast:
            out, weights = scaled_dot_product_attention_ref(q, k, v, bias, dropout_p, self.training)
        else:
            # With only the causal mask, is_causal lets the fused kernels skip the mask tensor.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, is_causal=causal_only)
            if bias is not None:  # rows whose keys are all masked: zeros, as on the reference path
                out = out.masked_fill(torch.isneginf(bias).all(dim=-1, keepdim=True), 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(b, t, self.embed_dim))  # Concat(heads) W^O: (B, T, E)
        if not need_weights:  # the reference path computed them anyway
            return out, None
        return out, (weights.mean(dim=1) if average_attn_weights else weights)  # (B, T, S) or (B, h, T, S)

    def _check(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, batched: bool = True) -> None:
        """Widths, batch and lengths of batch-first inputs (unbatched ones given a batch of one)."""
        ok = (
            query.dim() == key.dim() == value.dim() == 3
            and query.shape[-1] == self.embed_dim
            and key.shape[-1] == self.kdim
            and value.shape[-1] == self.vdim
            and query.shape[0] == key.shape[0] == value.shape[0]
            and key.shape[1] == value.shape[1]
        )
        if not ok:
            order = ("(B, T, E)" if self.batch_first else "(T, B, E)") if batched else "(T, E)"
            shapes = ", ".join(str(tuple(x.shape[0 if batched else 1 :])) for x in (query, key, value))
            raise ValueError(
                f"expected query {order} with E={self.embed_dim}, key and value of the same batch and length "
                f"with widths {self.kdim} and {self.vdim}; got {shapes}"
            )

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, fast={self.fast}"


def set_fast_attention(model: nn.Module, fast: bool) -> None:
    """Switch every :class:`MultiHeadAttention` in ``model`` to the fused (``True``) or reference path."""
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.fast = fast
