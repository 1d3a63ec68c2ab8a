"""The Transformer: an encoder-decoder built on attention alone.

A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, L. Kaiser,
I. Polosukhin, "Attention Is All You Need", NeurIPS 2017. https://arxiv.org/abs/1706.03762

Tokens are embedded, scaled by ``sqrt(d_model)`` and summed with sinusoidal positions
(Sections 3.4-3.5); dropout follows the sum (Section 5.4). Each of the ``N`` encoder
layers has two sub-layers, each of the ``N`` decoder layers three, every one wrapped as

    LayerNorm(x + Dropout(Sublayer(x)))                          (Section 3.1, 5.4)

    encoder:  self-attention over the source (padding masked)
              FFN(x) = max(0, x W_1 + b_1) W_2 + b_2             (Eq. 2; activation="relu")
    decoder:  causal self-attention (position t sees 1..t)
              attention over the encoder output ("memory", padding masked)
              FFN

with ``MultiHead(Q, K, V) = Concat(head_1..head_h) W^O``,
``head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_k)) V W_i^V`` (Eq. 1, Section 3.2.2;
:class:`zoo.layers.attention.MultiHeadAttention`). A linear map and a softmax (in the
loss) turn the decoder output into next-token probabilities. Variants (Table 3):
base ``d_model = 512, N = 6, h = 8, d_ff = 2048, P_drop = 0.1``; big ``1024, 6, 16, 4096,
0.3``; ``transformer_small`` (``64, 2, 4, 256, 0.1``) is ours, for CPU-sized tasks.

Embeddings (Section 3.4): the decoder's input embedding and the output projection share
one matrix (always, as in the paper); ``share_embeddings=True`` also gives the encoder
that matrix, which needs one vocabulary for source and target (the paper's shared
37,000-token byte-pair vocabulary for English-German).

Parameter count, with ``V`` the shared vocabulary and ``d``, ``d_ff``, ``N``:

    encoder layer  4 d^2 + 4 d  (attention)  + 2 d d_ff + d_ff + d  (FFN)  + 4 d  (2 LayerNorms)
    decoder layer  8 d^2 + 8 d  (2 attentions) + 2 d d_ff + d_ff + d     + 6 d  (3 LayerNorms)
    embeddings     V d  (one matrix for both embeddings and the output projection)

Base with ``V = 37,000``: 18,914,304 (encoder) + 25,224,192 (decoder) + 18,944,000 =
**63,082,496**, where Table 3 says 65M; big: **214,245,376**, Table 3: 213M (the docs'
Transformer page discusses the difference).

Deviations from the paper:

- ``norm_first=True`` (off by default) gives the pre-norm layer
  ``x + Dropout(Sublayer(LayerNorm(x)))`` (Xiong et al., 2020, arXiv:2002.04745), which
  trains without warm-up; it then needs, and has, a final LayerNorm after each stack.
  The post-norm default has none (PyTorch's ``nn.Transformer`` adds one anyway).
- The layers carry PyTorch's names and layout (``self_attn``, ``multihead_attn``,
  ``linear1``, ``dropout``, ``linear2``, ``norm1..3``, ``dropout1..3``), so
  ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` weights load directly.
  ``attention_dropout`` (on the attention weights) and ``activation_dropout`` (after the
  FFN's activation), both from tensor2tensor and in PyTorch's layers, default to 0, as in
  the paper.
- ``activation="gelu"`` (off by default) replaces the FFN's ``max(0, z)`` with
  ``GELU(z) = z Phi(z)``, ``Phi`` the standard normal CDF, in its exact erf form
  (Hendrycks & Gimpel, 2016, arXiv:1606.08415; BERT's and GPT's FFN), as PyTorch's layers
  do with ``activation="gelu"``.
- The output projection has no bias (the paper does not mention one).
- Initialisation is not in the paper: Xavier-uniform linear weights, zero biases, and
  N(0, 1/d_model) embeddings, so that the scaled embeddings have unit variance.
- No ``padding_idx`` on the embeddings: padding is removed by masks (source keys) and by
  the loss (target positions); the target needs no padding mask of its own, because
  padding comes after every real token and the causal mask already hides later positions.
- ``positional="learned"`` (Table 3, row E) uses one learned table for both stacks.
- Not a deviation, for the record: decoding one token at a time
  (:meth:`Transformer.decode_step`) caches each decoder layer's self-attention keys and
  values and the memory's projected keys and values, and gives the same logits as the
  teacher-forced pass (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.attention import MultiHeadAttention, check_bool_mask, check_mask_dtypes
from zoo.layers.positional import make_positional
from zoo.models.base import Seq2SeqModel
from zoo.models.factory import register_model
from zoo.registry import Registry

# The FFN's activation by name: the two that nn.TransformerEncoderLayer/DecoderLayer accept as strings.
FFN_ACTIVATIONS = Registry("Transformer FFN activation")
FFN_ACTIVATIONS.register("relu")(F.relu)  # max(0, z): the paper's (Eq. 2)
FFN_ACTIVATIONS.register("gelu")(F.gelu)  # z Phi(z), the exact erf form (PyTorch's default approximate="none")


def feed_forward(layer: TransformerEncoderLayer | TransformerDecoderLayer, x: torch.Tensor) -> torch.Tensor:
    """``FFN(x) = act(x W_1 + b_1) W_2 + b_2`` (Eq. 2 with ``act = max(0, .)``) with a layer's
    ``linear1``/``linear2`` and the activation it chose by name."""
    return layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))  # (B, T, d) -> (B, T, d_ff) -> (B, T, d)


class TransformerEncoderLayer(nn.Module):
    """Self-attention and FFN, each in a residual connection with LayerNorm (post- or pre-norm).

    Args:
        d_model: Model width ``d``.
        num_heads: Attention heads ``h``.
        d_ff: Inner width of the FFN.
        dropout: Residual dropout ``P_drop``.
        attention_dropout: Dropout on the attention weights.
        activation_dropout: Dropout after the FFN's activation.
        norm_first: Pre-norm (``x + Sublayer(LN(x))``) instead of the paper's post-norm.
        layer_norm_eps: LayerNorm epsilon.
        activation: The FFN's activation, ``"relu"`` (the paper) or ``"gelu"`` (exact, erf form);
            another name raises :class:`zoo.errors.ConfigError` listing the choices.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        activation: str = "relu",
    ):
        super().__init__()
        self.activation = FFN_ACTIVATIONS.get(activation)  # a function, as in PyTorch's layers: no state_dict entry
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=attention_dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(activation_dropout)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm_first = norm_first

    def _sa(
        self, x: torch.Tensor, mask: torch.Tensor | None, padding: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        y, _ = self.self_attn(x, x, x, key_padding_mask=padding, attn_mask=mask, is_causal=causal)
        return self.dropout1(y)

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """``src`` ``(B, S, d)``. PyTorch's argument names and readings: ``src_mask`` is the
        attention mask (bool ``True`` = blocked), ``src_key_padding_mask`` is bool ``True`` at
        padding; a floating-point mask is added to the scores, an integer one raises
        ``TypeError`` naming it; see :func:`zoo.layers.attention.attention_bias`."""
        check_mask_dtypes(src_mask=src_mask, src_key_padding_mask=src_key_padding_mask)
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self.dropout2(feed_forward(self, self.norm2(x)))
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self.dropout2(feed_forward(self, x)))  # (B, S, d)


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, attention over the memory, and FFN, each with residual + LayerNorm.

    Args: as :class:`TransformerEncoderLayer`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        activation: str = "relu",
    ):
        super().__init__()
        self.activation = FFN_ACTIVATIONS.get(activation)  # a function, as in PyTorch's layers: no state_dict entry
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=attention_dropout)
        self.multihead_attn = MultiHeadAttention(d_model, num_heads, dropout=attention_dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(activation_dropout)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> torch.Tensor:
        """``tgt`` ``(B, T, d)``, ``memory`` ``(B, S, d)``; PyTorch's mask arguments, read as
        in :meth:`TransformerEncoderLayer.forward` (bool ``True`` = blocked / padding, float
        added, an integer mask a ``TypeError`` naming it)."""
        check_mask_dtypes(
            tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
        )  # fmt: skip

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            y, _ = self.self_attn(
                h, h, h, key_padding_mask=tgt_key_padding_mask, attn_mask=tgt_mask, is_causal=tgt_is_causal
            )  # fmt: skip
            return y

        def cross_attention(h: torch.Tensor) -> tuple[torch.Tensor, None]:
            y, _ = self.multihead_attn(
                h, memory, memory, key_padding_mask=memory_key_padding_mask, attn_mask=memory_mask,
                is_causal=memory_is_causal,
            )  # fmt: skip
            return y, None

        return self._layer(tgt, self_attention, cross_attention)[0]

    def step(
        self,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor],
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """One decoding step for the newest position ``x`` ``(B, 1, d)``.

        ``cache`` holds the self-attention keys and values of the earlier positions
        ``(B, h, t, d_k)``; the new position attends to them and itself (so no causal mask).
        ``memory_kv`` are the memory's projected keys and values ``(B, h, S, d_k)``.
        Returns the output ``(B, 1, d)``, the cache extended by one position and, if
        asked, the memory attention averaged over heads ``(B, 1, S)``. ``memory_key_padding_mask``
        ``(B, S)`` as in :meth:`forward`.
        """
        check_mask_dtypes(memory_key_padding_mask=memory_key_padding_mask)
        new_cache = cache

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            nonlocal new_cache
            q, k, v = self.self_attn.project(h, h, h)  # (B, h, 1, d_k) each
            new_cache = (torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2))  # (B, h, t + 1, d_k)
            return self.self_attn.attend(q, *new_cache)[0]

        def cross_attention(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            q = self.multihead_attn.project_query(h)
            return self.multihead_attn.attend(
                q, *memory_kv, key_padding_mask=memory_key_padding_mask, need_weights=need_weights
            )  # fmt: skip

        out, weights = self._layer(x, self_attention, cross_attention)
        return out, new_cache, weights

    def _layer(
        self,
        x: torch.Tensor,
        self_attention: Callable[[torch.Tensor], torch.Tensor],
        cross_attention: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The three sub-layers around the given attentions, post- or pre-norm."""
        if self.norm_first:
            x = x + self.dropout1(self_attention(self.norm1(x)))
            y, weights = cross_attention(self.norm2(x))
            x = x + self.dropout2(y)
            return x + self.dropout3(feed_forward(self, self.norm3(x))), weights
        x = self.norm1(x + self.dropout1(self_attention(x)))
        y, weights = cross_attention(x)
        x = self.norm2(x + self.dropout2(y))
        return self.norm3(x + self.dropout3(feed_forward(self, x))), weights  # (B, T, d)


class TransformerEncoder(nn.Module):
    """``N`` encoder layers (+ a final LayerNorm when pre-norm)."""

    def __init__(self, layers: list[TransformerEncoderLayer], norm: nn.LayerNorm | None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, S, d)``; ``key_padding_mask`` ``(B, S)``, bool ``True`` at padding (or float, added)."""
        check_mask_dtypes(key_padding_mask=key_padding_mask)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=key_padding_mask)  # (B, S, d)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(nn.Module):
    """``N`` decoder layers (+ a final LayerNorm when pre-norm)."""

    def __init__(self, layers: list[TransformerDecoderLayer], norm: nn.LayerNorm | None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_key_padding_mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, d)``, ``memory`` ``(B, S, d)``; ``memory_key_padding_mask`` ``(B, S)``,
        bool ``True`` at padding (or float, added)."""
        check_mask_dtypes(memory_key_padding_mask=memory_key_padding_mask)
        for layer in self.layers:
            x = layer(x, memory, memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=True)  # (B, T, d)
        return x if self.norm is None else self.norm(x)

    def memory_kv(self, memory: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Each layer's projected memory keys and values ``(B, h, S, d_k)``, computed once per source."""
        return tuple(layer.multihead_attn.project_key_value(memory, memory) for layer in self.layers)

    def step(
        self,
        x: torch.Tensor,
        caches: tuple[tuple[torch.Tensor, torch.Tensor], ...],
        memory_kv: tuple[tuple[torch.Tensor, torch.Tensor], ...],
        memory_key_padding_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, tuple[tuple[torch.Tensor, torch.Tensor], ...], torch.Tensor]:
        """``x`` ``(B, 1, d)`` through every layer with its cache (see
        :meth:`TransformerDecoderLayer.step`). Returns the output ``(B, 1, d)``, the extended
        caches and the last layer's memory attention averaged over heads ``(B, 1, S)``."""
        check_mask_dtypes(memory_key_padding_mask=memory_key_padding_mask)
        new_caches, weights = [], None
        last = len(self.layers) - 1
        for i, (layer, cache, kv) in enumerate(zip(self.layers, caches, memory_kv)):
            x, cache, w = layer.step(x, cache, kv, memory_key_padding_mask, need_weights=i == last)
            new_caches.append(cache)
            if i == last:
                weights = w
        return (x if self.norm is None else self.norm(x)), tuple(new_caches), weights


class Transformer(Seq2SeqModel):
    """Encoder-decoder Transformer keeping the :class:`Seq2SeqModel` contract.

    Args:
        src_vocab_size: Source vocabulary size.
        tgt_vocab_size: Target vocabulary size.
        pad_idx: Padding token id.
        bos_idx: Begin-of-sequence token id (first decoder input).
        eos_idx: End-of-sequence token id.
        d_model: Model width ``d``.
        num_heads: Attention heads ``h``.
        num_encoder_layers: Encoder depth ``N``.
        num_decoder_layers: Decoder depth ``N``.
        d_ff: Inner width of the FFN.
        dropout: ``P_drop``: on embeddings + positions and on every sub-layer output.
        attention_dropout: Dropout on attention weights (0 in the paper).
        activation_dropout: Dropout after the FFN's activation (0 in the paper).
        norm_first: Pre-norm layers (and final LayerNorms) instead of post-norm.
        share_embeddings: One embedding matrix for source, target and output projection
            (needs ``src_vocab_size == tgt_vocab_size`` and one vocabulary).
        positional: ``"sinusoidal"`` (the paper) or ``"learned"``.
        max_len: Positions precomputed (sinusoidal) or learned.
        layer_norm_eps: LayerNorm epsilon.
        activation: The FFN's activation, ``"relu"`` (the paper) or ``"gelu"``.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_idx: int = 0,
        bos_idx: int = 1,
        eos_idx: int = 2,
        d_model: int = 512,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        d_ff: int = 2048,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        norm_first: bool = False,
        share_embeddings: bool = False,
        positional: str = "sinusoidal",
        max_len: int = 1024,
        layer_norm_eps: float = 1e-5,
        activation: str = "relu",
    ):
        super().__init__()
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"share_embeddings needs one vocabulary, got src_vocab_size={src_vocab_size} "
                f"and tgt_vocab_size={tgt_vocab_size}"
            )
        if num_encoder_layers < 1 or num_decoder_layers < 1:
            raise ValueError("the Transformer needs at least one encoder and one decoder layer")
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.pad_idx, self.bos_idx, self.eos_idx = pad_idx, bos_idx, eos_idx
        self.d_model, self.share_embeddings = d_model, share_embeddings
        self.embed_scale = math.sqrt(d_model)

        self.src_embedding = nn.Embedding(src_vocab_size, d_model)
        self.tgt_embedding = self.src_embedding if share_embeddings else nn.Embedding(tgt_vocab_size, d_model)
        self.positional = make_positional(positional, d_model, max_len)
        self.embed_dropout = nn.Dropout(dropout)
        layer_kw = dict(
            d_model=d_model, num_heads=num_heads, d_ff=d_ff, dropout=dropout, attention_dropout=attention_dropout,
            activation_dropout=activation_dropout, norm_first=norm_first, layer_norm_eps=layer_norm_eps,
            activation=activation,
        )  # fmt: skip

        def final_norm() -> nn.LayerNorm | None:
            return nn.LayerNorm(d_model, eps=layer_norm_eps) if norm_first else None

        encoder_layers = [TransformerEncoderLayer(**layer_kw) for _ in range(num_encoder_layers)]
        decoder_layers = [TransformerDecoderLayer(**layer_kw) for _ in range(num_decoder_layers)]
        self.encoder = TransformerEncoder(encoder_layers, final_norm())
        self.decoder = TransformerDecoder(decoder_layers, final_norm())
        self.output_projection = nn.Linear(d_model, tgt_vocab_size, bias=False)
        self._init_weights()
        self.output_projection.weight = self.tgt_embedding.weight  # tied (Section 3.4)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, MultiHeadAttention):
                m.reset_parameters()
        for emb in {self.src_embedding, self.tgt_embedding}:
            nn.init.normal_(emb.weight, std=self.d_model**-0.5)

    def _embed(self, embedding: nn.Embedding, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = embedding(tokens) * self.embed_scale  # (B, T, d), scaled by sqrt(d_model)
        return self.embed_dropout(self.positional(x, offset))  # + PE(pos)

    @staticmethod
    def _padding(src_mask: torch.Tensor) -> torch.Tensor:
        """The key padding mask (``True`` at padding) of a ``src_mask`` (``True`` at real tokens).

        Only bool is read: a float ``src_mask`` could be a 0/1 mask or a 0/-inf bias, which
        read oppositely (``.bool()`` of a 0/-inf bias would mask every real token).
        """
        check_bool_mask(src_mask, "src_mask", "True at real tokens, False at padding")
        return ~src_mask

    def _check(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        if src.dim() != 2 or tuple(src_mask.shape) != tuple(src.shape):
            raise ValueError(
                f"expected src (B, S) token ids and src_mask (B, S), got {tuple(src.shape)} and {tuple(src_mask.shape)}"
            )
        return self._padding(src_mask)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Encoder output ("memory") ``(B, S, d)`` for ``src`` ``(B, S)`` and ``src_mask`` ``(B, S)``,
        bool ``True`` at real tokens (another dtype raises ``TypeError``, as in :meth:`forward`)."""
        padding = self._check(src, src_mask)
        return self.encoder(self._embed(self.src_embedding, src), key_padding_mask=padding)  # (B, S, d)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, tgt_vocab_size)`` for ``tgt_in`` ``(B, T)`` (starting with BOS).

        ``src_mask`` ``(B, S)`` is bool, ``True`` at real tokens (the :class:`Seq2SeqModel`
        contract); a mask of another dtype raises ``TypeError`` naming ``src_mask``.
        """
        padding = self._check(src, src_mask)
        if tgt_in.dim() != 2 or len(tgt_in) != len(src):
            raise ValueError(f"expected tgt_in (B, T) with B={len(src)}, got {tuple(tgt_in.shape)}")
        memory = self.encoder(self._embed(self.src_embedding, src), key_padding_mask=padding)  # (B, S, d)
        y = self.decoder(self._embed(self.tgt_embedding, tgt_in), memory, memory_key_padding_mask=padding)  # (B, T, d)
        return self.output_projection(y)  # (B, T, V)

    def init_state(self, memory: torch.Tensor, src_mask: torch.Tensor) -> dict[str, Any]:
        """The decoding state, all tensors batch first: the source padding ``(B, S)``, each
        decoder layer's projected memory keys and values ``(B, h, S, d_k)`` and its (empty)
        self-attention cache ``(B, h, 0, d_k)``."""
        b, h = memory.shape[0], self.decoder.layers[0].self_attn.num_heads
        empty = memory.new_zeros(b, h, 0, self.d_model // h)
        return {
            "memory_padding_mask": self._padding(src_mask),
            "memory_kv": self.decoder.memory_kv(memory),
            "cache": tuple((empty, empty) for _ in self.decoder.layers),
        }

    def decode_step(
        self, tokens: torch.Tensor, state: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
        """Next-token logits ``(B, V)`` after ``tokens`` ``(B,)``, the new state, and the last
        decoder layer's attention over the source averaged over heads ``(B, S)``."""
        position = state["cache"][0][0].shape[2]  # tokens decoded so far
        x = self._embed(self.tgt_embedding, tokens.unsqueeze(1), offset=position)  # (B, 1, d)
        x, cache, weights = self.decoder.step(x, state["cache"], state["memory_kv"], state["memory_padding_mask"])
        logits = self.output_projection(x[:, 0])  # (B, V)
        return logits, {**state, "cache": cache}, weights[:, 0]


@dataclass(frozen=True)
class TransformerVariant:
    """One row of Table 3 (model width, depth, heads, FFN width, dropout)."""

    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    dropout: float


VARIANTS: dict[str, TransformerVariant] = {
    "transformer_small": TransformerVariant(64, 2, 4, 256, 0.1),  # ours, for CPU-sized tasks
    "transformer_base": TransformerVariant(512, 6, 8, 2048, 0.1),
    "transformer_big": TransformerVariant(1024, 6, 16, 4096, 0.3),
}


def _build(name: str, **kwargs) -> Transformer:
    v = VARIANTS[name]
    defaults = dict(
        d_model=v.d_model, num_encoder_layers=v.num_layers, num_decoder_layers=v.num_layers,
        num_heads=v.num_heads, d_ff=v.d_ff, dropout=v.dropout,
    )  # fmt: skip
    return Transformer(**{**defaults, **kwargs})


@register_model
def transformer_small(src_vocab_size: int = 32, tgt_vocab_size: int = 32, **kwargs) -> Transformer:
    return _build("transformer_small", src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, **kwargs)


# base and big default to the paper's English-German setup: one shared 37,000-token vocabulary.
@register_model
def transformer_base(
    src_vocab_size: int = 37000, tgt_vocab_size: int = 37000, share_embeddings: bool = True, **kwargs
) -> Transformer:
    return _build("transformer_base", src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                  share_embeddings=share_embeddings, **kwargs)  # fmt: skip


@register_model
def transformer_big(
    src_vocab_size: int = 37000, tgt_vocab_size: int = 37000, share_embeddings: bool = True, **kwargs
) -> Transformer:
    return _build("transformer_big", src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                  share_embeddings=share_embeddings, **kwargs)  # fmt: skip
