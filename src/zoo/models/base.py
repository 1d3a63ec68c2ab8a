"""The contract every image model in the zoo keeps.

Tasks, fine-tuning, benchmarks and tests rely only on this interface, never on a
family's internals:

- ``num_classes``, ``in_channels`` and ``num_features`` (width of the pooled features);
- ``forward(x) -> logits`` = ``forward_head(forward_features(x))``;
- ``reset_classifier(num_classes)`` swaps the head for a freshly initialised one;
- ``stages()`` -> ordered ``(name, module)`` groups from stem to head, for freezing;
- ``default_image_size`` (the canonical input) and the input-size rule the family has:
  ``fixed_image_size`` when the architecture only takes one size, otherwise
  ``min_image_size``. Inputs are checked and a wrong shape raises ``ValueError``.
"""

from __future__ import annotations

import torch
from torch import nn


class ImageModel(nn.Module):
    """Base class for image classifiers; subclasses fill in the abstract parts."""

    num_classes: int
    in_channels: int
    num_features: int
    default_image_size: int = 224
    fixed_image_size: int | None = None
    min_image_size: int = 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features)."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from pooled features."""
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classification head with a new one for ``num_classes``."""
        raise NotImplementedError

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Ordered groups of modules from input to output: stem, stage 1..N, head."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """A batch of the canonical input size, for counting MACs and benchmarks."""
        s = self.default_image_size
        device = next(self.parameters()).device
        return (torch.zeros(batch_size, self.in_channels, s, s, device=device),)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the expected shape when ``x`` cannot be taken."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if self.fixed_image_size is not None:
            s = self.fixed_image_size
            if (h, w) != (s, s):
                raise ValueError(
                    f"{type(self).__name__} expects {s}x{s} images "
                    f"(input shape (B, {self.in_channels}, {s}, {s})), got {h}x{w}"
                )
        elif min(h, w) < self.min_image_size:
            s = self.min_image_size
            raise ValueError(
                f"{type(self).__name__} expects images of at least {s}x{s} "
                f"(input shape (B, {self.in_channels}, >={s}, >={s})), got {h}x{w}"
            )


class Seq2SeqModel(nn.Module):
    """Base class for sequence-to-sequence models (RNN encoder-decoders, the Transformer).

    Token ids are ``LongTensor``s, batch first; ``src_mask`` is a ``BoolTensor`` that is
    ``True`` at real tokens and ``False`` at padding. Targets are fed with a leading
    ``bos_idx`` (``tgt_in``) and predicted with a trailing ``eos_idx``.

    Subclasses implement:

    - ``forward(src, src_mask, tgt_in) -> logits (B, T, tgt_vocab_size)``: the
      teacher-forced pass used in training;
    - ``encode(src, src_mask) -> memory`` and ``init_state(memory, src_mask) -> state``;
    - ``decode_step(tokens (B,), state) -> (logits (B, V), state, attention (B, S) | None)``:
      one decoding step, used by :meth:`generate` (greedy and beam search).

    ``state`` may be any nesting of tuples/lists/dicts of tensors whose first dimension
    is the batch: :meth:`reorder_state` selects along it for beam search.
    :meth:`generate` decodes with these (greedy or beam search, :mod:`zoo.layers.decoding`).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    pad_idx: int
    bos_idx: int
    eos_idx: int

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor):
        raise NotImplementedError

    def init_state(self, memory, src_mask: torch.Tensor):
        raise NotImplementedError

    def decode_step(self, tokens: torch.Tensor, state):
        raise NotImplementedError

    def reorder_state(self, state, index: torch.Tensor):
        """``state`` with every tensor indexed by ``index`` along the batch dimension."""
        from torch.utils._pytree import tree_map

        return tree_map(lambda t: t.index_select(0, index) if isinstance(t, torch.Tensor) else t, state)

    @torch.no_grad()
    def generate(
        self, src: torch.Tensor, src_mask: torch.Tensor, max_len: int = 100, beam_size: int = 1,
        length_penalty: float = 1.0,
    ):  # fmt: skip
        """Decode ``src``: greedy when ``beam_size`` is 1, else beam search.

        Returns a :class:`zoo.layers.decoding.Generated`: ``tokens`` (B, L) ending in
        ``eos_idx`` then ``pad_idx``, ``attention`` (B, L, S) or ``None`` and ``scores`` (B,)
        (log-probabilities). Call ``eval()`` first to switch dropout off.
        """
        from zoo.layers.decoding import beam_search, greedy_search

        if beam_size == 1:
            return greedy_search(self, src, src_mask, max_len)
        return beam_search(self, src, src_mask, max_len, beam_size, length_penalty)

    def example_inputs(self, batch_size: int = 1, src_len: int = 16, tgt_len: int = 16) -> tuple[torch.Tensor, ...]:
        """``(src, src_mask, tgt_in)`` of the given lengths, for counting MACs and benchmarks."""
        device = next(self.parameters()).device
        src = torch.full((batch_size, src_len), self.eos_idx, dtype=torch.long, device=device)
        tgt = torch.full((batch_size, tgt_len), self.bos_idx, dtype=torch.long, device=device)
        return src, torch.ones_like(src, dtype=torch.bool), tgt
