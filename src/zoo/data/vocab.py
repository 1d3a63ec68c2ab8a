"""Character- and word-level vocabularies: text <-> token ids, saved as plain containers.

The special tokens come first and have fixed ids, shared by every vocabulary, so a
model's ``pad_idx``/``bos_idx``/``eos_idx`` do not depend on the data:
``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3. The other tokens follow by
decreasing frequency in the texts the vocabulary was built from (ties alphabetically),
so the same texts always give the same ids.

Character level splits a text into its characters (spaces included); word level splits
it into runs of word characters and single punctuation marks (``"Don't go."`` ->
``Don ' t go .``) and joins tokens with spaces when decoding.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from zoo.errors import ConfigError, DataError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_IDX, BOS_IDX, EOS_IDX, UNK_IDX = range(4)
LEVELS = ("char", "word")
_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, level: str) -> list[str]:
    """The tokens of ``text`` at ``level`` (``char`` or ``word``)."""
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD.findall(text)
    raise ConfigError(f"vocabulary level must be one of {', '.join(LEVELS)}, got {level!r}")


class Vocab:
    """A token <-> id table with the special tokens at ids 0-3."""

    def __init__(self, tokens: Sequence[str], level: str = "char"):
        tokenize("", level)  # validates the level
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            tokens = [*SPECIALS, *(t for t in tokens if t not in SPECIALS)]
        if len(set(tokens)) != len(tokens):
            raise DataError("a vocabulary cannot hold the same token twice")
        self.level = level
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], level: str = "char", min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """The vocabulary of ``texts``: tokens seen ``min_freq`` times, at most ``max_size`` of them."""
        counts = Counter(t for text in texts for t in tokenize(text, level))
        ranked = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size] if max_size else ranked, level)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and (self.level, self.itos) == (other.level, other.itos)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text`` (unknown tokens -> ``<unk>``), optionally framed by bos/eos."""
        ids = [self.stoi.get(t, UNK_IDX) for t in tokenize(text, self.level)]
        return [BOS_IDX] * bos + ids + [EOS_IDX] * eos

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The tokens of ``ids`` up to the first ``<eos>``, without ``<pad>``/``<bos>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_IDX:
                break
            if i not in (PAD_IDX, BOS_IDX):
                out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (see :meth:`tokens`); words are joined with spaces."""
        return ("" if self.level == "char" else " ").join(self.tokens(ids))

    def state(self) -> dict[str, Any]:
        """Plain containers only (what a ``weights_only`` checkpoint may hold)."""
        return {"level": self.level, "tokens": list(self.itos)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Vocab:
        return cls(state["tokens"], state["level"])
