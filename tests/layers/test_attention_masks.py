"""Masks and biases read as PyTorch reads them (bool, float), or refused in one line (other dtypes).

Every public function that takes a mask or a bias is here, with the reading its docstring
documents (the table in docs/attention.md):

- the functions of ``zoo.layers.attention`` and the Transformer's layers read bool ``True`` =
  masked out and add a float, as ``nn.MultiheadAttention`` does; compared with it, or with
  ``F.scaled_dot_product_attention`` given ``~mask`` (its bool reading is the opposite);
- ``zoo.models.seq2seq.masked_softmax`` reads bool ``True`` = may attend, as
  ``F.scaled_dot_product_attention`` does, and refuses a float;
- ``src_mask`` of the sequence-to-sequence models is bool only (``True`` at real tokens).

Values and gradients (of the inputs, the parameters and a float mask) are compared, with
random inputs and random masks that leave one query no key at all and another one key only.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo import get_model
from zoo.layers.attention import (
    Attention, MultiHeadAttention, attention_bias, causal_mask, check_bool_mask, check_mask_dtypes, masked_softmax,
    scaled_dot_product_attention_ref,
)  # fmt: skip
from zoo.models import seq2seq
from zoo.models.transformer import (
    TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
)  # fmt: skip

INF = float("-inf")
INT_DTYPES = [torch.int64, torch.uint8]
E, H = 8, 2


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every tensor here is tiny."""


def _blocked(t: int, s: int, *lead: int) -> torch.Tensor:
    """A random bool mask (``True`` = masked out) of shape ``(*lead, t, s)``: query 1 has no key
    at all, query 2 exactly one, the others a random mix."""
    blocked = torch.rand(*lead, t, s) < 0.4
    blocked[..., 1, :] = True
    blocked[..., 2, :] = True
    blocked[..., 2, s - 2] = False
    blocked[..., 0, 0] = False  # query 0 sees key 0 and a random mix of the others
    return blocked


def _as_float(blocked: torch.Tensor) -> torch.Tensor:
    """The float bias equivalent to ``blocked`` (0 / -inf) plus a random finite bias, so that
    adding the bias matters too."""
    return torch.randn(blocked.shape).masked_fill(blocked, INF)


def _float(mask: torch.Tensor, kind: str) -> torch.Tensor:
    """``mask`` (bool, ``True`` = masked out) as it is (``kind="bool"``) or in its float form."""
    return mask if kind == "bool" else _as_float(mask)


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask (``True`` = masked out) as 0 / -inf, a float one as it is: to combine masks
    for PyTorch's functions without our code."""
    return torch.zeros(mask.shape).masked_fill(mask, INF) if mask.dtype == torch.bool else mask


def _probe(outputs) -> torch.Tensor:
    """A scalar whose gradient differs from element to element (a plain sum hides permutations)."""
    return sum((y * torch.linspace(-1.0, 2.0, y.numel()).view_as(y)).sum() for y in outputs if y is not None)


def _run(fn, module: nn.Module | None = None, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    """``fn(**tensors)``'s outputs and the gradients of a probe of them with respect to each
    floating-point tensor (a float mask included) and each parameter of ``module``."""
    leaves = {k: t.detach().clone().requires_grad_(t.is_floating_point()) for k, t in tensors.items()}
    if module is not None:
        module.zero_grad()
    outputs = fn(**leaves)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    _probe(outputs).backward()
    result = {f"out{i}": y.detach() for i, y in enumerate(outputs) if y is not None}
    result.update({f"d_{k}": t.grad for k, t in leaves.items() if t.is_floating_point()})
    if module is not None:
        result.update({f"d_{k}": p.grad.clone() for k, p in module.named_parameters()})
    return result


def _assert_same(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.isfinite(value).all(), key  # NaN would also fail assert_close; say where
        torch.testing.assert_close(actual[key], value, rtol=1e-5, atol=1e-5, msg=lambda m: f"{key}: {m}")


def _sdpa(q, k, v, mask):
    """PyTorch's attention with a mask in our reading: its bool reading is ``True`` = may attend."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=~mask if mask.dtype == torch.bool else mask)


# ------------------------------------------------------------------ the bug of issue #31


def test_causal_mask_as_bias_gives_future_keys_exactly_zero_weight():
    """The reported bug: ``causal_mask(3)`` given as ``bias`` was added as 0/1 numbers, so the
    first query's future keys got weights 0.51 and 0.23."""
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 5)
    out, weights = scaled_dot_product_attention_ref(q, k, v, bias=causal_mask(3))
    assert weights[0].triu(1).eq(0.0).all()  # exactly zero, not small
    assert weights[0, 0].tolist() == [1.0, 0.0, 0.0]  # the first query sees only itself
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    expected = _run(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q=q, k=k, v=v)
    _assert_same(_run(lambda q, k, v: scaled_dot_product_attention_ref(q, k, v, causal_mask(3))[0], q=q, k=k, v=v),
                 expected)  # fmt: skip


# ------------------------------------------------------------------ the reference attention and masked_softmax


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_reference_attention_equals_pytorch(kind):
    """Values and gradients of q, k, v (and of a float bias) equal ``F.scaled_dot_product_attention``
    given the same mask in its reading; the query with no key gets zeros, as there."""
    q, k, v = torch.randn(2, H, 5, 4), torch.randn(2, H, 6, 4), torch.randn(2, H, 6, 3)
    blocked = _blocked(5, 6, 2, H)
    mask = blocked if kind == "bool" else _as_float(blocked)
    ours = lambda q, k, v, mask: scaled_dot_product_attention_ref(q, k, v, bias=mask)[0]  # noqa: E731
    actual = _run(ours, q=q, k=k, v=v, mask=mask)
    _assert_same(actual, _run(_sdpa, q=q, k=k, v=v, mask=mask))
    assert actual["out0"][:, :, 1].eq(0.0).all()  # no key: a zero output
    if kind == "float":
        assert actual["d_mask"].abs().sum() > 0 and actual["d_mask"][:, :, 1].eq(0.0).all()
    # The mask matters: without it, or inverted, the result is another one.
    assert not torch.allclose(scaled_dot_product_attention_ref(q, k, v)[0], actual["out0"])
    inverted = ~blocked if kind == "bool" else _as_float(~blocked)
    assert not torch.allclose(scaled_dot_product_attention_ref(q, k, v, bias=inverted)[0], actual["out0"])


def test_a_bool_mask_and_its_float_form_give_the_same_weights():
    scores = torch.randn(3, 4, 6)
    blocked = _blocked(4, 6, 3)
    as_float = torch.zeros(blocked.shape).masked_fill(blocked, INF)
    weights = masked_softmax(scores, blocked)
    torch.testing.assert_close(weights, masked_softmax(scores, as_float), rtol=0, atol=0)
    torch.testing.assert_close(masked_softmax(scores, as_float.double()), weights)  # cast to the scores' dtype
    expected = torch.softmax(scores.masked_fill(blocked, INF), dim=-1).nan_to_num(0.0)
    torch.testing.assert_close(weights, expected)
    assert weights[:, 1].eq(0.0).all() and weights[:, 2, 4].eq(1.0).all()  # no key; one key: all the weight


def test_masked_softmax_with_a_dead_row_has_zero_gradients_not_nan():
    """The softmax over a row of -inf is NaN; zeroing the weights afterwards leaves NaN in
    the backward pass, and it reached every key's gradient through the scores."""
    scores = torch.randn(2, 4, 5, requires_grad=True)
    bias = torch.randn(4, 5).masked_fill(_blocked(4, 5), INF).requires_grad_()
    weights = masked_softmax(scores, bias)
    _probe([weights]).backward()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(bias.grad).all()
    assert scores.grad[:, 1].eq(0.0).all() and bias.grad[1].eq(0.0).all()
    assert scores.grad[:, 0].abs().sum() > 0


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_integer_biases_are_refused(dtype):
    q = torch.randn(1, 3, 4)
    bias = causal_mask(3).to(dtype)
    message = rf"bias must be bool \(True = masked out\) or floating point \(added to the scores\), got {dtype}"
    with pytest.raises(TypeError, match=message):
        scaled_dot_product_attention_ref(q, q, q, bias=bias)
    with pytest.raises(TypeError, match=message):
        masked_softmax(torch.randn(3, 3), bias)
    with pytest.raises(RuntimeError, match="Expected attn_mask dtype to be bool or float"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=bias)  # PyTorch refuses it too


# ------------------------------------------------------------------ attention_bias, causal_mask, check_*


def test_attention_bias_reads_bool_as_masked_out_and_adds_floats():
    padding = torch.tensor([[False, True, False], [False, False, True]])
    float_mask = torch.randn(4, 3)
    bias = attention_bias(2, H, 4, 3, key_padding_mask=padding, attn_mask=float_mask)
    assert bias.shape == (2, 1, 4, 3)
    expected = float_mask.expand(2, 1, 4, 3).masked_fill(padding.view(2, 1, 1, 3), INF)
    torch.testing.assert_close(bias, expected, rtol=0, atol=0)
    float_padding = torch.zeros(2, 3).masked_fill(padding, INF)
    assert torch.equal(attention_bias(2, H, 4, 3, key_padding_mask=float_padding, attn_mask=float_mask), bias)
    half = attention_bias(2, H, 4, 3, attn_mask=causal_mask(4, 3), dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(torch.isneginf(half[0, 0]), causal_mask(4, 3))


@pytest.mark.parametrize("name", ["key_padding_mask", "attn_mask"])
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_attention_bias_refuses_integer_masks(name, dtype):
    masks = dict(key_padding_mask=torch.zeros(2, 3, dtype=torch.bool), attn_mask=torch.zeros(4, 3))
    masks[name] = masks[name].to(dtype)
    with pytest.raises(TypeError, match=rf"^{name} must be bool \(True = masked out\).* got {dtype}$"):
        attention_bias(2, H, 4, 3, **masks)


def test_check_helpers_name_the_argument_and_its_dtype():
    check_mask_dtypes(a=None, b=torch.zeros(2, dtype=torch.bool), c=torch.zeros(2, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"^c must be bool .* got torch.complex64$"):
        check_mask_dtypes(b=torch.zeros(2, dtype=torch.bool), c=torch.zeros(2, dtype=torch.complex64))
    check_bool_mask(torch.ones(2, dtype=torch.bool), "src_mask", "True at real tokens")
    with pytest.raises(TypeError, match=r"^src_mask must be a bool tensor \(True at real tokens\), got torch.float32$"):
        check_bool_mask(torch.ones(2), "src_mask", "True at real tokens")


def test_causal_mask_is_true_where_masked_out():
    assert causal_mask(3).dtype == torch.bool
    assert causal_mask(2, 3).tolist() == [[False, True, True], [False, False, True]]


# ------------------------------------------------------------------ single-head Attention


# (key_padding_mask, attn_mask): each bool or float
MASK_KINDS = {
    "bool": ("bool", "bool"),
    "float": ("float", "float"),
    "bool padding, float attn_mask": ("bool", "float"),
    "float padding, bool attn_mask": ("float", "bool"),
}


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_single_head_attention_equals_pytorch(kind):
    """``Attention("scaled_dot")`` with both masks: values and gradients equal
    ``F.scaled_dot_product_attention`` given the two masks combined."""
    attention = Attention("scaled_dot", 4)
    q, k, v = torch.randn(3, 5, 4), torch.randn(3, 6, 4), torch.randn(3, 6, 2)
    padding = torch.rand(3, 6) < 0.3
    padding[:, 0] = False
    padding[2] = True  # the third sequence: every key padded
    blocked = _blocked(5, 6)
    kpm, am = _float(padding, MASK_KINDS[kind][0]), _float(blocked, MASK_KINDS[kind][1])

    def ours(q, k, v, kpm, am):
        return attention(q, k, v, key_padding_mask=kpm, attn_mask=am)[0]

    def theirs(q, k, v, kpm, am):
        if kpm.dtype == am.dtype == torch.bool:
            return _sdpa(q, k, v, kpm[:, None, :] | am)
        return _sdpa(q, k, v, _additive(kpm)[:, None, :] + _additive(am))

    actual, expected = _run(ours, q=q, k=k, v=v, kpm=kpm, am=am), _run(theirs, q=q, k=k, v=v, kpm=kpm, am=am)
    _assert_same(actual, expected)
    assert actual["out0"][2].eq(0.0).all() and actual["out0"][:, 1].eq(0.0).all()
    with pytest.raises(TypeError, match="key_padding_mask must be bool .* got torch.int64"):
        attention(q, k, v, key_padding_mask=padding.long())
    with pytest.raises(TypeError, match="attn_mask must be bool .* got torch.uint8"):
        attention(q, k, v, attn_mask=blocked.to(torch.uint8))


# ------------------------------------------------------------------ MultiHeadAttention vs nn.MultiheadAttention


def _mha_pair() -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    ref = nn.MultiheadAttention(E, H, batch_first=True)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "bias" in name:
                p.normal_()
    ours = MultiHeadAttention(E, H)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref.train()  # train: PyTorch's inference fast path is not what is compared


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask is deprecated")
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_multi_head_attention_equals_pytorch(kind, fast):
    """Outputs, and gradients of query, key/value, float masks and every parameter, equal
    ``nn.MultiheadAttention``'s, with a query that sees no key (PyTorch and ours: a zero head
    output, so ``W^O``'s bias) and one whole sequence padded."""
    ours, ref = _mha_pair()
    ours.fast = fast
    x, memory = torch.randn(3, 5, E), torch.randn(3, 6, E)
    padding = torch.rand(3, 6) < 0.3
    padding[:, 0] = False
    padding[1] = True
    blocked = _blocked(5, 6)
    kpm, am = _float(padding, MASK_KINDS[kind][0]), _float(blocked, MASK_KINDS[kind][1])

    def run(module):
        return lambda x, m, kpm, am: module(x, m, m, key_padding_mask=kpm, attn_mask=am, need_weights=False)[0]

    expected = _run(run(ref), ref, x=x, m=memory, kpm=kpm, am=am)
    actual = _run(run(ours), ours, x=x, m=memory, kpm=kpm, am=am)
    _assert_same(actual, expected)
    bias_out = ours.out_proj.bias.detach()
    torch.testing.assert_close(actual["out0"][1], bias_out.expand(5, E))  # every key padded
    torch.testing.assert_close(actual["out0"][:, 1], bias_out.expand(3, E))  # query 1 sees no key
    if fast:  # the weights (reference path) equal PyTorch's where a query sees a key (PyTorch: NaN elsewhere)
        with torch.no_grad():
            w = ours(x, memory, memory, key_padding_mask=kpm, attn_mask=am, need_weights=True)[1]
            w_ref = ref(x, memory, memory, key_padding_mask=kpm, attn_mask=am, need_weights=True)[1]
        alive = torch.isfinite(w_ref).all(-1)
        torch.testing.assert_close(w[alive], w_ref[alive], rtol=1e-5, atol=1e-6)
        assert w[~alive].eq(0.0).all() and (~alive)[1].all() and (~alive)[:, 1].all() and alive.any()


@pytest.mark.parametrize("name", ["key_padding_mask", "attn_mask"])
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_multi_head_attention_refuses_integer_masks_as_pytorch_does(name, dtype):
    ours, ref = _mha_pair()
    x = torch.randn(2, 3, E)
    mask = (torch.zeros(2, 3) if name == "key_padding_mask" else causal_mask(3)).to(dtype)
    for fast in (True, False):
        ours.fast = fast
        with pytest.raises(TypeError, match=rf"^{name} must be bool \(True = masked out\).* got {dtype}$"):
            ours(x, x, x, **{name: mask})
    with pytest.raises(TypeError, match=rf"^{name} must be bool"):  # attend() directly, projected heads
        q = torch.randn(2, H, 3, E // H)
        ours.attend(q, q, q, **{name: mask if name == "key_padding_mask" else mask.expand(2, H, 3, 3)})
    with pytest.raises(AssertionError, match=f"only bool and floating types of {name} are supported"):
        ref(x, x, x, **{name: mask})


# ------------------------------------------------------------------ the Transformer's layers


def _layer_pair(ours_class, ref_class):
    ref = ref_class(E, H, 16, dropout=0.0, batch_first=True).train()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    ours = ours_class(E, H, 16, dropout=0.0).train()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_encoder_layer_reads_masks_as_pytorch(kind):
    ours, ref = _layer_pair(TransformerEncoderLayer, nn.TransformerEncoderLayer)
    padding = torch.tensor([[False] * 5 + [True], [False] * 6])
    blocked = _blocked(6, 6)
    kpm, am = _float(padding, kind), _float(blocked, kind)

    def run(layer):
        return lambda x, kpm, am: layer(x, src_mask=am, src_key_padding_mask=kpm)

    x = torch.randn(2, 6, E)
    _assert_same(_run(run(ours), ours, x=x, kpm=kpm, am=am), _run(run(ref), ref, x=x, kpm=kpm, am=am))
    for name in ("src_mask", "src_key_padding_mask"):
        masks = dict(src_mask=blocked, src_key_padding_mask=padding)
        masks[name] = masks[name].long()
        with pytest.raises(TypeError, match=rf"^{name} must be bool .* got torch.int64$"):
            ours(x, **masks)
    with pytest.raises(TypeError, match=r"^key_padding_mask must be bool .* got torch.int64$"):
        TransformerEncoder([ours], None)(x, key_padding_mask=padding.long())


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_decoder_layer_reads_masks_as_pytorch(kind):
    ours, ref = _layer_pair(TransformerDecoderLayer, nn.TransformerDecoderLayer)
    tgt_padding = torch.tensor([[False] * 4 + [True], [False] * 5])
    memory_padding = torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    tgt_blocked = causal_mask(5) | (torch.rand(5, 5) < 0.3).tril(-1)  # causal, and some earlier keys
    memory_blocked = torch.rand(5, 6) < 0.3
    memory_blocked[:, 0] = False
    masks = dict(tgt_mask=tgt_blocked, memory_mask=memory_blocked, tgt_key_padding_mask=tgt_padding,
                 memory_key_padding_mask=memory_padding)  # fmt: skip
    masks = {name: _float(mask, kind) for name, mask in masks.items()}

    def run(layer):
        return lambda tgt, memory, **masks: layer(tgt, memory, **masks)

    tgt, memory = torch.randn(2, 5, E), torch.randn(2, 6, E)
    _assert_same(_run(run(ours), ours, tgt=tgt, memory=memory, **masks),
                 _run(run(ref), ref, tgt=tgt, memory=memory, **masks))  # fmt: skip
    for name, mask in masks.items():
        with pytest.raises(TypeError, match=rf"^{name} must be bool .* got torch.uint8$"):
            ours(tgt, memory, **{**masks, name: mask.to(torch.uint8)})
    wrong = memory_padding.long()
    kv = ours.multihead_attn.project_key_value(memory, memory)
    empty = torch.zeros(2, H, 0, E // H)
    decoder = TransformerDecoder([ours], None)
    for call in (
        lambda: ours.step(tgt[:, :1], (empty, empty), kv, wrong),
        lambda: decoder(tgt, memory, memory_key_padding_mask=wrong),
        lambda: decoder.step(tgt[:, :1], ((empty, empty),), (kv,), wrong),
    ):
        with pytest.raises(TypeError, match=r"^memory_key_padding_mask must be bool .* got torch.int64$"):
            call()


# ------------------------------------------------------------------ sequence-to-sequence models: src_mask


def _source():
    src = torch.randint(3, 11, (2, 5))
    src_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    return src.masked_fill(~src_mask, 0), src_mask, torch.randint(3, 11, (2, 4))


@pytest.mark.parametrize("name", ["transformer_small", "seq2seq_gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_seq2seq_models_refuse_a_src_mask_that_is_not_bool(name, dtype):
    """A float ``src_mask`` could be 1/0 or a 0/-inf bias, which read oppositely: the
    Transformer read a 0/-inf bias as "every real token is padding" without a word."""
    net = get_model(name, src_vocab_size=11, tgt_vocab_size=11).eval()
    src, src_mask, tgt_in = _source()
    wrong = src_mask.to(dtype) if dtype != torch.float32 else torch.zeros(src.shape).masked_fill(~src_mask, INF)
    message = rf"^src_mask must be a bool tensor \(True at real tokens, False at padding\), got {dtype}$"
    with torch.no_grad():
        memory = net.encode(src, src_mask)
        for call in (
            lambda: net(src, wrong, tgt_in),
            lambda: net.encode(src, wrong),
            lambda: net.init_state(memory, wrong),
            lambda: net.generate(src, wrong, max_len=3),
            lambda: net.generate(src, wrong, max_len=3, beam_size=2),
        ):
            with pytest.raises(TypeError, match=message):
                call()
        assert net(src, src_mask, tgt_in).isfinite().all()


def test_rnn_masked_softmax_reads_bool_as_may_attend_and_refuses_floats():
    """``zoo.models.seq2seq.masked_softmax``: bool ``True`` = may attend, the reading of
    ``F.scaled_dot_product_attention``, whose weights (with ``v`` the identity) it equals, a
    row with no key included (zeros, zero gradients); a float mask is refused."""
    scores = torch.randn(3, 4, 6)
    allowed = ~_blocked(4, 6, 3)

    def theirs(s):  # SDPA's weights: q = scores * sqrt(d), k = I, v = I
        eye = torch.eye(6).expand(3, 6, 6)
        return F.scaled_dot_product_attention(s * 6**0.5, eye, eye, attn_mask=allowed)

    actual = _run(lambda s: seq2seq.masked_softmax(s, allowed), s=scores)
    _assert_same(actual, _run(theirs, s=scores))
    assert actual["out0"][:, 1].eq(0.0).all() and actual["out0"][:, 2, 4].eq(1.0).all()
    with pytest.raises(TypeError, match=r"^mask must be a bool tensor \(True = may attend\), got torch.float32$"):
        seq2seq.masked_softmax(scores, allowed.float())
