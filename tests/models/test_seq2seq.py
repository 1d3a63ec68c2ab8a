"""The attention encoder-decoder (src/zoo/models/seq2seq.py) and decoding (src/zoo/models/decoding.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from zoo import get_model
from zoo.errors import ConfigError
from zoo.models.decoding import beam_search, greedy_search
from zoo.models.base import Seq2SeqModel
from zoo.models.seq2seq import SCORES, AttentionScore

V = 12


def _batch(lengths=(6, 3, 5), tgt_len=4):
    src = torch.randint(4, V, (len(lengths), max(lengths)))
    mask = torch.arange(src.shape[1]) < torch.tensor(lengths).unsqueeze(1)
    src = src.masked_fill(~mask, 0)
    tgt = torch.randint(4, V, (len(lengths), tgt_len))
    tgt[:, 0] = 1
    return src, mask, tgt


def _net(name="seq2seq_gru", **kw):
    kw = {"src_vocab_size": V, "tgt_vocab_size": V, "emb_dim": 8, "hidden": 16, "dropout": 0.0, **kw}
    return get_model(name, **kw)


@pytest.mark.parametrize("name", ["seq2seq_gru", "seq2seq_lstm"])
@pytest.mark.parametrize("attention", SCORES)
def test_every_score_trains_and_padding_gets_exactly_zero_attention(one_thread, name, attention):
    net = _net(name, attention=attention, layers=2)
    src, mask, tgt = _batch()
    logits = net(src, mask, tgt)
    assert logits.shape == (3, 4, V) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())

    net.eval()
    out = net.generate(src, mask, max_len=5)
    assert out.attention.shape == (3, out.tokens.shape[1], 6)
    assert out.attention[~mask.unsqueeze(1).expand_as(out.attention)].abs().max() == 0  # exactly zero
    live = out.attention[1, 0]  # a row before any <eos>: a distribution over the 3 real tokens
    torch.testing.assert_close(live.sum(), torch.tensor(1.0))


def test_padding_does_not_change_the_translation(one_thread):
    net = _net(bidirectional=True).eval()
    src, mask, tgt = _batch(lengths=(5,))
    padded = F.pad(src, (0, 3))  # the same source with three <pad>s after it
    torch.testing.assert_close(net(padded, padded != 0, tgt), net(src, mask, tgt), atol=1e-6, rtol=1e-5)


def test_scores_follow_their_formulas():
    s, h = torch.randn(2, 6), torch.randn(2, 4, 6)
    dot = torch.einsum("bd,bsd->bs", s, h)
    torch.testing.assert_close(AttentionScore("luong_dot", 6, 6)(s, h), dot)
    torch.testing.assert_close(AttentionScore("scaled_dot", 6, 6)(s, h), dot / math.sqrt(6))
    general = AttentionScore("luong_general", 6, 5)
    h5 = torch.randn(2, 4, 5)
    torch.testing.assert_close(general(s, general.keys(h5)), torch.einsum("bd,de,bse->bs", s, general.W.weight, h5))
    add = AttentionScore("bahdanau", 6, 6)
    expected = torch.tanh(add.W_s(s).unsqueeze(1) + add.W_h(h)) @ add.v.weight.squeeze(0)
    torch.testing.assert_close(add(s, add.keys(h)), expected)
    cos = AttentionScore("cosine", 6, 6)
    torch.testing.assert_close(cos(s, h), 10 * F.cosine_similarity(s.unsqueeze(1), h, dim=-1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown attention 'luong'"):
        AttentionScore("luong", 6, 6)
    with pytest.raises(ConfigError, match="equal query and key sizes"):
        AttentionScore("luong_dot", 6, 5)


@pytest.mark.parametrize("name", ["seq2seq_gru", "seq2seq_lstm"])
def test_reference_and_fused_recurrent_layers_give_the_same_model(one_thread, name):
    ref = _net(name, impl="reference", layers=2)
    fused = _net(name, impl="fused", layers=2)
    fused.load_state_dict(ref.state_dict(), strict=True)
    ref.eval(), fused.eval()
    src, mask, tgt = _batch()
    torch.testing.assert_close(ref(src, mask, tgt), fused(src, mask, tgt), atol=1e-5, rtol=1e-5)


def test_teacher_forcing_ratio_zero_feeds_the_models_own_predictions(one_thread):
    net = _net(teacher_forcing=0.0).train()  # dropout is 0: training mode only switches the feeding
    src, mask, tgt = _batch()
    other = tgt.clone()
    other[:, 1:] = torch.randint(4, V, other[:, 1:].shape)
    torch.testing.assert_close(net(src, mask, tgt), net(src, mask, other))  # the gold tokens are never read
    forced = _net(teacher_forcing=1.0)
    forced.load_state_dict(net.state_dict())
    assert not torch.allclose(forced(src, mask, tgt), forced(src, mask, other))


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="src_vocab_size is null"):
        get_model("seq2seq_gru", src_vocab_size=None)
    with pytest.raises(ConfigError, match="hidden must be even"):
        get_model("seq2seq_lstm", hidden=15)
    with pytest.raises(ConfigError, match="teacher_forcing"):
        get_model("seq2seq_lstm", teacher_forcing=1.5)


def test_beam_of_one_is_greedy_and_outputs_are_padded_after_eos(one_thread):
    net = _net("seq2seq_lstm").eval()
    src, mask, _ = _batch(lengths=(6, 3, 5, 2, 4))
    greedy = greedy_search(net, src, mask, max_len=7)
    beam = beam_search(net, src, mask, max_len=7, beam_size=1, length_penalty=0.7)
    assert torch.equal(greedy.tokens, beam.tokens)
    torch.testing.assert_close(greedy.attention, beam.attention)
    torch.testing.assert_close(greedy.scores, beam.scores)
    assert torch.equal(net.generate(src, mask, max_len=7).tokens, greedy.tokens)
    for row in greedy.tokens.tolist():
        if net.eos_idx in row:
            assert set(row[row.index(net.eos_idx) + 1 :]) <= {net.pad_idx}


class ToyModel(Seq2SeqModel):
    """Next-token probabilities fixed by the previous token: greedy takes A (0.6) and is then
    left with 0.1 at best; B (0.4) leads to C with 0.9, so B C <eos> is far more probable."""

    src_vocab_size = tgt_vocab_size = 8
    pad_idx, bos_idx, eos_idx = 0, 1, 2
    A, B, C = 3, 4, 5

    def __init__(self):
        super().__init__()
        table = torch.full((8, 8), 1e-6)
        table[self.bos_idx, [self.A, self.B]] = torch.tensor([0.6, 0.4])
        table[self.A, 3:8] = 0.1
        table[self.A, self.eos_idx] = 0.1
        table[self.B, [self.C, self.eos_idx]] = torch.tensor([0.9, 0.1])
        table[[self.C, 6, 7], self.eos_idx] = 1.0
        table[self.eos_idx, self.eos_idx] = 1.0
        self.register_buffer("logp", (table / table.sum(1, keepdim=True)).log())

    def encode(self, src, src_mask):
        return src

    def init_state(self, memory, src_mask):
        return {"steps": torch.zeros(memory.shape[0])}

    def decode_step(self, tokens, state):
        return self.logp[tokens], {"steps": state["steps"] + 1}, None


def test_beam_search_finds_a_more_probable_sequence_than_greedy():
    model = ToyModel()
    src = torch.ones(2, 3, dtype=torch.long)
    mask = torch.ones_like(src, dtype=torch.bool)
    greedy = greedy_search(model, src, mask, max_len=5)
    beam = beam_search(model, src, mask, max_len=5, beam_size=2, length_penalty=0.0)
    assert greedy.tokens[0, 0] == model.A and greedy.attention is None
    assert beam.tokens.tolist() == [[model.B, model.C, model.eos_idx]] * 2
    assert (beam.scores > greedy.scores + 1.0).all()
    torch.testing.assert_close(beam.scores, torch.full((2,), math.log(0.4 * 0.9)), atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="beam_size"):
        beam_search(model, src, mask, max_len=5, beam_size=0)


def test_one_token_is_the_shortest_output_and_less_is_refused():
    model = ToyModel()
    src = torch.ones(2, 3, dtype=torch.long)
    mask = torch.ones_like(src, dtype=torch.bool)
    for search in (greedy_search, beam_search):
        assert search(model, src, mask, max_len=1).tokens.shape == (2, 1)
        with pytest.raises(ConfigError) as error:
            search(model, src, mask, max_len=0)
        assert str(error.value) == "max_len must be at least 1, got 0"


class _Scripted(Seq2SeqModel):
    """A decoder whose next-token probabilities depend only on how many ``a`` it has emitted:
    tokens <pad>=0, <bos>=1, <eos>=2, a=3."""

    pad_idx, bos_idx, eos_idx = 0, 1, 2
    NEXT = {0: (0.5, 0.5), 1: (0.4, 0.6), 2: (0.9, 0.1)}  # a's so far -> (P(<eos>), P(a))

    def encode(self, src, src_mask):
        return src

    def init_state(self, memory, src_mask):
        return torch.zeros(memory.shape[0], dtype=torch.long)

    def decode_step(self, tokens, state):
        state = state + (tokens == 3).long()
        probs = torch.tensor([self.NEXT.get(int(n), (0.999, 0.001)) for n in state])  # (B, 2)
        logits = torch.full((len(state), 4), -1e9)
        logits[:, 2:] = probs.log()
        return logits, state, None


def test_beam_search_ranks_by_the_length_normalised_score():
    """``<eos>`` alone has log-probability log 0.5 = -0.69; ``a a <eos>`` has
    log(0.5 * 0.6 * 0.9) = -1.31, i.e. -0.44 per token. Without a length penalty the short
    answer wins, with ``length_penalty=1`` the long one; the expected picks are worked out
    by hand from the table above, not by the search."""
    src = torch.ones(1, 2, dtype=torch.long)
    mask = torch.ones_like(src, dtype=torch.bool)
    raw = beam_search(_Scripted(), src, mask, max_len=5, beam_size=3, length_penalty=0.0)
    normalised = beam_search(_Scripted(), src, mask, max_len=5, beam_size=3, length_penalty=1.0)
    assert raw.tokens[0, 0].item() == 2
    assert raw.scores[0].item() == pytest.approx(math.log(0.5), abs=1e-5)
    assert normalised.tokens[0, :3].tolist() == [3, 3, 2]
    assert normalised.scores[0].item() == pytest.approx(math.log(0.5 * 0.6 * 0.9), abs=1e-5)


def test_a_fractional_length_penalty_divides_by_length_to_its_power():
    """With ``length_penalty=0.5`` the score is divided by ``sqrt(length)``: ``<eos>`` alone
    -0.69 / 1 = -0.69 beats ``a a <eos>`` at -1.31 / sqrt(3) = -0.76 (and ``a <eos>`` at
    log(0.5 * 0.4) / sqrt(2) = -1.14); dividing by ``0.5 * length`` instead would pick
    ``a a <eos>`` (-0.87 against -1.39)."""
    src = torch.ones(1, 2, dtype=torch.long)
    mask = torch.ones_like(src, dtype=torch.bool)
    half = beam_search(_Scripted(), src, mask, max_len=5, beam_size=3, length_penalty=0.5)
    assert half.tokens[0, 0].item() == 2
    assert half.scores[0].item() == pytest.approx(math.log(0.5), abs=1e-5)


def test_nbest_lists_the_final_hypotheses_by_the_length_normalised_score():
    """The three hypotheses left in the beam, worked out by hand from ``_Scripted``'s table:
    ``a a <eos>`` (log 0.27 = -1.31, -0.44 per token), ``<eos>`` (log 0.5 = -0.69) and
    ``a <eos>`` (log 0.2 = -1.61, -0.80 per token). With ``length_penalty=1`` they come in
    that order; without a length penalty ``<eos>`` leads."""
    src = torch.ones(1, 2, dtype=torch.long)
    mask = torch.ones_like(src, dtype=torch.bool)
    out = beam_search(_Scripted(), src, mask, max_len=5, beam_size=3, length_penalty=1.0, nbest=3)
    assert out.tokens.tolist() == [[[3, 3, 2], [2, 0, 0], [3, 2, 0]]]
    logp = [math.log(0.5 * 0.6 * 0.9), math.log(0.5), math.log(0.5 * 0.4)]
    assert out.scores[0].tolist() == pytest.approx(logp, abs=1e-5)
    assert out.normalized_scores[0].tolist() == pytest.approx([logp[0] / 3, logp[1], logp[2] / 2], abs=1e-5)
    raw = beam_search(_Scripted(), src, mask, max_len=5, beam_size=3, length_penalty=0.0, nbest=3)
    assert raw.tokens.tolist() == [[[2, 0, 0], [3, 3, 2], [3, 2, 0]]]
    assert raw.normalized_scores[0].tolist() == pytest.approx(sorted(logp, reverse=True), abs=1e-5)


GENERATORS = ["seq2seq_gru", "seq2seq_lstm", "transformer_small"]


def _generator(name: str) -> Seq2SeqModel:
    """A small random model of each family that generates; an 8-token target vocabulary
    makes ``<eos>`` likely enough for hypotheses of several lengths."""
    if name == "transformer_small":
        options = dict(src_vocab_size=V, tgt_vocab_size=8, d_model=16, num_heads=2, d_ff=32, dropout=0.0)
        return get_model(name, **options).eval()
    return _net(name, tgt_vocab_size=8).eval()


def _teacher_forced_scores(net, src, mask, tokens, length_penalty):
    """Each hypothesis of ``tokens`` (B, n, L) scored by one teacher-forced forward pass:
    the sum of its token log-probabilities up to its first ``<eos>`` (included; all L if
    cut), that divided by ``len ** length_penalty``, and the lengths."""
    b, n, steps = tokens.shape
    flat = tokens.reshape(b * n, steps)
    ended = flat == net.eos_idx
    lengths = torch.where(ended.any(-1), ended.int().argmax(-1) + 1, steps)  # (B * n,)
    tgt_in = torch.cat([torch.full((b * n, 1), net.bos_idx), flat[:, :-1]], dim=1)
    with torch.no_grad():
        logp = net(src.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), tgt_in).log_softmax(-1)
    token_logp = logp.gather(-1, flat.unsqueeze(-1)).squeeze(-1)  # (B * n, L)
    total = torch.where(torch.arange(steps) < lengths.unsqueeze(1), token_logp, 0.0).sum(-1)
    return total.view(b, n), (total / lengths.float() ** length_penalty).view(b, n), lengths.view(b, n)


@pytest.mark.parametrize("name", GENERATORS)
def test_nbest_is_sorted_distinct_scored_as_a_forward_pass_scores_it_and_led_by_the_beam_result(one_thread, name):
    net = _generator(name)
    src, mask, _ = _batch(lengths=(6, 3, 5, 4))
    search = dict(max_len=6, beam_size=5, length_penalty=0.6)
    one = net.generate(src, mask, **search)  # nbest=1: the beam result as it always was
    every = net.generate(src, mask, **search, nbest=5)  # nbest = beam_size: every final hypothesis
    steps = one.tokens.shape[1]
    assert every.tokens.shape == (4, 5, steps) and every.attention.shape == (4, 5, steps, 6)
    assert every.scores.shape == every.normalized_scores.shape == (4, 5)

    assert torch.equal(every.tokens[:, 0], one.tokens) and torch.equal(every.attention[:, 0], one.attention)
    assert torch.equal(every.scores[:, 0], one.scores)
    assert torch.equal(every.normalized_scores[:, 0], one.normalized_scores)
    assert (every.normalized_scores[:, :-1] >= every.normalized_scores[:, 1:]).all()  # best first
    for hypotheses in every.tokens.tolist():
        assert len({tuple(h) for h in hypotheses}) == 5

    logp, normalized, lengths = _teacher_forced_scores(net, src, mask, every.tokens, 0.6)
    assert len(set(lengths.flatten().tolist())) > 1  # else length normalisation would go untested
    torch.testing.assert_close(every.scores, logp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(every.normalized_scores, normalized, atol=1e-4, rtol=1e-4)

    three = net.generate(src, mask, **search, nbest=3)
    assert torch.equal(three.tokens, every.tokens[:, :3]) and torch.equal(three.scores, every.scores[:, :3])


def test_bad_nbest_is_refused_in_one_line():
    model = ToyModel()
    src = torch.ones(2, 3, dtype=torch.long)
    mask = torch.ones_like(src, dtype=torch.bool)
    for nbest in (0, -1, 1.5, "3", True):
        with pytest.raises(ConfigError) as error:
            beam_search(model, src, mask, max_len=5, beam_size=4, nbest=nbest)
        assert str(error.value) == f"nbest must be a positive integer, got {nbest!r}"
    with pytest.raises(ConfigError) as error:
        beam_search(model, src, mask, max_len=5, beam_size=4, nbest=5)
    assert str(error.value) == "nbest=5 needs beam_size >= 5, got beam_size=4"
    with pytest.raises(ConfigError, match="nbest=2 needs beam_size >= 2, got beam_size=1"):
        model.generate(src, mask, max_len=5, nbest=2)  # the default beam_size is greedy's 1
