"""Text pairs for the ``seq2seq`` task: generated tasks and any ``source<TAB>target`` file.

- ``dates``: human-written dates to ISO ``YYYY-MM-DD`` ("3 May 1998", "tuesday, june 6
  2002", "12/09/71", "1998/05/03", "the 3rd of may 98", ...), a classic small
  translation task (used, e.g., in Bahdanau-style attention tutorials). Dates are drawn
  uniformly from 1950-01-01..2049-12-31; numeric forms are day first (dd/mm/yy, as in
  most of Europe), and two-digit years mean 1950-2049 (``yy >= 50`` -> 19yy), so every
  source has exactly one answer.
- ``reverse``, ``copy``, ``sort``: random strings of ``num_symbols`` symbols
  (a-z, 0-9, A-Z) and lengths ``min_len..max_len``, mapped to their reversal, themselves
  or their sorted characters (the toy tasks of Sutskever et al., 2014, and Graves et al.,
  2014).
- ``parallel_tsv``: a UTF-8 file of ``source<TAB>target`` lines (further columns are
  ignored, so Tatoeba/manythings.org exports load as they are), filtered by token
  length and split with a seed. Lines may end in LF, CR LF or a lone CR (old Mac
  files), mixed in one file; no other character ends a line.

Generated splits are drawn from ``seed`` and have fixed sizes; a validation or test
source never occurs in the training split. A size or fraction that would leave a split
empty is refused before training, naming the setting and the split sizes. Every module
is character level except ``parallel_tsv`` (``level: word`` by default). The
vocabularies (see :mod:`zoo.data.vocab`) are built from the training split and travel in
checkpoints through :meth:`TextDataModule.state_dict`, so a checkpoint alone can
translate; so does the longest training source in tokens (``longest_source``), from
which translation derives its default input limit.

A batch is a dict: ``src`` (B, S) with ``<eos>`` appended, ``src_mask`` (B, S) true at
real tokens, ``tgt_in`` (B, T) = ``<bos> y``, ``tgt_out`` (B, T) = ``y <eos>``; padding is
``<pad>`` = 0.
"""

from __future__ import annotations

import datetime
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from zoo.data.base import DATASETS, DataModule, TensorBatches, check_split_sizes
from zoo.data.inputs import TextInputs
from zoo.data.vocab import BOS_IDX, EOS_IDX, PAD_IDX, Vocab, tokenize
from zoo.errors import ConfigError, DataError

Pairs = list[tuple[str, str]]


class TextPairs(TensorBatches):
    """Encoded (source, target) pairs held as padded tensors, served a batch at a time.

    Source ids end with ``<eos>``; the decoder's input is ``<bos>`` + target and its
    output target + ``<eos>``. Each batch is cut to its own longest sequence, so it equals
    :func:`collate_pairs` of the same examples (tested) without a Python step per example.
    """

    def __init__(self, pairs: Pairs, src_vocab: Vocab, tgt_vocab: Vocab):
        self.pairs = pairs
        sources = [torch.tensor(src_vocab.encode(s, eos=True)) for s, _ in pairs]
        targets = [torch.tensor(tgt_vocab.encode(t)) for _, t in pairs]
        bos, eos = torch.tensor([BOS_IDX]), torch.tensor([EOS_IDX])
        super().__init__(
            _padded(sources), torch.tensor([len(s) for s in sources]),
            _padded([torch.cat([bos, t]) for t in targets]), _padded([torch.cat([t, eos]) for t in targets]),
            torch.tensor([len(t) + 1 for t in targets]),
        )  # fmt: skip

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        src, src_len, tgt_in, tgt_out, tgt_len = (t[index] for t in self.tensors)
        s, t = int(src_len.max()), int(tgt_len.max())
        src = src[:, :s]  # (B, S)
        return {"src": src, "src_mask": src != PAD_IDX, "tgt_in": tgt_in[:, :t], "tgt_out": tgt_out[:, :t]}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Example ``i`` as (source ids with ``<eos>``, bare target ids)."""
        src, src_len, _, tgt_out, tgt_len = (t[i] for t in self.tensors)
        return src[:src_len], tgt_out[: tgt_len - 1]


def _padded(sequences: list[torch.Tensor]) -> torch.Tensor:
    if not sequences:
        return torch.zeros(0, 1, dtype=torch.long)
    return pad_sequence(sequences, batch_first=True, padding_value=PAD_IDX)


def collate_pairs(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad a list of (source, target) id tensors into the batch dict the task reads."""
    src = pad_sequence([s for s, _ in batch], batch_first=True, padding_value=PAD_IDX)  # (B, S)
    bos, eos = torch.tensor([BOS_IDX]), torch.tensor([EOS_IDX])
    tgt_in = pad_sequence([torch.cat([bos, t]) for _, t in batch], batch_first=True, padding_value=PAD_IDX)
    tgt_out = pad_sequence([torch.cat([t, eos]) for _, t in batch], batch_first=True, padding_value=PAD_IDX)
    return {"src": src, "src_mask": src != PAD_IDX, "tgt_in": tgt_in, "tgt_out": tgt_out}


class TextDataModule(DataModule):
    """Source/target text pairs for the ``seq2seq`` task; subclasses implement :meth:`make_splits`."""

    task = "seq2seq"

    def __init__(self, batch_size: int = 64, level: str = "char", num_workers: int = 0, drop_last: bool = False):
        super().__init__(batch_size=batch_size, num_workers=num_workers, drop_last=drop_last)
        tokenize("", level)  # validates the level
        self.level = level
        self.src_vocab: Vocab | None = None
        self.tgt_vocab: Vocab | None = None
        self.longest_source: int | None = None  # tokens with <eos>; None in checkpoints older than the record

    def make_splits(self) -> dict[str, Pairs]:
        """``{"train": pairs, "val": pairs, "test": pairs}`` of (source, target) strings."""
        raise NotImplementedError

    def build_vocabs(self, train: Pairs) -> tuple[Vocab, Vocab]:
        return Vocab.build((s for s, _ in train), self.level), Vocab.build((t for _, t in train), self.level)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        splits = self.make_splits()
        if not splits["train"]:
            raise DataError(f"{type(self).__name__}: the training split is empty")
        if self.src_vocab is None or self.tgt_vocab is None:  # else restored from a checkpoint
            self.src_vocab, self.tgt_vocab = self.build_vocabs(splits["train"])
        self.train_set, self.val_set, self.test_set = (
            TextPairs(splits[k], self.src_vocab, self.tgt_vocab) for k in ("train", "val", "test")
        )
        self.longest_source = int(self.train_set.tensors[1].max())  # source lengths, <eos> included

    def model_facts(self) -> dict[str, Any]:
        if self.src_vocab is None or self.tgt_vocab is None:
            self.setup()
        return {
            "src_vocab_size": len(self.src_vocab), "tgt_vocab_size": len(self.tgt_vocab),
            "pad_idx": PAD_IDX, "bos_idx": BOS_IDX, "eos_idx": EOS_IDX,
        }  # fmt: skip

    def collate_fn(self, batch: list) -> dict[str, torch.Tensor]:
        return collate_pairs(batch)

    def inputs(self) -> TextInputs | None:
        if self.src_vocab is None or self.tgt_vocab is None:
            return None
        return TextInputs(self.src_vocab, self.tgt_vocab, self.longest_source)

    # The vocabularies and the longest training source are the data module's state:
    # Lightning writes it into every checkpoint (under the class name) and restores it
    # when training resumes.
    def state_dict(self) -> dict[str, Any]:
        if self.src_vocab is None or self.tgt_vocab is None:
            return {}
        state = {"src_vocab": self.src_vocab.state(), "tgt_vocab": self.tgt_vocab.state()}
        if self.longest_source is not None:
            state["longest_source"] = self.longest_source
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        src, tgt = Vocab.from_state(state["src_vocab"]), Vocab.from_state(state["tgt_vocab"])
        if self.train_set is not None and (src, tgt) != (self.src_vocab, self.tgt_vocab):
            raise DataError(
                f"{type(self).__name__}: the data gives other vocabularies than the checkpoint's; "
                f"the data (or its settings) changed since the checkpoint was written"
            )
        self.src_vocab, self.tgt_vocab = src, tgt
        if self.train_set is None:  # else measured on the data itself in setup()
            self.longest_source = state.get("longest_source")


def distinct_splits(
    sample: Callable[[random.Random], tuple[str, str]], sizes: dict[str, int], seed: int
) -> dict[str, Pairs]:
    """Draw ``sizes`` pairs per split from ``sample``; no val/test source occurs in an earlier split."""
    rng = random.Random(seed)
    check_split_sizes(sizes, {name: f"data.{name}_size={size}" for name, size in sizes.items()}, "the examples drawn")
    seen: set[str] = set()
    splits: dict[str, Pairs] = {}
    budget = 50 * sum(sizes.values()) + 1000
    for name, size in sizes.items():
        pairs: Pairs = []
        while len(pairs) < size:
            budget -= 1
            if budget < 0:
                raise DataError(
                    f"could not draw {size} distinct {name} examples: the task has too few different "
                    f"sequences for the split sizes (lower the sizes or allow longer sequences)"
                )
            src, tgt = sample(rng)
            if name != "train" and src in seen:
                continue
            pairs.append((src, tgt))
        seen.update(s for s, _ in pairs)
        splits[name] = pairs
    return splits


# ---------------------------------------------------------------- dates

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]  # fmt: skip
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
FIRST_DAY, DAYS = datetime.date(1950, 1, 1), (datetime.date(2049, 12, 31) - datetime.date(1950, 1, 1)).days + 1

# Fields: d 3, dd 03, dth 3rd, m 5, mm 05, month may, mon may (3 letters), yyyy 1998,
# yy 98, weekday tuesday, wkd tue. Case is applied to the whole string afterwards.
DATE_FORMATS = (
    "{d} {month} {yyyy}", "{dd} {mon} {yyyy}", "{month} {d}, {yyyy}", "{month} {d} {yyyy}",
    "{weekday}, {month} {d} {yyyy}", "{wkd} {d} {mon} {yyyy}", "{weekday} {d} {month} {yyyy}",
    "{dth} of {month} {yyyy}", "the {dth} of {month} {yy}", "{month} {dth}, {yyyy}", "{d} {mon} {yy}",
    "{mon} {d} '{yy}", "{dd}-{mon}-{yyyy}", "{dd}/{mm}/{yy}", "{d}/{m}/{yyyy}", "{dd}.{mm}.{yyyy}",
    "{d}.{m}.{yy}", "{yyyy}-{mm}-{dd}", "{yyyy}/{mm}/{dd}", "{yyyy}{mm}{dd}", "{mon}. {d}, {yyyy}",
)  # fmt: skip


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def human_date(date: datetime.date, fmt: str) -> str:
    """``date`` written in the format ``fmt`` of :data:`DATE_FORMATS` (lower case)."""
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    return fmt.format(
        d=date.day, dd=f"{date.day:02d}", dth=_ordinal(date.day), m=date.month, mm=f"{date.month:02d}",
        month=month, mon=month[:3], yyyy=date.year, yy=f"{date.year % 100:02d}", weekday=weekday, wkd=weekday[:3],
    )  # fmt: skip


def sample_date(rng: random.Random) -> tuple[str, str]:
    """One (human-written, ISO) pair: a random day, format and letter case."""
    date = FIRST_DAY + datetime.timedelta(days=rng.randrange(DAYS))
    text = human_date(date, rng.choice(DATE_FORMATS))
    case = rng.random()
    text = text.upper() if case < 0.15 else text.title() if case < 0.6 else text
    return text, date.isoformat()


class DatesDataModule(TextDataModule):
    """Human-written dates -> ISO dates, generated from ``seed``."""

    def __init__(self, batch_size: int = 64, train_size: int = 20000, val_size: int = 1000, test_size: int = 2000,
                 seed: int = 0, num_workers: int = 0, drop_last: bool = False):  # fmt: skip
        super().__init__(batch_size=batch_size, level="char", num_workers=num_workers, drop_last=drop_last)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed

    def make_splits(self) -> dict[str, Pairs]:
        return distinct_splits(sample_date, self.sizes, self.seed)


# ---------------------------------------------------------------- symbol tasks

SYMBOLS = string.ascii_lowercase + string.digits + string.ascii_uppercase
TRANSFORMS: dict[str, Callable[[str], str]] = {
    "reverse": lambda s: s[::-1],
    "copy": lambda s: s,
    "sort": lambda s: "".join(sorted(s, key=SYMBOLS.index)),
}


class SymbolsDataModule(TextDataModule):
    """Random symbol strings and their ``transform`` (reverse, copy or sort)."""

    def __init__(self, transform: str, batch_size: int = 64, num_symbols: int = 10, min_len: int = 3,
                 max_len: int = 12, train_size: int = 10000, val_size: int = 500, test_size: int = 1000,
                 seed: int = 0, num_workers: int = 0, drop_last: bool = False):  # fmt: skip
        super().__init__(batch_size=batch_size, level="char", num_workers=num_workers, drop_last=drop_last)
        if not 1 <= num_symbols <= len(SYMBOLS):
            raise ConfigError(f"num_symbols must be in 1..{len(SYMBOLS)}, got {num_symbols}")
        if not 1 <= min_len <= max_len:
            raise ConfigError(f"lengths must satisfy 1 <= min_len <= max_len, got {min_len}, {max_len}")
        self.transform = TRANSFORMS[transform]
        self.symbols, self.min_len, self.max_len = SYMBOLS[:num_symbols], min_len, max_len
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed

    def sample(self, rng: random.Random) -> tuple[str, str]:
        text = "".join(rng.choices(self.symbols, k=rng.randint(self.min_len, self.max_len)))
        return text, self.transform(text)

    def make_splits(self) -> dict[str, Pairs]:
        return distinct_splits(self.sample, self.sizes, self.seed)

    def build_vocabs(self, train: Pairs) -> tuple[Vocab, Vocab]:
        vocab = Vocab(list(self.symbols), "char")  # every symbol, even one the sample missed
        return vocab, vocab


def _register_symbols(name: str) -> None:
    @DATASETS.register(name)
    def build(**kwargs: Any) -> SymbolsDataModule:
        return SymbolsDataModule(transform=name, **kwargs)


for _name in TRANSFORMS:
    _register_symbols(_name)


@DATASETS.register("dates")
def dates(**kwargs: Any) -> DatesDataModule:
    return DatesDataModule(**kwargs)


# ---------------------------------------------------------------- parallel text files


def read_tsv(path: Path) -> Pairs:
    """The (source, target) pairs of a ``source<TAB>target`` file; blank lines are skipped.

    LF, CR LF and a lone CR all end a line (as Python's universal newlines read them);
    nothing else does (``str.splitlines`` would also split at form feeds, vertical tabs
    and Unicode line separators inside a sentence).
    """
    if not path.is_file():
        raise DataError(f"parallel text file not found: {path.resolve()}")
    pairs: Pairs = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):  # bytes: only \r, \n, \r\n
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path.resolve()}, line {number}: not UTF-8 text") from None
        if not line.strip() and "\t" not in line:  # a blank line
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(
                f"{path.resolve()}, line {number}: expected 'source<TAB>target', got {line[:80]!r}"
            )
        pairs.append((fields[0].strip(), fields[1].strip()))
    if not pairs:
        raise DataError(f"{path.resolve()} holds no sentence pairs")
    return pairs


class ParallelTSVDataModule(TextDataModule):
    """Sentence pairs from a ``source<TAB>target`` file, e.g. a Tatoeba export."""

    def __init__(self, path: str | None = None, batch_size: int = 64, level: str = "word", lowercase: bool = False,
                 max_src_len: int | None = 50, max_tgt_len: int | None = 50, max_pairs: int | None = None,
                 val_fraction: float = 0.05, test_fraction: float = 0.05, split_seed: int = 0,
                 min_freq: int = 1, max_vocab: int | None = None, num_workers: int = 0,
                 drop_last: bool = False):  # fmt: skip
        super().__init__(batch_size=batch_size, level=level, num_workers=num_workers, drop_last=drop_last)
        if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
            raise ConfigError(f"val_fraction + test_fraction must be in [0, 1), got {val_fraction} + {test_fraction}")
        if not path:
            raise ConfigError("parallel_tsv needs data.path=<file of source<TAB>target lines>")
        self.path = Path(path)
        self.lowercase, self.max_src_len, self.max_tgt_len, self.max_pairs = lowercase, max_src_len, max_tgt_len, max_pairs
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.min_freq, self.max_vocab = min_freq, max_vocab

    def _fits(self, src: str, tgt: str) -> bool:
        return (self.max_src_len is None or len(tokenize(src, self.level)) <= self.max_src_len) and (
            self.max_tgt_len is None or len(tokenize(tgt, self.level)) <= self.max_tgt_len
        )

    def make_splits(self) -> dict[str, Pairs]:
        pairs = read_tsv(self.path)
        if self.lowercase:
            pairs = [(s.lower(), t.lower()) for s, t in pairs]
        pairs = [p for p in pairs if self._fits(*p)]
        if not pairs:
            raise DataError(f"{self.path.resolve()}: no pair is within max_src_len/max_tgt_len")
        random.Random(self.split_seed).shuffle(pairs)
        pairs = pairs[: self.max_pairs] if self.max_pairs else pairs
        n_test, n_val = round(len(pairs) * self.test_fraction), round(len(pairs) * self.val_fraction)
        check_split_sizes(
            {"train": len(pairs) - n_test - n_val, "val": n_val, "test": n_test},
            {"train": f"data.val_fraction={self.val_fraction} + data.test_fraction={self.test_fraction}",
             "val": f"data.val_fraction={self.val_fraction}", "test": f"data.test_fraction={self.test_fraction}"},
            f"the {len(pairs):,} pairs of {self.path.resolve()}",
        )  # fmt: skip
        return {"test": pairs[:n_test], "val": pairs[n_test : n_test + n_val], "train": pairs[n_test + n_val :]}

    def build_vocabs(self, train: Pairs) -> tuple[Vocab, Vocab]:
        return (
            Vocab.build((s for s, _ in train), self.level, self.min_freq, self.max_vocab),
            Vocab.build((t for _, t in train), self.level, self.min_freq, self.max_vocab),
        )


@DATASETS.register("parallel_tsv")
def parallel_tsv(**kwargs: Any) -> ParallelTSVDataModule:
    return ParallelTSVDataModule(**kwargs)
