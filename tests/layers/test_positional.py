"""Positional encodings: the sinusoidal table against Section 3.5's formula, and learned ones."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.layers.positional import (
    POSITIONAL, LearnedPositionalEmbedding, SinusoidalPositionalEncoding, make_positional, sinusoidal_table,
)  # fmt: skip


@pytest.mark.parametrize("pos", [0, 1, 7, 50, 999])
@pytest.mark.parametrize("two_i", [0, 2, 10, 62])
def test_sinusoidal_values_follow_the_formula(pos, two_i):
    d = 64
    table = sinusoidal_table(1000, d)
    angle = pos / 10000 ** (two_i / d)
    assert table[pos, two_i].item() == pytest.approx(math.sin(angle), abs=1e-5)  # PE(pos, 2i)
    assert table[pos, two_i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)  # PE(pos, 2i + 1)


def test_a_shift_is_a_rotation_of_each_pair():
    # Section 3.5: PE(pos + k) is a linear function of PE(pos), the same for every pos.
    d, k = 16, 5
    table = sinusoidal_table(40, d).double()
    pairs = table.view(40, d // 2, 2)  # (pos, i, [sin, cos])
    omega = 1.0 / torch.pow(torch.tensor(10000.0, dtype=torch.float64), torch.arange(0, d, 2).double() / d)
    c, s = torch.cos(k * omega), torch.sin(k * omega)
    shifted_sin = pairs[:-k, :, 0] * c + pairs[:-k, :, 1] * s  # sin(a + b) = sin a cos b + cos a sin b
    shifted_cos = pairs[:-k, :, 1] * c - pairs[:-k, :, 0] * s
    torch.testing.assert_close(torch.stack([shifted_sin, shifted_cos], -1), pairs[k:], atol=1e-5, rtol=0)


def test_sinusoidal_module_adds_the_table_at_an_offset():
    pe = SinusoidalPositionalEncoding(8, max_len=10)
    assert not list(pe.parameters()) and "table" not in pe.state_dict()  # fixed, not in checkpoints
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(pe(x), x + sinusoidal_table(4, 8))
    torch.testing.assert_close(pe(x, offset=3), x + sinusoidal_table(7, 8)[3:])
    # Past max_len the table is computed on the fly, with the same values.
    torch.testing.assert_close(pe(x, offset=9), x + sinusoidal_table(13, 8)[9:])
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        pe(torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="even width"):
        SinusoidalPositionalEncoding(7)


def test_learned_embedding_adds_its_rows_and_learns():
    pe = make_positional("learned", 8, max_len=6)
    assert isinstance(pe, LearnedPositionalEmbedding) and pe.weight.shape == (6, 8)
    x = torch.randn(2, 3, 8)
    out = pe(x, offset=2)
    torch.testing.assert_close(out, x + pe.weight[2:5])
    out.sum().backward()
    assert pe.weight.grad[2:5].abs().sum() > 0 and pe.weight.grad[[0, 1, 5]].abs().sum() == 0
    with pytest.raises(ValueError, match="max_len=6"):
        pe(torch.randn(1, 5, 8), offset=2)


def test_registry_names():
    assert POSITIONAL.names() == ["learned", "sinusoidal"]
