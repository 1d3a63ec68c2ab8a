"""zoo-eval's test loop without Lightning gives what Lightning's ``trainer.test`` gives for the same module and data."""

import types

import lightning as L
import pytest
import torch

from zoo.data import build_datamodule
from zoo.data.lightning import for_lightning
from zoo.errors import ConfigError
from zoo.tasks import ImageClassifier
from zoo.tasks.seq2seq import Seq2SeqModule
from zoo.tasks.evaluation import (
    Decoding, batches_to_test, bleu_text, classification_metrics, evaluate_network, seq2seq_metrics, seq2seq_update,
    token_strings,
)  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    """The digits test split in uneven batches (360 images by 64: the last batch holds 40)."""
    torch.manual_seed(0)
    data = build_datamodule("digits", batch_size=64, image_size=8)
    data.setup("test")
    return data


def lightning_test(module, data, precision: str, limit) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", precision=precision, limit_test_batches=limit, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    return trainer.test(module, datamodule=for_lightning(data), verbose=False)[0]


@pytest.mark.parametrize(("precision", "limit"), [("32-true", None), ("bf16-mixed", None), ("32-true", 2), ("64-true", 0.5)])
def test_the_plain_loop_gives_lightnings_test_metrics(digits, precision, limit, one_thread):
    torch.manual_seed(1)
    model = {"name": "mlp", "num_classes": 10, "in_channels": 1, "image_size": 8, "dropout": 0.5}
    module = ImageClassifier(model=model, optim={"name": "sgd", "lr": 0.1}, label_smoothing=0.2)
    expected = lightning_test(module, digits, precision, limit)
    assert expected.keys() == {"test/loss", "test/acc", "test/acc_top5"}
    loader = digits.test_dataloader()
    count = batches_to_test(limit, len(loader))
    got = evaluate_network(module.net, "classification", loader, dict(module.hparams), torch.device("cpu"), precision, count)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert module.net.training is False  # dropout off: the test is deterministic


def test_the_plain_loop_gives_lightnings_seq2seq_test_metrics(one_thread):
    """A GRU trained for a second on reversing strings (so that accuracy, exact match and BLEU
    are neither 0 nor 1), tested with beam search, the checkpoint's decoding settings and
    label smoothing, each of which changes a metric (at most 4 tokens cuts the longer
    answers short), on uneven batches (20 pairs by 16)."""
    torch.manual_seed(0)
    data = build_datamodule("reverse", batch_size=16, num_symbols=4, min_len=2, max_len=4, train_size=256, val_size=8,
                            test_size=20)  # fmt: skip
    data.setup("fit")
    data.setup("test")
    module = Seq2SeqModule(model={"name": "seq2seq_gru", "hidden": 32, "emb_dim": 8, **data.model_facts()},
                           optim={"name": "adam", "lr": 0.01}, label_smoothing=0.1, beam_size=2, max_decode_len=4,
                           length_penalty=0.6)  # fmt: skip
    optimizer = torch.optim.Adam(module.net.parameters(), lr=0.01)
    for _ in range(6):
        for batch in data.train_dataloader():
            loss = module.loss(module.net(batch["src"], batch["src_mask"], batch["tgt_in"]), batch["tgt_out"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    expected = lightning_test(module, data, "32-true", None)
    assert expected.keys() == {"test/loss", "test/acc", "test/exact_match", "test/bleu"}
    assert all(0 < expected[k] < 1 for k in ("test/acc", "test/exact_match", "test/bleu"))  # metrics that can differ
    got = evaluate_network(module.net, "seq2seq", data.test_dataloader(), dict(module.hparams), torch.device("cpu"),
                           tgt_vocab=data.tgt_vocab)  # fmt: skip
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_each_precision_computes_in_its_own_numbers(digits, one_thread):
    """bf16 autocast gives a loss apart from float32's (so a loop that ignored ``precision``
    could not match Lightning above by chance); 64-true runs the network in float64 (whose
    loss rounds to float32's here)."""
    torch.manual_seed(1)
    net = ImageClassifier(model={"name": "mlp", "num_classes": 10, "in_channels": 1, "image_size": 8},
                          optim={"name": "sgd", "lr": 0.1}).net  # fmt: skip
    losses = {p: evaluate_network(net, "classification", digits.test_dataloader(), {}, torch.device("cpu"), p)["test/loss"]
              for p in ("32-true", "bf16-mixed")}  # fmt: skip
    assert abs(losses["bf16-mixed"] - losses["32-true"]) > 1e-5
    evaluate_network(net, "classification", digits.test_dataloader(), {}, torch.device("cpu"), "64-true")
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    with pytest.raises(ConfigError, match="trainer.precision=transformer-engine is not one zoo-eval runs"):
        evaluate_network(net, "classification", digits.test_dataloader(), {}, torch.device("cpu"), "transformer-engine")


@pytest.mark.parametrize(
    ("limit", "available", "count"),
    [(None, 6, 6), (2, 6, 2), (6, 6, 6), (9, 6, 6), (1.0, 6, 6), (0.5, 6, 3), (0.34, 6, 2), (0.2, 6, 1)],
)
def test_limit_test_batches_counts_as_lightning_does(limit, available, count):
    assert batches_to_test(limit, available) == count


@pytest.mark.parametrize(
    ("limit", "message"),
    [(-1, "a batch count or a fraction"), (True, "a batch count or a fraction"), ("2", "a batch count or a fraction"),
     (1.5, "a fraction above 1"), (0.1, "0.1 of 6 test batches is no batch"), (0, "tests no batch"),
     (0.0, "tests no batch")],
)  # fmt: skip
def test_limits_that_test_nothing_or_make_no_sense_are_refused(limit, message):
    with pytest.raises(ConfigError, match=message):
        batches_to_test(limit, 6)


class _StubSeq2Seq:
    """A sequence model whose logits and decoded tokens are given: pad 0, bos 1, eos 2."""

    pad_idx, bos_idx, eos_idx = 0, 1, 2

    def __init__(self, logits, decoded):
        self.logits, self.decoded, self.generate_args = logits, decoded, None

    def __call__(self, src, src_mask, tgt_in):
        self.call_args = (src, src_mask, tgt_in)
        return self.logits

    def generate(self, src, src_mask, max_len, beam_size, length_penalty):
        self.generate_args = (src, src_mask, max_len, beam_size, length_penalty)
        return types.SimpleNamespace(tokens=self.decoded)


def test_seq2seq_metrics_count_tokens_up_to_eos_and_widen_to_compare_whole_sequences():
    tgt_out = torch.tensor([[5, 6, 2, 0], [7, 2, 0, 0], [5, 5, 5, 2]])  # padding after <eos>
    predicted = torch.tensor([[5, 6, 2, 0], [7, 3, 0, 0], [5, 5, 5, 5]])  # teacher-forced argmax
    logits = torch.nn.functional.one_hot(predicted, 9).float() * 3
    decoded = torch.tensor([[5, 6, 2], [7, 2, 0], [5, 5, 6]])  # shorter than tgt_out: widened with padding
    net = _StubSeq2Seq(logits, decoded)
    metrics = seq2seq_metrics()
    vocab = types.SimpleNamespace(tokens=lambda ids: [{5: "a", 6: " ", 7: "c"}.get(i, "?") for i in ids])
    src, src_mask, tgt_in = torch.zeros(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.bool), tgt_out.roll(1, 1)
    batch = {"src": src, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt_out}
    loss, pred_tokens, tgt_tokens = seq2seq_update(net, batch, metrics, Decoding(), 0.1, vocab)

    real = tgt_out != 0
    expected_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected_loss)
    assert metrics["acc"].compute().item() == pytest.approx(7 / real.sum().item())  # 3 + 1 + 3 of 9 real tokens
    assert metrics["exact_match"].compute().item() == pytest.approx(2 / 3)  # the third differs before <eos>
    assert pred_tokens == [["a", " "], ["c"], ["a", "a", " "]] and tgt_tokens == [["a", " "], ["c"], ["a", "a", "a"]]
    assert all(a is b for a, b in zip(net.call_args, (src, src_mask, tgt_in)))  # teacher forcing on tgt_in
    assert net.generate_args[0] is src and net.generate_args[1] is src_mask
    assert net.generate_args[2:] == (2 * 4 + 10, 1, 1.0)  # the default decoding length: 2 x source + 10
    assert token_strings(torch.tensor([[1, 7, 0, 2, 5]]), net, None) == [["7"]]  # <bos> and padding dropped, cut at <eos>
    assert bleu_text(["a", " ", "b"]) == "a ▁ b"  # a space token stays a token for BLEU's whitespace split
    Decoding(max_decode_len=5, beam_size=3, length_penalty=0.6).generate(net, src, src_mask)
    assert net.generate_args[2:] == (5, 3, 0.6)


def test_bleu_is_corpus_bleu_4():
    """Four identical tokens: BLEU-4 is 1 (BLEU-5 would be 0: no 5-gram); three: 0."""
    for tokens, score in ((["a", "b", "c", "d"], 1.0), (["a", "b", "c"], 0.0)):
        bleu = seq2seq_metrics()["bleu"]
        bleu.update([bleu_text(tokens)], [[bleu_text(tokens)]])
        assert bleu.compute().item() == pytest.approx(score)


def test_classification_metrics_are_the_top1_and_top5_shares_of_all_examples():
    """Over all examples (micro), not the mean of per-class accuracies: class 0 holds four of
    the six examples, all right; classes 1 and 2 one each, wrong (macro would give 1/3)."""
    logits = torch.tensor([
        [9, 1, 2, 3, 4, 5, 6], [9, 1, 2, 3, 4, 5, 6], [9, 1, 2, 3, 4, 5, 6], [9, 1, 2, 3, 4, 5, 6],
        [9, 8, 2, 3, 4, 5, 6],  # label 1: second highest, in the top 5
        [9, 8, 0, 3, 4, 5, 6],  # label 2: lowest, outside the top 5
    ], dtype=torch.float)  # fmt: skip
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    metrics = classification_metrics(7)
    metrics.update(logits[:4], labels[:4])
    metrics.update(logits[4:], labels[4:])  # batches of another size
    got = {k: v.item() for k, v in metrics.compute().items()}
    assert got == pytest.approx({"acc": 4 / 6, "acc_top5": 5 / 6})
    assert set(classification_metrics(5)) == {"acc"} and set(classification_metrics(6)) == {"acc", "acc_top5"}
