"""The seq2seq task end to end: loss, a short training run, zoo-eval and zoo-translate on its checkpoint."""

import json
import time

import pytest
import torch
import torch.nn.functional as F

from zoo.cli.eval import evaluate
from zoo.cli.train import train
from zoo.cli.translate import translate
from zoo.errors import ConfigError
from zoo.inference import load_trained
from zoo.optim import SCHEDULERS
from zoo.tasks import TASKS
from zoo.tasks.seq2seq import Seq2SeqModule

from tests.helpers import QUIET, compose_config, run_main

MODEL = {"name": "seq2seq_gru", "src_vocab_size": 9, "tgt_vocab_size": 9, "pad_idx": 0, "bos_idx": 1, "eos_idx": 2,
         "emb_dim": 8, "hidden": 16}  # fmt: skip
ADAM = {"name": "adam", "lr": 1e-3}
REVERSE = [
    "model=seq2seq_gru", "data=reverse", "optim=adam", "optim.lr=1e-2", "sched=onecycle", "trainer.max_epochs=3",
    "data.train_size=1500", "data.val_size=200", "data.test_size=200", "data.max_len=6", "data.num_symbols=8",
    "data.batch_size=32", "model.hidden=64", "model.emb_dim=16", "model.dropout=0", *QUIET,
]  # fmt: skip


def test_the_task_is_registered_with_its_checkpoint_metric():
    assert TASKS.get("seq2seq") is Seq2SeqModule
    assert (Seq2SeqModule.monitor, Seq2SeqModule.monitor_mode) == ("val/exact_match", "max")


def test_loss_ignores_padding_and_smooths_labels():
    module = Seq2SeqModule(model=MODEL, optim=ADAM, label_smoothing=0.1)
    logits = torch.randn(2, 3, 9)
    tgt = torch.tensor([[4, 5, 2], [6, 2, 0]])
    real = tgt != 0
    expected = F.cross_entropy(logits[real], tgt[real], label_smoothing=0.1)
    torch.testing.assert_close(module.loss(logits, tgt), expected)
    changed = logits.clone()
    changed[1, 2] = 100.0  # logits at a padded position do not count
    torch.testing.assert_close(module.loss(changed, tgt), expected)


def test_hyperparameters_are_plain_and_a_non_seq2seq_model_is_refused():
    module = Seq2SeqModule(model=MODEL, optim=ADAM, sched={"name": "none"})
    hparams = dict(module.hparams)
    assert hparams["model"] == MODEL and hparams["beam_size"] == 1
    clone = Seq2SeqModule(**hparams)
    clone.load_state_dict(module.state_dict(), strict=True)
    with pytest.raises(ConfigError, match="'lenet5' is not a sequence-to-sequence model"):
        Seq2SeqModule(model={"name": "lenet5"}, optim=ADAM)


def test_inverse_sqrt_schedule_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    schedule = SCHEDULERS.get("inverse_sqrt")(optimizer, 100, 10, d_model=64, warmup_steps=4)
    assert schedule["interval"] == "step"
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    expected = [2.0 * 64**-0.5 * min(s**-0.5, s * 4**-1.5) for s in range(1, 9)]
    assert lrs == pytest.approx(expected)
    assert max(lrs) == lrs[3]  # the peak is at the end of the warmup: 2 * 64^-0.5 * 4^-0.5
    with pytest.raises(ConfigError):
        SCHEDULERS.get("inverse_sqrt")(optimizer, 100, 10, warmup_steps=0)


@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reverse")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        score = train(compose_config("train", run_dir, REVERSE))
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return run_dir, score, seconds


def test_short_training_run_on_reverse_learns(reverse_run):
    run_dir, score, seconds = reverse_run
    record = json.loads((run_dir / "metrics.json").read_text())
    assert score > 0.9 and record["test"]["test/exact_match"] > 0.9, record
    assert record["test"]["test/bleu"] > 0.9 and record["test"]["test/acc"] > 0.95
    assert seconds < 120  # about 15 s on two idle cores; generous for a busy machine
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["name"] == "seq2seq_gru"
    assert ckpt["SymbolsDataModule"]["tgt_vocab"]["tokens"][4:] == list("abcdefgh")


def test_eval_reproduces_the_test_metrics(one_thread, reverse_run, tmp_path):
    run_dir, _, _ = reverse_run
    record = json.loads((run_dir / "metrics.json").read_text())
    evaluate(compose_config("eval", tmp_path, [f"ckpt_path={record['checkpoint']}"]))
    trained = record["test"]
    evaluated = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert evaluated.keys() == trained.keys() >= {"test/exact_match", "test/bleu", "test/acc", "test/loss"}
    for key in trained:
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key


def _translate_cfg(tmp_path, ckpt, *overrides):
    return compose_config("translate", tmp_path, [f"ckpt_path={ckpt}", *overrides])


def test_translate_round_trips_from_the_checkpoint(one_thread, reverse_run, tmp_path):
    run_dir, _, _ = reverse_run
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    heatmap = tmp_path / "attention.png"
    result = run_main("zoo-translate", f"ckpt_path={ckpt}", "text=abcdhg", f"heatmap={heatmap}")
    assert result.returncode == 0, result.stderr
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # In-process: the same output as the command, and reversals for most inputs.
    texts = ["abcdhg", "hgf", "eeab", "cafe", "dhbga", "bbba"]
    outputs = translate(_translate_cfg(tmp_path, ckpt, f"text=[{','.join(texts)}]", "beam_size=3"))
    assert result.stdout.splitlines() == [f"abcdhg\t{outputs[0]}"]  # the input echoed, as zoo-predict does
    assert sum(o == t[::-1] for o, t in zip(outputs, texts)) >= 5, outputs


def test_translate_nbest_prints_each_input_then_its_best_outputs_by_descending_score(one_thread, reverse_run, tmp_path):
    run_dir, _, _ = reverse_run
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    texts = ["abcdhg", "hgf", "eeab"]
    result = run_main("zoo-translate", f"ckpt_path={ckpt}", f"text=[{','.join(texts)}]", "nbest=3")
    assert result.returncode == 0, result.stderr
    assert "beam_size=3 for nbest=3" in result.stderr  # beam_size left unset follows nbest
    lines = result.stdout.splitlines()
    assert len(lines) == len(texts) * 4, lines
    beam = translate(_translate_cfg(tmp_path, ckpt, f"text=[{','.join(texts)}]", "beam_size=3"))
    trained = load_trained(ckpt)
    for i, text in enumerate(texts):
        echo, *hypotheses = lines[4 * i : 4 * i + 4]
        assert echo == text
        rows = [line.split("\t") for line in hypotheses]
        assert all(len(row) == 3 and row[0] == "" for row in rows), hypotheses  # <TAB>score<TAB>output
        scores = [float(row[1]) for row in rows]
        assert scores == sorted(scores, reverse=True), scores
        # The documented score, log p / len ** length_penalty (1 by default), of each output
        # printed, from one teacher-forced forward pass: a wrong formula, the raw log p, or
        # a score paired with another hypothesis cannot match.
        expected = [_forward_score(trained, text, output) for _, _, output in rows]
        assert scores == pytest.approx(expected, abs=1e-4), (scores, expected)
        assert rows[0][2] == beam[i]  # the first is the beam search's answer


def _forward_score(trained, text: str, output: str, length_penalty: float = 1.0) -> float:
    """``log p(output | text) / len ** length_penalty``, ``<eos>`` counted, by teacher forcing."""
    net, data = trained.net, trained.inputs
    src = torch.tensor([data.src_vocab.encode(text, eos=True)])
    tgt = torch.tensor([data.tgt_vocab.encode(output, eos=True)])
    tgt_in = torch.cat([torch.tensor([[net.bos_idx]]), tgt[:, :-1]], dim=1)
    with torch.no_grad():
        logp = net(src, torch.ones_like(src, dtype=torch.bool), tgt_in).log_softmax(-1)
    return logp.gather(-1, tgt.unsqueeze(-1)).sum().item() / tgt.shape[1] ** length_penalty


def test_translate_refuses_bad_requests(reverse_run, tmp_path):
    run_dir, _, _ = reverse_run
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match="beam_size must be a whole number of at least 1, got 0"):
        translate(_translate_cfg(tmp_path, ckpt, "text=abc", "beam_size=0"))
    with pytest.raises(ConfigError, match="non-empty string"):
        translate(_translate_cfg(tmp_path, ckpt, "text=[]"))
    for overrides, message in [
        (["nbest=0"], "nbest must be a positive integer, got 0"),
        (["nbest=1.5"], "nbest must be a positive integer, got 1.5"),
        (["nbest=three"], "nbest must be a positive integer, got 'three'"),
        (["nbest=3", "beam_size=2"], "nbest=3 needs beam_size >= 3, got beam_size=2"),
        (["beam_size=abc"], "beam_size must be a whole number of at least 1, got 'abc'"),
    ]:
        result = run_main("zoo-translate", f"ckpt_path={ckpt}", "text=abc", *overrides)
        assert result.returncode == 1 and result.stdout == "", (overrides, result.stdout)
        assert result.stderr.strip().splitlines()[-1] == f"Error: {message}", (overrides, result.stderr)


def test_predict_translates_text_lines_as_translate_does(one_thread, reverse_run, tmp_path):
    run_dir, _, _ = reverse_run
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    texts = ["abcdhg", "hgf", "eeab"]
    lines = tmp_path / "inputs.txt"
    lines.write_text("\n".join(texts) + "\n\n")  # blank lines are skipped
    out = tmp_path / "out.csv"
    result = run_main("zoo-predict", f"ckpt_path={ckpt}", f"inputs={lines}", f"csv={out}")
    assert result.returncode == 0, result.stderr
    expected = translate(_translate_cfg(tmp_path, ckpt, f"text=[{','.join(texts)}]"))
    assert result.stdout.splitlines() == [f"{t}\t{o}" for t, o in zip(texts, expected)]
    assert out.read_text().splitlines()[1:] == [f"{t},{o}" for t, o in zip(texts, expected)]

    bad = run_main("zoo-predict", f"ckpt_path={ckpt}", f"text=[{texts[0]}]", "beam_size=0")
    assert bad.returncode == 1 and "beam_size must be a whole number of at least 1" in bad.stderr
