"""Vocabularies and the text data modules (src/zoo/data/vocab.py, src/zoo/data/text.py)."""

import datetime
import pickle

import pytest
import torch

from zoo.data import build_datamodule
from zoo.inference import restore_datamodule
from zoo.data.text import DATE_FORMATS, collate_pairs, human_date, read_tsv
from zoo.data.vocab import Vocab, tokenize
from zoo.errors import ConfigError, DataError


def test_vocab_specials_round_trip_and_plain_state():
    vocab = Vocab.build(["abba", "cab"], "char")
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert vocab.itos[4:] == ["a", "b", "c"]  # by frequency, ties alphabetically
    ids = vocab.encode("cabz", bos=True, eos=True)
    assert ids == [1, 6, 4, 5, 3, 2]  # z is unknown
    assert vocab.decode(ids + [0, 0]) == "cab<unk>"
    state = vocab.state()
    assert pickle.loads(pickle.dumps(state)) == state and {type(v) for v in state.values()} == {str, list}
    assert Vocab.from_state(state) == vocab

    words = Vocab.build(["Don't go.", "go home"], "word")
    assert tokenize("Don't go.", "word") == ["Don", "'", "t", "go", "."]
    assert words.decode(words.encode("go home .")) == "go home ."
    with pytest.raises(ConfigError, match="char, word"):
        Vocab.build(["x"], "byte")


def test_dates_are_reproducible_distinct_and_correct():
    dm = build_datamodule("dates", train_size=300, val_size=50, test_size=50, seed=3)
    dm.setup()
    again = build_datamodule("dates", train_size=300, val_size=50, test_size=50, seed=3)
    again.setup()
    assert dm.train_set.pairs == again.train_set.pairs and len(dm.test_set) == 50
    other = build_datamodule("dates", train_size=300, val_size=50, test_size=50, seed=4)
    other.setup()
    assert dm.train_set.pairs != other.train_set.pairs
    train_sources = {s for s, _ in dm.train_set.pairs}
    assert not train_sources & {s for s, _ in dm.test_set.pairs + dm.val_set.pairs}
    for _, iso in dm.train_set.pairs:
        assert datetime.date.fromisoformat(iso).year in range(1950, 2050)
    assert len({s.lower() for s, _ in dm.train_set.pairs}) > 250  # many different writings

    date = datetime.date(1971, 9, 12)
    written = {human_date(date, f) for f in DATE_FORMATS}
    assert {"12/09/71", "12 september 1971", "sunday, september 12 1971", "the 12th of september 71"} <= written
    assert human_date(datetime.date(2002, 6, 3), "{dth} of {month} {yyyy}") == "3rd of june 2002"


@pytest.mark.parametrize("task, transform", [("reverse", lambda s: s[::-1]), ("copy", lambda s: s), ("sort", sorted)])
def test_symbol_tasks(task, transform):
    dm = build_datamodule(task, num_symbols=5, min_len=2, max_len=4, train_size=100, val_size=10, test_size=10)
    dm.setup()
    for src, tgt in dm.train_set.pairs:
        assert 2 <= len(src) <= 4 and set(src) <= set("abcde")
        assert list(tgt) == list(transform(src))
    assert dm.model_facts() == {"src_vocab_size": 9, "tgt_vocab_size": 9, "pad_idx": 0, "bos_idx": 1, "eos_idx": 2}
    with pytest.raises(DataError, match="too few different"):
        build_datamodule(task, num_symbols=2, min_len=1, max_len=1, train_size=5, val_size=5, test_size=5).setup()


def test_collate_pads_and_frames_the_targets():
    batch = collate_pairs([(torch.tensor([5, 6, 2]), torch.tensor([7])), (torch.tensor([4, 2]), torch.tensor([8, 9]))])
    assert batch["src"].tolist() == [[5, 6, 2], [4, 2, 0]]
    assert batch["src_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["tgt_in"].tolist() == [[1, 7, 0], [1, 8, 9]]
    assert batch["tgt_out"].tolist() == [[7, 2, 0], [8, 9, 2]]


def _tsv(tmp_path, text: str, name="pairs.tsv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_parallel_tsv_reads_filters_and_splits(tmp_path):
    lines = [f"go {i} .\tva {i} !\tCC-BY 2.0 (France) Attribution" for i in range(40)]
    lines += ["a very long source sentence that has far too many words in it\tcourt", ""]
    path = _tsv(tmp_path, "\r\n".join(lines) + "\n")
    dm = build_datamodule("parallel_tsv", path=str(path), max_src_len=8, val_fraction=0.1, test_fraction=0.2)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (28, 4, 8)  # the long pair is left out
    assert all(s.startswith("go ") and t.startswith("va ") for s, t in dm.train_set.pairs)
    assert dm.tgt_vocab.level == "word" and "va" in dm.tgt_vocab.stoi
    same = build_datamodule("parallel_tsv", path=str(path), max_src_len=8, val_fraction=0.1, test_fraction=0.2)
    same.setup()
    assert same.test_set.pairs == dm.test_set.pairs  # the split is fixed by split_seed

    chars = build_datamodule("parallel_tsv", path=str(path), level="char", lowercase=True, max_pairs=10,
                             val_fraction=0.1, test_fraction=0.1)  # fmt: skip
    chars.setup()
    assert len(chars.train_set) + len(chars.val_set) + len(chars.test_set) == 10 and " " in chars.src_vocab.stoi


@pytest.mark.parametrize(
    "content, message",
    [
        ("go\tva\nno tab here\n", "line 2: expected 'source<TAB>target'"),
        ("go\tva\n\n\t\n", "line 3: expected 'source<TAB>target'"),
        (b"go\tva\nf\xe9e\tfairy\n", "line 2: not UTF-8"),
        ("\n\n", "holds no sentence pairs"),
    ],
)
def test_parallel_tsv_bad_files_name_the_path_and_line(tmp_path, content, message):
    path = _tsv(tmp_path, content)
    with pytest.raises(DataError, match=message) as err:
        build_datamodule("parallel_tsv", path=str(path)).setup()
    assert str(path) in str(err.value)


def test_parallel_tsv_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match=f"not found: {tmp_path / 'nope.tsv'}"):
        build_datamodule("parallel_tsv", path=str(tmp_path / "nope.tsv")).setup()


def test_the_vocabularies_travel_in_the_state(tmp_path):
    # (An image model on text pairs is refused by the seq2seq task: tests/tasks/test_seq2seq.py.)
    dm = build_datamodule("copy", num_symbols=4, train_size=50, val_size=5, test_size=5)
    dm.setup()
    path = _tsv(tmp_path, "".join(f"w{i}\tx{i}\n" for i in range(20)))
    tsv = build_datamodule("parallel_tsv", path=str(path))
    tsv.setup()
    ckpt = {"datamodule_hyper_parameters": dict(tsv.hparams), "ParallelTSVDataModule": tsv.state_dict()}
    path.unlink()  # the vocabularies come from the checkpoint alone
    restored = restore_datamodule(ckpt, path)
    assert (restored.src_vocab, restored.tgt_vocab) == (tsv.src_vocab, tsv.tgt_vocab)

    changed = build_datamodule("copy", num_symbols=5, train_size=50, val_size=5, test_size=5)
    changed.setup()
    with pytest.raises(DataError, match="other vocabularies than the checkpoint's"):
        changed.load_state_dict(dm.state_dict())


def test_parallel_tsv_reads_cr_lf_crlf_and_mixed_line_ends(tmp_path):
    mixed = _tsv(tmp_path, b"a\tA\rb\tB\r\nc\tC\nd\tD\r\r\ne\tE\x0bstill e\n\rf\tF")  # \x0b is no line end
    assert read_tsv(mixed) == [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D"), ("e", "E\x0bstill e"), ("f", "F")]
    old_mac = _tsv(tmp_path, "".join(f"w{i}\tx{i}\r" for i in range(20)), "mac.tsv")
    assert read_tsv(old_mac) == [(f"w{i}", f"x{i}") for i in range(20)]
    with pytest.raises(DataError, match="line 3: expected 'source<TAB>target', got 'no tab'"):
        read_tsv(_tsv(tmp_path, "a\tA\rb\tB\r\nno tab\n", "bad.tsv"))  # lines counted at every kind of end


@pytest.mark.parametrize("options, message", [
    ({"test_fraction": 0}, "data.test_fraction=0 leaves the test split empty: the 40 pairs of {path} would split "
                           "into train 38, val 2, test 0"),
    ({"val_fraction": 0}, "data.val_fraction=0 leaves the val split empty"),
    ({"val_fraction": 0.01}, "data.val_fraction=0.01 leaves the val split empty"),  # 0.4 pairs: none
    ({"val_fraction": 0.5, "test_fraction": 0.49},
     "data.val_fraction=0.5 + data.test_fraction=0.49 leaves the train split empty"),  # 20 + 20 of 40
])  # fmt: skip
def test_parallel_tsv_fractions_that_leave_a_split_empty_are_refused_before_training(tmp_path, options, message):
    path = _tsv(tmp_path, "".join(f"w{i}\tx{i}\n" for i in range(40)))
    dm = build_datamodule("parallel_tsv", path=str(path), **options)
    with pytest.raises(ConfigError) as err:
        dm.setup("fit")
    assert message.format(path=path) in str(err.value)


def test_generated_splits_of_size_zero_are_refused():
    with pytest.raises(ConfigError, match="data.test_size=0 leaves the test split empty: the examples drawn would "
                                          "split into train 50, val 5, test 0"):  # fmt: skip
        build_datamodule("copy", train_size=50, val_size=5, test_size=0).setup("fit")
