"""Greedy and beam-search decoding for any :class:`zoo.models.base.Seq2SeqModel`.

Both drive a model only through ``encode``, ``init_state``, ``decode_step`` and
``reorder_state``, so they serve the recurrent models and the Transformer alike.

Beam search (as in Sutskever et al., 2014, and Wu et al., 2016, arXiv:1609.08144) keeps
the ``beam_size`` best partial hypotheses of each source by the sum of their token
log-probabilities; a hypothesis that has emitted ``<eos>`` keeps its score and is
extended with ``<pad>`` at no cost, so it competes with the growing ones until the end.
All sources and beams run as one batch of ``B * beam_size`` rows. When every hypothesis
has ended (or after ``max_len`` steps) the best of each source is picked by
``log p(y | x) / len(y) ** length_penalty`` (``len`` counts ``<eos>``; 0: plain log-prob,
1: per-token average), which counters the preference of raw log-probabilities for short
outputs. With ``nbest`` > 1 the ``nbest`` best of these ``beam_size`` final hypotheses are
returned, sorted by that same score (an n-best list, as Marian and fairseq print them).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from zoo.errors import ConfigError


class Generated(NamedTuple):
    """Decoded sequences: ``tokens`` (B, L) ending with ``<eos>`` then ``<pad>`` (or cut at
    ``max_len``), ``attention`` (B, L, S) where the model gives it (zeros after ``<eos>``),
    else ``None``, ``scores`` (B,): the log-probability of each returned sequence, and
    ``normalized_scores`` (B,): ``scores / len ** length_penalty``, what beam search ranks
    by (``None`` from greedy search, which ranks nothing).

    Beam search with ``nbest`` > 1 returns the ``nbest`` best hypotheses of each source,
    best first, along a dimension after the batch: ``tokens`` (B, nbest, L), ``attention``
    (B, nbest, L, S), ``scores`` and ``normalized_scores`` (B, nbest). ``nbest=1`` keeps
    the shapes above.
    """

    tokens: torch.Tensor
    attention: torch.Tensor | None
    scores: torch.Tensor
    normalized_scores: torch.Tensor | None = None


def check_nbest(nbest: int, beam_size: int) -> None:
    """``nbest`` must be an integer from 1 to ``beam_size`` (the search keeps no more)."""
    if isinstance(nbest, bool) or not isinstance(nbest, int) or nbest < 1:
        raise ConfigError(f"nbest must be a positive integer, got {nbest!r}")
    if nbest > beam_size:
        raise ConfigError(f"nbest={nbest} needs beam_size >= {nbest}, got beam_size={beam_size}")


def _check(max_len: int, beam_size: int = 1, nbest: int = 1) -> None:
    if max_len < 1:
        raise ConfigError(f"max_len must be at least 1, got {max_len}")
    if beam_size < 1:
        raise ConfigError(f"beam_size must be at least 1, got {beam_size}")
    check_nbest(nbest, beam_size)


def greedy_search(model, src: torch.Tensor, src_mask: torch.Tensor, max_len: int) -> Generated:
    """The most probable next token at every step, until ``<eos>`` or ``max_len`` tokens."""
    with torch.no_grad():  # a block, not @torch.no_grad(): mutmut skips decorated functions
        _check(max_len)
        state = model.init_state(model.encode(src, src_mask), src_mask)
        batch = src.shape[0]
        tokens = torch.full((batch,), model.bos_idx, dtype=torch.long, device=src.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
        scores = torch.zeros(batch, device=src.device)
        out_tokens, out_attention = [], []
        for _ in range(max_len):
            logits, state, attention = model.decode_step(tokens, state)
            logp, tokens = torch.log_softmax(logits.float(), dim=-1).max(dim=-1)  # (B,), (B,)
            tokens = tokens.masked_fill(finished, model.pad_idx)
            scores += logp.masked_fill(finished, 0.0)
            out_tokens.append(tokens)
            if attention is not None:
                out_attention.append(attention.float().masked_fill(finished.unsqueeze(-1), 0.0))
            finished |= tokens == model.eos_idx
            if bool(finished.all()):
                break
        attention = torch.stack(out_attention, dim=1) if out_attention else None  # (B, L, S)
        return Generated(torch.stack(out_tokens, dim=1), attention, scores)


def beam_search(
    model, src: torch.Tensor, src_mask: torch.Tensor, max_len: int, beam_size: int = 4, length_penalty: float = 1.0,
    nbest: int = 1,
) -> Generated:
    """The best of ``beam_size`` hypotheses per source, or the ``nbest`` best, best first
    (see the module docstring and :class:`Generated` for the shapes)."""
    with torch.no_grad():  # a block, not @torch.no_grad(): mutmut skips decorated functions
        _check(max_len, beam_size, nbest)
        batch, k, device = src.shape[0], beam_size, src.device
        state = model.init_state(model.encode(src, src_mask), src_mask)
        state = model.reorder_state(state, torch.arange(batch, device=device).repeat_interleave(k))  # B*K rows
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start equal: let only the first one expand at step 1
        finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
        lengths = torch.zeros(batch, k, device=device)
        history = torch.empty(batch, k, 0, dtype=torch.long, device=device)
        attn_history: torch.Tensor | None = None
        tokens = torch.full((batch * k,), model.bos_idx, dtype=torch.long, device=device)
        rows = torch.arange(batch, device=device).unsqueeze(1) * k  # (B, 1)
        for _ in range(max_len):
            logits, state, attention = model.decode_step(tokens, state)
            logp = torch.log_softmax(logits.float(), dim=-1).view(batch, k, -1)  # (B, K, V)
            vocab = logp.shape[-1]
            ended = torch.full((vocab,), float("-inf"), device=device)
            ended[model.pad_idx] = 0.0  # an ended hypothesis continues with <pad>, score unchanged
            logp = torch.where(finished.unsqueeze(-1), ended, logp)
            scores, flat = (scores.unsqueeze(-1) + logp).view(batch, k * vocab).topk(k, dim=-1)  # (B, K)
            parent, token = flat // vocab, flat % vocab

            was_finished = finished.gather(1, parent)
            kept = history.gather(1, parent.unsqueeze(-1).expand_as(history))  # each beam's parent's tokens
            history = torch.cat([kept, token.unsqueeze(-1)], dim=-1)
            if attention is not None:
                step_attn = attention.float().view(batch, k, -1)  # (B, K, S), rows of the parent beams
                step_attn = step_attn.gather(1, parent.unsqueeze(-1).expand_as(step_attn))
                step_attn = step_attn.masked_fill(was_finished.unsqueeze(-1), 0.0).unsqueeze(2)  # (B, K, 1, S)
                attn_history = step_attn if attn_history is None else torch.cat(
                    [attn_history.gather(1, parent[..., None, None].expand_as(attn_history)), step_attn], dim=2
                )  # fmt: skip
            lengths = lengths.gather(1, parent) + (~was_finished).float()
            finished = was_finished | (token == model.eos_idx)
            state = model.reorder_state(state, (rows + parent).view(-1))
            tokens = token.view(-1)
            if bool(finished.all()):
                break
        normalized = scores / lengths.clamp(min=1.0) ** length_penalty  # (B, K)
        # Stable: of equal scores the lower beam comes first, the one argmax would pick.
        best = normalized.sort(dim=-1, descending=True, stable=True).indices[:, :nbest]  # (B, n)
        pick = torch.arange(batch, device=device).unsqueeze(1)  # (B, 1)
        attention = attn_history[pick, best] if attn_history is not None else None  # (B, n, L, S)
        out = Generated(history[pick, best], attention, scores[pick, best], normalized[pick, best])
        if nbest == 1:  # the shapes of a single answer: (B, L), (B, L, S), (B,)
            out = Generated(*(t.squeeze(1) if t is not None else None for t in out))
        return out
