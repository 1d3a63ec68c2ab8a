"""Attention layers: score functions, masks, and multi-head attention equal to PyTorch's."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.attention import (
    SCORES, Attention, MultiHeadAttention, attention_bias, causal_mask, make_score, masked_softmax,
    scaled_dot_product_attention_ref, set_fast_attention,
)  # fmt: skip

from tests.helpers import assert_same_values_and_gradients

SCORE_NAMES = ["additive", "cosine", "dot", "general", "scaled_dot"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every tensor here is tiny."""


def test_score_registry_lists_the_five_scores():
    assert SCORES.names() == SCORE_NAMES
    with pytest.raises(ValueError, match="Did you mean: scaled_dot"):
        make_score("scaled_dott", 8)


@torch.no_grad()
def test_scores_follow_their_equations():
    s, h = torch.randn(2, 3, 4), torch.randn(2, 5, 4)  # queries (B, T, d), keys (B, S, d)
    i, j = 1, 4  # one query-key pair, written out with plain sums
    si, hj = s[0, i], h[0, j]
    assert make_score("dot", 4)(s, h)[0, i, j] == pytest.approx(float((si * hj).sum()), abs=1e-6)
    assert make_score("scaled_dot", 4)(s, h)[0, i, j] == pytest.approx(float((si * hj).sum()) / 2.0, abs=1e-6)
    cosine = float((si * hj).sum() / (si.norm() * hj.norm()))
    assert make_score("cosine", 4)(s, h)[0, i, j] == pytest.approx(cosine, abs=1e-6)

    general = make_score("general", 4, 6)  # s^T W h with h of another width
    h6 = torch.randn(2, 5, 6)
    w = general.weight.weight  # (d_q, d_k)
    assert general(s, h6)[0, i, j] == pytest.approx(float(si @ w @ h6[0, j]), abs=1e-5)

    additive = make_score("additive", 4, 6, hidden_dim=7)  # v^T tanh(W_s s + W_h h)
    w_s, w_h, v = additive.query_proj.weight, additive.key_proj.weight, additive.v.weight[0]
    expected = float(v @ torch.tanh(w_s @ si + w_h @ h6[0, j]))
    assert additive(s, h6)[0, i, j] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "cosine"])
def test_scores_without_a_matrix_refuse_different_widths(name):
    with pytest.raises(ValueError, match="one width"):
        make_score(name, 4, 6)


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_masked_keys_get_exactly_zero_weight(name):
    attention = Attention(name, query_dim=6, key_dim=6)
    query, keys = torch.randn(3, 4, 6), torch.randn(3, 7, 6)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 5:] = True
    padding[2, 1:] = True
    context, weights = attention(query, keys, key_padding_mask=padding)
    assert context.shape == (3, 4, 6) and weights.shape == (3, 4, 7)
    assert torch.all(weights.masked_select(padding.unsqueeze(1).expand_as(weights)) == 0.0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    torch.testing.assert_close(weights[2, :, 0], torch.ones(4))  # one key left: all the weight


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_a_padded_key_changes_nothing(name):
    key_dim = 5 if name in ("additive", "general") else 6  # these two take keys of another width
    attention = Attention(name, query_dim=6, key_dim=key_dim, hidden_dim=8)
    query, keys, values = torch.randn(2, 3, 6), torch.randn(2, 4, key_dim), torch.randn(2, 4, 9)
    context, weights = attention(query, keys, values)
    # The same keys plus one of padding (with large values, so a leak would show).
    padded_keys = torch.cat([keys, 100 * torch.randn(2, 1, key_dim)], dim=1)
    padded_values = torch.cat([values, 100 * torch.randn(2, 1, 9)], dim=1)
    padding = torch.tensor([[False] * 4 + [True]] * 2)
    context2, weights2 = attention(query, padded_keys, padded_values, key_padding_mask=padding)
    torch.testing.assert_close(context2, context)
    torch.testing.assert_close(weights2[..., :4], weights)
    assert torch.all(weights2[..., 4] == 0.0)


def test_one_step_queries_and_the_causal_mask():
    attention = Attention("general", query_dim=4, key_dim=6)
    context, weights = attention(torch.randn(2, 4), torch.randn(2, 5, 6))  # a decoder step: (B, d_q)
    assert context.shape == (2, 6) and weights.shape == (2, 5)
    self_attention = Attention("scaled_dot", query_dim=4)
    x = torch.randn(2, 5, 4)
    _, weights = self_attention(x, x, is_causal=True)
    assert torch.all(weights.masked_select(causal_mask(5).expand_as(weights)) == 0.0)
    assert torch.all(weights[:, 0, 0] == 1.0)  # the first position sees only itself


def test_queries_with_every_key_masked_get_zeros_not_nan():
    scores = torch.randn(2, 3)
    bias = torch.tensor([[0.0, float("-inf"), 0.0], [float("-inf")] * 3])
    weights = masked_softmax(scores, bias)
    assert torch.equal(weights[1], torch.zeros(3)) and weights[0, 1] == 0.0
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 3, 8)
    padding = torch.tensor([[False, False, True], [True, True, True]])
    for fast in (True, False):
        mha.fast = fast
        out, _ = mha(x, x, x, key_padding_mask=padding)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[1], mha.out_proj.bias.expand(3, 8))  # zero heads, then W^O's bias
        # Each sequence alone, unbatched: the same rows, the fully padded one included.
        for i in range(2):
            alone, weights = mha(x[i], x[i], x[i], key_padding_mask=padding[i], need_weights=True)
            torch.testing.assert_close(alone, out[i])
            assert weights.shape == (3, 3) and torch.all(weights[:, padding[i]] == 0.0)
        assert torch.all(weights == 0.0)  # every key of sequence 1 masked: no weight anywhere


def test_reference_attention_is_the_equation():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    out, weights = scaled_dot_product_attention_ref(q, k, v)
    expected_weights = torch.softmax(torch.einsum("btd,bsd->bts", q, k) / 2.0, dim=-1)  # sqrt(d_k) = 2
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(out, expected_weights @ v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


def test_attention_bias_shapes_and_errors():
    padding = torch.tensor([[False, True, False]])
    bias = attention_bias(1, 2, 4, 3, key_padding_mask=padding, is_causal=True)
    assert bias.shape == (1, 1, 4, 3)
    visible = torch.isfinite(bias[0, 0])
    assert visible.tolist() == [[True, False, False], [True, False, False], [True, False, True], [True, False, True]]
    assert attention_bias(1, 2, 4, 3) is None
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, S\)"):
        attention_bias(2, 2, 4, 3, key_padding_mask=padding)
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        attention_bias(1, 2, 4, 3, attn_mask=torch.zeros(3, 4))


# --------------------------------------------------------------------- multi-head attention vs PyTorch

E, H = 16, 4


def _pair(kdim: int | None = None, batch_first: bool = True, dropout: float = 0.0):
    ref = nn.MultiheadAttention(E, H, dropout=dropout, kdim=kdim, vdim=kdim, batch_first=batch_first)
    with torch.no_grad():  # non-zero biases, so that a bias mix-up would show
        for name, p in ref.named_parameters():
            if "bias" in name:
                p.normal_()
    ours = MultiHeadAttention(E, H, dropout=dropout, kdim=kdim, vdim=kdim, batch_first=batch_first)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.eval(), ref.eval()


def _padding(batch: int, length: int) -> torch.Tensor:
    padding = torch.zeros(batch, length, dtype=torch.bool)
    padding[0, length - 2 :] = True
    padding[-1, length - 1 :] = True
    return padding


CASES = {
    "self": dict(self_attention=True),
    "self, padding": dict(self_attention=True, padding=True),
    "self, causal": dict(self_attention=True, causal=True),
    "self, causal and padding": dict(self_attention=True, causal=True, padding=True),
    "cross, padding": dict(padding=True),
    "cross, other key width, padding": dict(kdim=12, padding=True),
    "cross, sequence first": dict(batch_first=False, padding=True),
    "cross, float attn_mask": dict(float_mask=True),
    "cross, per-head attn_mask": dict(head_mask=True),
    # One sequence without a batch dimension: query (T, E), key (S, E), masks (S,), (T, S), (H, T, S).
    "unbatched self": dict(unbatched=True, self_attention=True),
    "unbatched self, causal and padding": dict(unbatched=True, self_attention=True, causal=True, padding=True),
    "unbatched cross, padding": dict(unbatched=True, padding=True),
    "unbatched cross, other key width, float attn_mask": dict(unbatched=True, kdim=12, float_mask=True),
    "unbatched cross, sequence first, per-head attn_mask": dict(unbatched=True, batch_first=False, head_mask=True),
}


WEIGHTS = [dict(need_weights=False), dict(need_weights=True), dict(need_weights=True, average_attn_weights=False)]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_multi_head_attention_equals_pytorch(case, fast, mode):
    """Outputs, weights (averaged and per head) and the gradients of the inputs and every
    parameter equal PyTorch's, in training (dropout 0) and in eval mode."""
    opts = CASES[case]
    ours, ref = _pair(opts.get("kdim"), opts.get("batch_first", True))
    ours.fast = fast
    ours.train(mode == "train")
    ref.train(mode == "train")
    b, t, s = 3, 5, 5 if opts.get("self_attention") else 7
    query = torch.randn(b, t, E)
    key = query if opts.get("self_attention") else torch.randn(b, s, opts.get("kdim") or E)
    kwargs = {}
    if opts.get("padding"):
        kwargs["key_padding_mask"] = _padding(b, s)
    if opts.get("causal"):
        kwargs["attn_mask"] = causal_mask(t)  # PyTorch needs the mask; ours builds it from is_causal
        kwargs["is_causal"] = True
    if opts.get("float_mask"):
        kwargs["attn_mask"] = torch.randn(t, s)
    if opts.get("head_mask"):  # PyTorch's (B * H, T, S) form: one mask per sequence and head
        kwargs["attn_mask"] = torch.randn(b * H, t, s)
    if opts.get("unbatched"):  # the first sequence alone (its last two keys are padding)
        b, query = None, query[0]
        key = query if opts.get("self_attention") else key[0]
        if "key_padding_mask" in kwargs:
            kwargs["key_padding_mask"] = kwargs["key_padding_mask"][0]  # (S,)
        if opts.get("head_mask"):
            kwargs["attn_mask"] = kwargs["attn_mask"][:H]  # (H, T, S)
    elif not opts.get("batch_first", True):
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    ours_kwargs = dict(kwargs)
    if opts.get("causal"):
        del ours_kwargs["attn_mask"]
    for weights in WEIGHTS:
        assert_same_values_and_gradients(ours, ref, query, key, key, ref_kwargs={**kwargs, **weights},
                                         **ours_kwargs, **weights)  # fmt: skip
    with torch.no_grad():  # in eval, PyTorch may take its inference fast path here
        out, per_head = ours(query, key, key, need_weights=True, average_attn_weights=False, **ours_kwargs)
        torch.testing.assert_close(out, ref(query, key, key, need_weights=False, **kwargs)[0], rtol=1e-5, atol=1e-5)
    assert out.shape == ((t, E) if b is None else (b, t, E) if opts.get("batch_first", True) else (t, b, E))
    assert per_head.shape == ((H, t, s) if b is None else (b, H, t, s))


def test_pytorch_loads_our_state_dict():
    ours = MultiHeadAttention(E, H, kdim=12, vdim=10)
    ref = nn.MultiheadAttention(E, H, kdim=12, vdim=10, batch_first=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert sorted(ours.state_dict()) == sorted(
        ["q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    )
    q, kv, v = torch.randn(2, 3, E), torch.randn(2, 4, 12), torch.randn(2, 4, 10)
    with torch.no_grad():
        torch.testing.assert_close(ours(q, kv, v)[0], ref(q, kv, v)[0], rtol=1e-5, atol=1e-5)


def test_fast_and_reference_paths_agree_in_training_with_gradients():
    ours, _ = _pair()
    ours.train()  # dropout 0: training changes nothing but the autograd path
    x, memory = torch.randn(2, 5, E), torch.randn(2, 6, E)
    padding = _padding(2, 6)
    results = []
    for fast in (True, False):
        set_fast_attention(ours, fast)
        ours.zero_grad()
        x_ = x.clone().requires_grad_()
        out, _ = ours(x_, memory, memory, key_padding_mask=padding)
        out.square().sum().backward()
        results.append((out.detach(), x_.grad, ours.in_proj_weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert results[0][2].abs().sum() > 0


def test_weights_are_returned_before_dropout_and_dropout_is_off_in_eval():
    mha = MultiHeadAttention(E, H, dropout=0.5).train()
    x = torch.randn(2, 5, E)
    _, weights = mha(x, x, x, need_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    a, b = mha(x, x, x)[0], mha(x, x, x)[0]
    assert not torch.allclose(a, b)  # dropout on the attention weights in training
    mha.eval()
    torch.testing.assert_close(mha(x, x, x)[0], mha(x, x, x, need_weights=True)[0])


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(E, H)
    with pytest.raises(ValueError, match=r"expected query \(B, T, E\) with E=16"):
        mha(torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="key_padding_mask"):
        x = torch.randn(2, 3, E)
        mha(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected query"):
        Attention("dot", 4)(torch.randn(2, 3, 4), torch.randn(3, 5, 4))
    # Batched and unbatched inputs mixed are refused, as nn.MultiheadAttention refuses them.
    q, kv, x = torch.randn(3, E), torch.randn(4, E), torch.randn(2, 3, E)
    no_padding = torch.zeros(4, dtype=torch.bool)
    mixed = [
        ((q, kv[None], kv[None]), {}, r"query \(3, 16\) is unbatched \(2-D\), key \(1, 4, 16\) is not 2-D"),
        ((q, kv, kv), dict(key_padding_mask=no_padding[None]), r"key_padding_mask \(1, 4\) is not 1-D"),
        ((q, kv, kv), dict(attn_mask=torch.zeros(1, H, 3, 4)), r"attn_mask \(1, 4, 3, 4\) is not 2-D or 3-D"),
        ((q[None], kv, kv), {}, r"query \(1, 3, 16\) is batched \(3-D\), key \(4, 16\) is not 3-D"),
        ((x, x, x), dict(key_padding_mask=no_padding[:3]), r"key_padding_mask \(3,\) is not 2-D"),
    ]
    for args, kwargs, message in mixed:
        with pytest.raises(ValueError, match=message):
            mha(*args, **kwargs)
    with pytest.raises(ValueError, match=r"expected query \(T, E\) with E=16.*got \(3, 8\)"):
        mha(torch.randn(3, 8), kv, kv)
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        mha(q, kv, kv, attn_mask=torch.zeros(2 * H, 3, 4))  # (h, T, S) for one sequence, not (2 h, T, S)


def test_scaled_dot_score_keeps_unit_variance_logits():
    # Why 1/sqrt(d_k) (Section 3.2.1): for unit-variance q and k the dot product has variance d_k.
    q, k = torch.randn(1, 2000, 256), torch.randn(1, 1, 256)
    assert make_score("dot", 256)(q, k).var().item() == pytest.approx(256, rel=0.15)
    assert make_score("scaled_dot", 256)(q, k).var().item() == pytest.approx(1.0, rel=0.15)
    assert math.isclose(make_score("scaled_dot", 256).scale, 1 / 16)


def test_without_biases_equals_pytorch_without_biases():
    ours = MultiHeadAttention(16, 4, bias=False)
    ref = nn.MultiheadAttention(16, 4, bias=False, batch_first=True)
    assert ours.in_proj_bias is None and ours.out_proj.bias is None
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours(x, x, x)[0], ref(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
def test_attention_dropout_acts_in_training_only(fast):
    """Dropout on the weights: training outputs differ from eval and between calls; eval is
    deterministic and equal to a dropout-free module's."""
    ours = MultiHeadAttention(16, 4, dropout=0.5, fast=fast)
    plain = MultiHeadAttention(16, 4, fast=fast)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 16)
    ours.train()
    assert not torch.allclose(ours(x, x, x)[0], ours(x, x, x)[0])
    ours.eval()
    torch.testing.assert_close(ours(x, x, x)[0], plain.eval()(x, x, x)[0])


def test_single_head_attention_dropout_and_default_is_not_causal():
    attention = Attention("dot", 8, dropout=0.5)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    attention.train()
    assert not torch.allclose(attention(q, k)[0], attention(q, k)[0])
    attention.eval()
    _, weights = attention(q, k)
    assert (weights > 0).all()  # every query sees every key: nothing masked by default
    _, causal = attention(q, k, is_causal=True)
    assert (causal == 0).any()


def test_a_mask_per_head_may_also_come_as_b_h_t_s():
    """(B, H, T, S) is the (B * H, T, S) mask PyTorch takes, unflattened: the same result;
    a mask of any other shape is refused."""
    ours = MultiHeadAttention(E, H)
    x = torch.randn(2, 5, E)
    flat = torch.randn(2 * H, 5, 5)
    with torch.no_grad():
        expected = ours(x, x, x, attn_mask=flat)[0]
        torch.testing.assert_close(ours(x, x, x, attn_mask=flat.view(2, H, 5, 5))[0], expected)
        assert not torch.allclose(ours(x, x, x, attn_mask=flat.flip(0))[0], expected)  # the heads' order matters
    for shape in ((2 * H, 5, 4), (2, H, 5, 4), (H, 5, 5)):
        with pytest.raises(ValueError):
            ours(x, x, x, attn_mask=torch.zeros(shape))
