"""The reference recurrent cells and layers (src/zoo/layers/recurrent.py) against torch.nn."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from zoo.errors import ConfigError
from zoo.layers.recurrent import (
    GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, TextbookGRU, TextbookGRUCell, make_rnn, truncated_bptt,
)  # fmt: skip

PAIRS = {"rnn": (RNN, nn.RNN), "lstm": (LSTM, nn.LSTM), "gru": (GRU, nn.GRU)}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _states(final):
    return final if isinstance(final, tuple) else (final,)


@pytest.mark.parametrize("cell, torch_cell", [(RNNCell, nn.RNNCell), (LSTMCell, nn.LSTMCell), (GRUCell, nn.GRUCell)])
def test_cells_equal_torch_cells(cell, torch_cell):
    ours, theirs = cell(5, 6), torch_cell(5, 6)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x, h = torch.randn(4, 5), torch.randn(4, 6)
    state = (h, torch.randn(4, 6)) if cell is LSTMCell else h
    for a, b in zip(_states(ours(x, state)), _states(theirs(x, state))):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("layers, bidirectional, batch_first", [(1, False, False), (2, True, True), (3, True, False)])
def test_layers_equal_torch_on_full_sequences(one_thread, kind, layers, bidirectional, batch_first):
    ours_cls, torch_cls = PAIRS[kind]
    ours = ours_cls(5, 7, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    theirs = torch_cls(5, 7, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 6, 5) if batch_first else torch.randn(6, 3, 5)
    n = layers * (2 if bidirectional else 1)
    hx = torch.randn(n, 3, 7)
    hx = (hx, torch.randn(n, 3, 7)) if kind == "lstm" else hx
    (out, final), (out_t, final_t) = ours(x, hx), theirs(x, hx)
    torch.testing.assert_close(out, out_t, atol=1e-5, rtol=1e-5)
    for a, b in zip(_states(final), _states(final_t)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # Gradients agree too: the same function, not just the same values.
    out.square().sum().backward()
    out_t.square().sum().backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", PAIRS)
def test_padded_batches_equal_torch_with_pack_padded_sequence(one_thread, kind):
    ours_cls, torch_cls = PAIRS[kind]
    theirs = torch_cls(4, 6, num_layers=2, bidirectional=True, batch_first=True)
    ours = ours_cls(4, 6, num_layers=2, bidirectional=True, batch_first=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the other direction of loading
    x, lengths = torch.randn(4, 7, 4), torch.tensor([7, 2, 5, 1])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_t, final_t = theirs(packed)
    out_t, _ = pad_packed_sequence(out_t, batch_first=True, total_length=7)

    out, final = ours(x, lengths=lengths)
    torch.testing.assert_close(out, out_t, atol=1e-5, rtol=1e-5)
    for a, b in zip(_states(final), _states(final_t)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert out[1, 2:].abs().max() == 0  # nothing past a sequence's length

    out_p, final_p = ours(packed)  # a PackedSequence in, a PackedSequence out
    torch.testing.assert_close(pad_packed_sequence(out_p, batch_first=True, total_length=7)[0], out_t, atol=1e-5, rtol=1e-5)
    for a, b in zip(_states(final_p), _states(final_t)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parameter_counts(kind, bidirectional):
    i, h, layers = 5, 7, 2
    ours = PAIRS[kind][0](i, h, num_layers=layers, bidirectional=bidirectional)
    d = 2 if bidirectional else 1
    per_direction = [GATES[kind] * (h * size + h * h + 2 * h) for size in (i, d * h)]  # G(HI + H^2 + 2H)
    assert sum(p.numel() for p in ours.parameters()) == d * sum(per_direction)
    assert ours.state_dict().keys() == PAIRS[kind][1](i, h, num_layers=layers, bidirectional=bidirectional).state_dict().keys()


def test_relu_rnn_and_dropout_between_layers(one_thread):
    ours = RNN(3, 4, num_layers=2, nonlinearity="relu", dropout=0.5)
    theirs = nn.RNN(3, 4, num_layers=2, nonlinearity="relu", dropout=0.5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, 3)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    ours.train()
    assert not torch.allclose(ours(x)[0], theirs(x)[0])  # dropout acts between the layers in training
    with pytest.raises(ConfigError, match="tanh or relu"):
        RNN(3, 4, nonlinearity="sigmoid")


def _textbook_gru_by_hand(x, h, cell):
    """h~ = tanh(W [r * h, x] + b), h' = (1 - z) h + z h~, with the concatenated matrices written out."""
    hidden = h.shape[1]
    w_ir, w_iz, w_in = cell.weight_ih.split(hidden)
    w_hr, w_hz, w_hn = cell.weight_hh.split(hidden)
    b_r, b_z, b_n = (cell.bias_ih + cell.bias_hh).split(hidden)
    W_r, W_z, W = torch.cat([w_hr, w_ir], 1), torch.cat([w_hz, w_iz], 1), torch.cat([w_hn, w_in], 1)
    r = torch.sigmoid(torch.cat([h, x], 1) @ W_r.T + b_r)
    z = torch.sigmoid(torch.cat([h, x], 1) @ W_z.T + b_z)
    candidate = torch.tanh(torch.cat([r * h, x], 1) @ W.T + b_n)
    return (1 - z) * h + z * candidate


def test_textbook_gru_follows_its_equations_and_is_not_torchs_gru(one_thread):
    cell = TextbookGRUCell(4, 5)
    x, h = torch.randn(3, 4), torch.randn(3, 5)
    torch.testing.assert_close(cell(x, h), _textbook_gru_by_hand(x, h, cell))

    layer = TextbookGRU(4, 5, batch_first=True)
    layer.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    xs = torch.randn(3, 6, 4)
    out, final = layer(xs)
    state = torch.zeros(3, 5)
    for t in range(6):
        state = _textbook_gru_by_hand(xs[:, t], state, cell)
        torch.testing.assert_close(out[:, t], state)
    torch.testing.assert_close(final[0], state)

    torch_gru = nn.GRU(4, 5, batch_first=True)
    torch_gru.load_state_dict(layer.state_dict(), strict=True)  # same layout ...
    assert (torch_gru(xs)[0] - out).abs().max() > 1e-2  # ... a different function


def test_fused_and_reference_layers_load_each_others_weights():
    for cell in ("lstm", "gru"):
        ref = make_rnn(cell, "reference", input_size=3, hidden_size=4, batch_first=True)
        fused = make_rnn(cell, "fused", input_size=3, hidden_size=4, batch_first=True)
        assert isinstance(fused, nn.RNNBase) and not isinstance(ref, nn.RNNBase)
        fused.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(2, 5, 3)
        torch.testing.assert_close(ref(x)[0], fused(x)[0], atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="no fused implementation"):
        make_rnn("gru_textbook", "fused", input_size=3, hidden_size=4)
    with pytest.raises(ConfigError, match="impl must be fused or reference"):
        make_rnn("gru", "cudnn", input_size=3, hidden_size=4)


def test_truncated_bptt_keeps_values_and_cuts_gradients(one_thread):
    rnn = LSTM(2, 3, batch_first=True)
    x = torch.randn(2, 7, 2, requires_grad=True)
    full, _ = rnn(x)
    chunks = list(truncated_bptt(rnn, x, steps=3))
    assert [c.shape[1] for c, _ in chunks] == [3, 3, 1]
    torch.testing.assert_close(torch.cat([c for c, _ in chunks], 1), full)
    chunks[1][0].sum().backward()  # the second chunk's loss reaches only its own inputs
    assert x.grad[:, :3].abs().max() == 0 and x.grad[:, 3:6].abs().max() > 0


@pytest.mark.parametrize("cell, torch_cell", [(RNNCell, nn.RNNCell), (LSTMCell, nn.LSTMCell), (GRUCell, nn.GRUCell)])
def test_cells_start_from_zero_state_as_torch_cells_do(cell, torch_cell):
    """Without a state, a cell starts from zeros of (batch, hidden), a pair for the LSTM."""
    ours, theirs = cell(5, 6), torch_cell(5, 6)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 5)
    for a, b in zip(_states(ours(x)), _states(theirs(x))):
        assert a.shape == (4, 6)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell, torch_cell", [(RNNCell, nn.RNNCell), (LSTMCell, nn.LSTMCell), (GRUCell, nn.GRUCell)])
def test_cells_without_biases_equal_torch_cells_without_biases(cell, torch_cell):
    ours, theirs = cell(5, 6, bias=False), torch_cell(5, 6, bias=False)
    assert ours.bias_ih is None and ours.bias_hh is None
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 5)
    for a, b in zip(_states(ours(x)), _states(theirs(x))):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
