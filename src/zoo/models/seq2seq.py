"""Recurrent encoder-decoder with attention.

- Sutskever, Vinyals & Le, "Sequence to Sequence Learning with Neural Networks",
  NeurIPS 2014, arXiv:1409.3215: an encoder RNN reads the source, a decoder RNN started
  from its final state writes the target token by token, ``p(y_t | y_<t, x)``.
- Bahdanau, Cho & Bengio, "Neural Machine Translation by Jointly Learning to Align and
  Translate", ICLR 2015, arXiv:1409.0473: a bidirectional encoder, and at every step a
  context vector over all encoder states instead of one fixed vector.
- Luong, Pham & Manning, "Effective Approaches to Attention-based Neural Machine
  Translation", EMNLP 2015, arXiv:1508.04025: the attention computed from the current
  decoder state, the attentional hidden state and input feeding.

One decoder step (Luong et al., eqs. 5, 7 and section 3.3)::

    s_t     = RNN([E y_{t-1}; h~_{t-1}], s_{t-1})          input feeding (h~_0 = 0)
    e_ts    = score(s_t, h_s)                                h_s: encoder outputs
    alpha_t = softmax_s(e_ts)                                padded s get exactly 0
    c_t     = sum_s alpha_ts h_s
    h~_t    = tanh(W_c [c_t; s_t])
    p(y_t)  = softmax(W_out h~_t)

with ``score`` chosen by ``attention``:

- ``bahdanau`` (additive): ``v^T tanh(W_s s + W_h h)``
- ``luong_dot``: ``s^T h``;  ``scaled_dot``: ``s^T h / sqrt(d)`` (Vaswani et al., 2017)
- ``luong_general``: ``s^T W h``
- ``cosine``: ``gamma * s^T h / (|s| |h|)`` (Graves et al., 2014, "key strength" gamma)

Training feeds the gold previous token (teacher forcing) with probability
``teacher_forcing`` per step and sequence, otherwise the model's own previous argmax
(Bengio et al., 2015, scheduled sampling without the schedule).

Deviations from the papers:

- The decoder is Luong's for every score: ``bahdanau`` selects Bahdanau's additive
  *score*, but queries it with ``s_t`` rather than ``s_{t-1}``, and the context reaches
  the RNN only through input feeding.
- A bidirectional encoder has ``hidden / 2`` units per direction, so encoder outputs and
  decoder states are both ``hidden`` wide (as in OpenNMT) and every score applies; the
  decoder starts from the concatenated final states of both directions, layer by layer
  (Bahdanau et al. used ``tanh(W_s h_1^<-)``).
- ``cosine`` has a learned scale ``gamma`` (initially 10): cosines lie in [-1, 1] and
  their plain softmax can hardly be sharp.
- The source gets ``<eos>`` appended by the data, so it is never empty.
- ``impl: fused`` runs ``nn.LSTM``/``nn.GRU`` (cuDNN on a GPU); ``impl: reference`` the
  layers of :mod:`zoo.layers.recurrent`. They share parameter names and load each other's weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from zoo.errors import ConfigError
from zoo.models.base import Seq2SeqModel
from zoo.layers.attention import check_bool_mask, masked_softmax as softmax_with_bias
from zoo.layers.recurrent import make_rnn
from zoo.models.factory import register_model

SCORES = ("bahdanau", "luong_dot", "luong_general", "scaled_dot", "cosine")


class AttentionScore(nn.Module):
    """``score(s, h)`` between a decoder state ``s`` (B, Q) and encoder outputs ``h`` (B, S, K).

    :meth:`keys` transforms the encoder outputs once per source (``W_h h``, ``W h``);
    :meth:`forward` scores one query against them.
    """

    def __init__(self, kind: str, query_size: int, key_size: int):
        super().__init__()
        if kind not in SCORES:
            raise ConfigError(f"unknown attention {kind!r}; choose one of {', '.join(SCORES)}")
        if kind in ("luong_dot", "scaled_dot", "cosine") and query_size != key_size:
            raise ConfigError(f"attention {kind} needs equal query and key sizes, got {query_size} and {key_size}")
        self.kind = kind
        if kind == "bahdanau":
            self.W_s = nn.Linear(query_size, query_size, bias=False)
            self.W_h = nn.Linear(key_size, query_size)
            self.v = nn.Linear(query_size, 1, bias=False)
        elif kind == "luong_general":
            self.W = nn.Linear(key_size, query_size, bias=False)
        elif kind == "cosine":
            self.log_gamma = nn.Parameter(torch.tensor(math.log(10.0)))

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        if self.kind == "bahdanau":
            return self.W_h(memory)  # (B, S, Q)
        if self.kind == "luong_general":
            return self.W(memory)  # (B, S, Q)
        return memory

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if self.kind == "bahdanau":
            return self.v(torch.tanh(self.W_s(query).unsqueeze(1) + keys)).squeeze(-1)  # (B, S)
        if self.kind == "cosine":
            return self.log_gamma.exp() * F.cosine_similarity(query.unsqueeze(1), keys, dim=-1, eps=1e-6)
        scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S): s^T h
        return scores / math.sqrt(query.shape[-1]) if self.kind == "scaled_dot" else scores


_SRC_MASK = "True at real tokens, False at padding"


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension where ``mask`` is true; masked entries are exactly 0.

    ``mask`` is bool, ``True`` = may attend (as ``F.scaled_dot_product_attention`` reads a bool
    ``attn_mask``); another dtype raises ``TypeError`` naming ``mask``. A row with no key to
    attend gets zero weights and zero gradients (``F.scaled_dot_product_attention``: zeros).
    """
    check_bool_mask(mask, "mask", "True = may attend")
    return softmax_with_bias(scores, ~mask)  # bool True there = masked out


class Encoder(nn.Module):
    def __init__(self, cell: str, impl: str, vocab_size: int, emb_dim: int, hidden: int, layers: int,
                 bidirectional: bool, dropout: float, pad_idx: int):  # fmt: skip
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_idx)
        self.dropout = nn.Dropout(dropout)
        self.bidirectional = bidirectional
        self.rnn = make_rnn(
            cell, impl, input_size=emb_dim, hidden_size=hidden // 2 if bidirectional else hidden,
            num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0, bidirectional=bidirectional,
        )  # fmt: skip

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor):
        """Outputs (B, S, hidden), zero at padding, and the final state (layers, B, hidden) (a pair for LSTMs).

        ``src_mask`` (B, S) is bool, ``True`` at real tokens; another dtype raises ``TypeError``.
        """
        check_bool_mask(src_mask, "src_mask", _SRC_MASK)
        x = self.dropout(self.embedding(src))  # (B, S, E)
        steps = src.shape[1]
        # Padded batches are packed so that the reverse direction starts at each source's
        # last token. (On the meta device, used to count MACs, there are no lengths to pack by.)
        if src.device.type != "meta" and not bool(src_mask.all()):
            lengths = src_mask.sum(1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, final = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
        else:
            out, final = self.rnn(x)
        if self.bidirectional:  # (2L, B, H/2) -> (L, B, H): both directions side by side
            def merge(h: torch.Tensor) -> torch.Tensor:
                return torch.cat([h[0::2], h[1::2]], dim=-1)

            final = tuple(merge(h) for h in final) if isinstance(final, tuple) else merge(final)
        return out, final


class Seq2SeqRNN(Seq2SeqModel):
    """LSTM or GRU encoder-decoder with attention and input feeding.

    Args:
        cell: ``lstm`` or ``gru``.
        src_vocab_size: source vocabulary size (fixed by the data, like the four below).
        tgt_vocab_size: target vocabulary size.
        pad_idx: index of ``<pad>``.
        bos_idx: index of ``<bos>``.
        eos_idx: index of ``<eos>``.
        emb_dim: embedding width (source and target).
        hidden: encoder output and decoder state width.
        layers: RNN layers in the encoder and the decoder.
        bidirectional: bidirectional encoder (``hidden / 2`` units per direction).
        dropout: on embeddings, between RNN layers and before the output layer.
        attention: one of :data:`SCORES`.
        teacher_forcing: probability of feeding the gold previous token in training.
        impl: ``fused`` (``torch.nn``) or ``reference`` (:mod:`zoo.layers.recurrent`) recurrent layers.
    """

    def __init__(
        self, cell: str = "gru", src_vocab_size: int | None = 64, tgt_vocab_size: int | None = 64,
        pad_idx: int | None = 0, bos_idx: int | None = 1, eos_idx: int | None = 2, emb_dim: int = 64,
        hidden: int = 128, layers: int = 1, bidirectional: bool = True, dropout: float = 0.1,
        attention: str = "bahdanau", teacher_forcing: float = 1.0, impl: str = "fused",
    ):  # fmt: skip
        super().__init__()
        facts = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, pad_idx=pad_idx,
                     bos_idx=bos_idx, eos_idx=eos_idx)  # fmt: skip
        missing = [k for k, v in facts.items() if v is None]
        if missing:
            raise ConfigError(
                f"model.{missing[0]} is null: it is taken from a text dataset (data=dates, reverse, copy, sort, "
                f"parallel_tsv); sequence-to-sequence models cannot train on other data"
            )
        if cell not in ("lstm", "gru"):
            raise ConfigError(f"cell must be lstm or gru, got {cell!r}")
        if bidirectional and hidden % 2:
            raise ConfigError(f"a bidirectional encoder splits hidden between directions: hidden must be even, got {hidden}")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ConfigError(f"teacher_forcing is a probability, got {teacher_forcing}")
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.pad_idx, self.bos_idx, self.eos_idx = pad_idx, bos_idx, eos_idx
        self.cell, self.hidden, self.teacher_forcing = cell, hidden, teacher_forcing

        self.encoder = Encoder(cell, impl, src_vocab_size, emb_dim, hidden, layers, bidirectional, dropout, pad_idx)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, emb_dim, padding_idx=pad_idx)
        self.decoder = make_rnn(
            cell, impl, input_size=emb_dim + hidden, hidden_size=hidden, num_layers=layers,
            batch_first=True, dropout=dropout if layers > 1 else 0.0,
        )  # fmt: skip
        self.attention = AttentionScore(attention, hidden, hidden)
        self.combine = nn.Linear(2 * hidden, hidden, bias=False)  # W_c
        self.dropout = nn.Dropout(dropout)
        self.generator = nn.Linear(hidden, tgt_vocab_size)  # W_out

    # -- the Seq2SeqModel contract
    def encode(self, src: torch.Tensor, src_mask: torch.Tensor):
        """``(outputs (B, S, H), final state)`` of the encoder."""
        return self.encoder(src, src_mask)

    def init_state(self, memory, src_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The decoder state, every tensor batch first (so beam search can reorder it).

        ``src_mask`` (B, S) is bool, ``True`` at real tokens; another dtype raises ``TypeError``.
        """
        check_bool_mask(src_mask, "src_mask", _SRC_MASK)
        outputs, final = memory
        state = {
            "memory": outputs,  # (B, S, H)
            "keys": self.attention.keys(outputs),  # (B, S, *): computed once per source
            "mask": src_mask,  # (B, S)
            "feed": outputs.new_zeros(outputs.shape[0], self.hidden),  # h~_0 = 0
        }
        if isinstance(final, tuple):
            state["hidden"], state["cell"] = (t.transpose(0, 1) for t in final)  # (B, L, H)
        else:
            state["hidden"] = final.transpose(0, 1)
        return state

    def _step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]):
        """One decoder step: the attentional hidden state h~_t (B, H), the new state, alpha_t (B, S)."""
        x = torch.cat([self.dropout(self.tgt_embedding(tokens)), state["feed"]], dim=-1).unsqueeze(1)  # (B, 1, E+H)
        hx = state["hidden"].transpose(0, 1).contiguous()  # (L, B, H)
        if "cell" in state:
            hx = (hx, state["cell"].transpose(0, 1).contiguous())
        out, hx = self.decoder(x, hx)
        s = out[:, 0]  # (B, H): s_t, the top layer
        alpha = masked_softmax(self.attention(s, state["keys"]), state["mask"])  # (B, S)
        context = torch.bmm(alpha.unsqueeze(1), state["memory"]).squeeze(1)  # (B, H): c_t
        h_tilde = torch.tanh(self.combine(torch.cat([context, s], dim=-1)))  # (B, H)
        new = dict(state, feed=h_tilde)
        if isinstance(hx, tuple):
            new["hidden"], new["cell"] = hx[0].transpose(0, 1), hx[1].transpose(0, 1)
        else:
            new["hidden"] = hx.transpose(0, 1)
        return h_tilde, new, alpha

    def decode_step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]):
        h_tilde, state, alpha = self._step(tokens, state)
        return self.generator(self.dropout(h_tilde)), state, alpha

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, tgt_vocab_size) for ``tgt_in`` (B, T), which starts with ``<bos>``."""
        state = self.init_state(self.encode(src, src_mask), src_mask)
        sampling = self.training and self.teacher_forcing < 1.0
        outputs, tokens = [], tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            if sampling and t > 0:  # feed the model's own previous prediction where the coin says so
                gold = torch.rand(tokens.shape, device=tokens.device) < self.teacher_forcing
                tokens = torch.where(gold, tgt_in[:, t], outputs[-1].argmax(-1))
            else:
                tokens = tgt_in[:, t]
            h_tilde, state, _ = self._step(tokens, state)
            outputs.append(self.generator(self.dropout(h_tilde)) if sampling else h_tilde)
        stacked = torch.stack(outputs, dim=1)  # (B, T, V) or (B, T, H)
        # Without sampling the output layer runs once over all steps.
        return stacked if sampling else self.generator(self.dropout(stacked))


@register_model
def seq2seq_lstm(**kwargs: Any) -> Seq2SeqRNN:
    """LSTM encoder-decoder with attention (Luong et al., 2015)."""
    return Seq2SeqRNN(cell="lstm", **kwargs)


@register_model
def seq2seq_gru(**kwargs: Any) -> Seq2SeqRNN:
    """GRU encoder-decoder with attention (Cho et al., 2014; Bahdanau et al., 2014)."""
    return Seq2SeqRNN(cell="gru", **kwargs)

