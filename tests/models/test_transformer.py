"""Transformer: layers equal to PyTorch's, parameter counts, masks, incremental decoding,
gradients, and learning the reversal task through zoo-train."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.cli.train import train
from zoo.errors import ConfigError
from zoo.layers.attention import causal_mask, set_fast_attention
from zoo.models.base import Seq2SeqModel
from zoo.models.transformer import Transformer, TransformerDecoderLayer, TransformerEncoderLayer
from zoo.models.factory import build_on_meta
from zoo.bench.profiling import count_params
from zoo.models import get_model, list_models

from tests.helpers import QUIET, assert_same_values_and_gradients, compose_config

PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every model here is tiny (the parameter counts are on meta)."""


def _expected_params(vocab: int, d: int, d_ff: int, layers: int) -> int:
    """The module docstring's formula: shared embeddings, post-norm (no final LayerNorms)."""
    encoder_layer = (4 * d * d + 4 * d) + (2 * d * d_ff + d_ff + d) + 2 * 2 * d
    decoder_layer = 2 * (4 * d * d + 4 * d) + (2 * d * d_ff + d_ff + d) + 3 * 2 * d
    return vocab * d + layers * (encoder_layer + decoder_layer)


def test_registered_variants():
    assert list_models("transformer*") == ["transformer_base", "transformer_big", "transformer_small"]
    model = build_on_meta(get_model, name="transformer_big")
    layer = model.encoder.layers[0]
    widths = (model.d_model, layer.self_attn.num_heads, layer.linear1.out_features, layer.dropout1.p)
    assert widths == (1024, 16, 4096, 0.3)
    assert (len(model.encoder.layers), len(model.decoder.layers)) == (6, 6)


@pytest.mark.parametrize(
    "name, d, d_ff, expected",
    [("transformer_base", 512, 2048, 63_082_496), ("transformer_big", 1024, 4096, 214_245_376)],
)
def test_param_counts_with_a_shared_37k_vocabulary(name, d, d_ff, expected):
    # Table 3 of the paper: 65M (base) and 213M (big); the docstring explains the gap.
    model = build_on_meta(get_model, name=name, src_vocab_size=37000, tgt_vocab_size=37000, share_embeddings=True)
    assert count_params(model) == _expected_params(37000, d, d_ff, 6) == expected


def test_embeddings_are_tied_and_optionally_shared():
    model = get_model("transformer_small", src_vocab_size=11, tgt_vocab_size=13)
    assert model.output_projection.weight is model.tgt_embedding.weight  # always (Section 3.4)
    assert model.src_embedding is not model.tgt_embedding
    shared = get_model("transformer_small", src_vocab_size=13, tgt_vocab_size=13, share_embeddings=True)
    assert shared.src_embedding is shared.tgt_embedding
    assert count_params(model) - count_params(shared) == 11 * model.d_model  # the source embedding
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        get_model("transformer_small", src_vocab_size=11, tgt_vocab_size=13, share_embeddings=True)
    pre = build_on_meta(get_model, name="transformer_base", norm_first=True)
    assert count_params(pre) == 63_082_496 + 2 * 2 * 512  # final LayerNorms of both stacks


# ------------------------------------------------------------------ layers equal to PyTorch's


def _padding(batch: int, length: int, lengths: list[int]) -> torch.Tensor:
    return torch.arange(length).expand(batch, length) >= torch.tensor(lengths).unsqueeze(1)  # True at padding


def _randomize_norms(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)


def _layer_pair(ours_class: type, ref_class: type, fast: bool, mode: str, **options) -> tuple[nn.Module, nn.Module]:
    """Our layer with the weights of PyTorch's (random LayerNorms), both in ``mode``; in
    training without dropout (so that the two can be compared), in eval with it (inactive)."""
    dropout = 0.1 if mode == "eval" else 0.0
    ref = ref_class(32, 4, 64, dropout=dropout, batch_first=True, **options)
    _randomize_norms(ref)
    ours = ours_class(32, 4, 64, dropout=dropout, **options)
    ours.load_state_dict(ref.state_dict(), strict=True)
    set_fast_attention(ours, fast)
    return ours.train(mode == "train"), ref.train(mode == "train")


LAYER_OPTIONS = {
    f"{activation}, {norm}": dict(activation=activation, norm_first=norm == "pre-norm")
    for activation in ("relu", "gelu")
    for norm in ("post-norm", "pre-norm")
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("options", LAYER_OPTIONS)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_encoder_layer_equals_pytorch(options, fast, mode):
    """Outputs and the gradients of the input and every parameter, with and without padding."""
    ours, ref = _layer_pair(TransformerEncoderLayer, nn.TransformerEncoderLayer, fast, mode, **LAYER_OPTIONS[options])
    x = torch.randn(3, 7, 32)
    padding = _padding(3, 7, [7, 4, 6])
    assert_same_values_and_gradients(ours, ref, x, src_key_padding_mask=padding)
    assert_same_values_and_gradients(ours, ref, x)
    with torch.no_grad():  # in eval, PyTorch takes its inference fast path here
        expected = ref(x, src_key_padding_mask=padding)
        torch.testing.assert_close(ours(x, src_key_padding_mask=padding), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("options", LAYER_OPTIONS)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_decoder_layer_equals_pytorch(options, fast, mode):
    """Outputs and the gradients of both inputs and every parameter, with all masks and with
    ``tgt_is_causal`` alone (ours builds the causal mask, PyTorch is given it)."""
    ours, ref = _layer_pair(TransformerDecoderLayer, nn.TransformerDecoderLayer, fast, mode, **LAYER_OPTIONS[options])
    tgt, memory = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    masks = dict(
        tgt_mask=causal_mask(5), tgt_key_padding_mask=_padding(3, 5, [5, 3, 4]),
        memory_key_padding_mask=_padding(3, 7, [7, 4, 6]), tgt_is_causal=True,
    )  # fmt: skip
    assert_same_values_and_gradients(ours, ref, tgt, memory, **masks)
    causal = dict(tgt_mask=causal_mask(5), tgt_is_causal=True)
    assert_same_values_and_gradients(ours, ref, tgt, memory, ref_kwargs=causal, tgt_is_causal=True)


# ------------------------------------------------------------------ the whole model


def _model(**kwargs) -> Transformer:
    options = dict(src_vocab_size=11, tgt_vocab_size=13, pad_idx=PAD, bos_idx=BOS, eos_idx=EOS, d_model=32,
                   num_heads=4, d_ff=64)  # fmt: skip
    return get_model("transformer_small", **{**options, **kwargs})


def _batch(src_lengths=(7, 4, 6), tgt_len=5):
    b, s = len(src_lengths), max(src_lengths)
    src_mask = ~_padding(b, s, list(src_lengths))
    src = torch.randint(3, 11, (b, s)).masked_fill(~src_mask, PAD)
    tgt_in = torch.cat([torch.full((b, 1), BOS), torch.randint(3, 13, (b, tgt_len - 1))], dim=1)
    return src, src_mask, tgt_in


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_source_padding_and_future_targets_are_masked(norm_first):
    model = _model(norm_first=norm_first).eval()
    src, src_mask, tgt_in = _batch()
    with torch.no_grad():
        logits = model(src, src_mask, tgt_in)
        assert logits.shape == (3, 5, 13) and torch.isfinite(logits).all()
        # Other tokens under the source padding: nothing changes.
        other_src = torch.where(src_mask, src, torch.randint(3, 11, src.shape))
        torch.testing.assert_close(model(other_src, src_mask, tgt_in), logits)
        # A changed target token at position 3 changes positions 3.. only (causal).
        other_tgt = tgt_in.clone()
        other_tgt[:, 3] = (tgt_in[:, 3] - 2) % 10 + 3
        changed = model(src, src_mask, other_tgt)
        torch.testing.assert_close(changed[:, :3], logits[:, :3])
        assert not torch.allclose(changed[:, 3:], logits[:, 3:])
        # The mask matters: unmasking the padding changes the outputs of the padded rows.
        assert not torch.allclose(model(other_src, torch.ones_like(src_mask), tgt_in)[1], logits[1])


def test_fast_and_reference_attention_give_the_same_model():
    model = _model().eval()
    src, src_mask, tgt_in = _batch()
    with torch.no_grad():
        fast = model(src, src_mask, tgt_in)
        set_fast_attention(model, False)
        torch.testing.assert_close(model(src, src_mask, tgt_in), fast, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"norm_first": True, "positional": "learned", "share_embeddings": True}])
def test_every_parameter_gets_a_gradient(options):
    if options.get("share_embeddings"):
        options = {**options, "src_vocab_size": 13}
    model = _model(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, **options).train()
    src, src_mask, tgt_in = _batch()
    model(src, src_mask, tgt_in).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_decode_step_equals_the_teacher_forced_pass(norm_first):
    model = _model(norm_first=norm_first).eval()
    src, src_mask, tgt_in = _batch()
    with torch.no_grad():
        expected = model(src, src_mask, tgt_in)  # (B, T, V)
        state = model.init_state(model.encode(src, src_mask), src_mask)
        steps = []
        for t in range(tgt_in.shape[1]):
            logits, state, attention = model.decode_step(tgt_in[:, t], state)
            steps.append(logits)
            assert attention.shape == (3, 7)
            torch.testing.assert_close(attention.sum(-1), torch.ones(3))
            assert torch.all(attention[~src_mask] == 0.0)  # no attention on source padding
    torch.testing.assert_close(torch.stack(steps, dim=1), expected, rtol=1e-5, atol=1e-5)
    assert [k.shape for k, _ in state["cache"]] == [(3, 4, 5, 8)] * 2  # (B, h, T, d_k) per layer
    assert [k.shape for k, _ in state["memory_kv"]] == [(3, 4, 7, 8)] * 2


def test_reorder_state_selects_along_the_batch():
    model = _model().eval()
    src, src_mask, tgt_in = _batch()
    index = torch.tensor([2, 2, 0])
    with torch.no_grad():
        state = model.init_state(model.encode(src, src_mask), src_mask)
        for t in range(2):
            _, state, _ = model.decode_step(tgt_in[:, t], state)
        logits, _, attention = model.decode_step(tgt_in[index, 2], model.reorder_state(state, index))
        # The same as decoding the reordered batch from the start.
        state2 = model.init_state(model.encode(src[index], src_mask[index]), src_mask[index])
        for t in range(3):
            expected, state2, expected_attention = model.decode_step(tgt_in[index, t], state2)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attention, expected_attention, rtol=1e-5, atol=1e-5)


def test_positions_beyond_max_len():
    model = _model(max_len=4).eval()
    src, src_mask, tgt_in = _batch(tgt_len=6)  # sinusoidal: the table grows on the fly
    with torch.no_grad():
        assert model(src, src_mask, tgt_in).shape == (3, 6, 13)
    learned = _model(max_len=4, positional="learned")
    with pytest.raises(ValueError, match="max_len=4"):
        learned(src, src_mask, tgt_in)


def test_the_activation_is_chosen_by_name():
    """Every layer of the model gets the activation asked for; a name PyTorch's layers do
    not accept is a configuration error listing the two that they do."""
    model = _model(activation="gelu")
    assert {layer.activation for layer in (*model.encoder.layers, *model.decoder.layers)} == {F.gelu}
    assert {layer.activation for layer in _model().encoder.layers} == {F.relu}  # the paper's, by default
    for build in (lambda: _model(activation="swish"), lambda: TransformerDecoderLayer(32, 4, 64, activation="tanh")):
        with pytest.raises(ConfigError, match=r"^Unknown Transformer FFN activation '\w+'\. Available: gelu, relu$"):
            build()


def test_bad_inputs_raise_value_error():
    model = _model()
    src, src_mask, tgt_in = _batch()
    with pytest.raises(ValueError, match=r"src_mask \(B, S\)"):
        model(src, src_mask[:, :3], tgt_in)
    with pytest.raises(ValueError, match=r"tgt_in \(B, T\) with B=3"):
        model(src, src_mask, tgt_in[:2])
    with pytest.raises(ValueError, match="not divisible"):
        _model(num_heads=5)


def test_keeps_the_seq2seq_contract_and_generates():
    model = _model().eval()
    assert isinstance(model, Seq2SeqModel)
    facts = (model.src_vocab_size, model.tgt_vocab_size, model.pad_idx, model.bos_idx, model.eos_idx)
    assert facts == (11, 13, 0, 1, 2)
    src, src_mask, _ = _batch()
    greedy = model.generate(src, src_mask, max_len=6)
    assert greedy.tokens.shape[0] == 3 and greedy.attention.shape[::2] == (3, 7)
    beam = model.generate(src, src_mask, max_len=6, beam_size=3)
    assert beam.tokens.shape[0] == 3 and torch.all(beam.scores <= 0)  # log-probabilities


def test_learns_to_reverse_sequences_through_zoo_train(tmp_path):
    cfg = compose_config(
        "train", tmp_path,
        ["experiment=transformer_small_reverse", "trainer.max_epochs=5", "data.train_size=4000", "data.max_len=6",
         "data.val_size=200", "data.test_size=300", "~logger", *QUIET],
    )  # fmt: skip
    train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["model"] == "transformer_small" and record["data"] == "reverse"
    assert record["test"]["test/exact_match"] > 0.9
