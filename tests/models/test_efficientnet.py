"""EfficientNet B0-B7: resolutions, widths, stochastic depth, SE, small inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.layers.squeeze_excitation import SqueezeExcitation
from zoo.layers.stochastic_depth import stochastic_depth
from zoo.models.efficientnet import MBConv, round_filters
from zoo.models.factory import build_on_meta
from zoo.models import get_model, list_models

VARIANTS = list_models("efficientnet_b*")
RESOLUTIONS = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "b4": 380, "b5": 456, "b6": 528, "b7": 600}


def _reference(name: str, **kwargs) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def test_all_variants_registered():
    assert VARIANTS == [f"efficientnet_b{i}" for i in range(8)]


@pytest.mark.parametrize("name", VARIANTS)
def test_default_image_size_is_the_paper_resolution(name: str):
    model = build_on_meta(get_model, name=name)
    assert model.default_image_size == RESOLUTIONS[name.removeprefix("efficientnet_")]


@pytest.mark.parametrize(
    ("channels", "width_mult", "expected"),
    [(32, 1.0, 32), (32, 1.1, 32), (16, 1.1, 16), (40, 1.1, 48), (112, 1.1, 120), (1280, 1.1, 1408), (24, 1.4, 32)],
)
def test_round_filters(channels: int, width_mult: float, expected: int):
    assert round_filters(channels, width_mult) == expected
    assert expected % 8 == 0


@pytest.mark.parametrize("name", VARIANTS)
def test_stochastic_depth_rate_grows_linearly(name: str):
    model = build_on_meta(get_model, name=name)
    rates = [m.stochastic_depth.p for m in model.modules() if isinstance(m, MBConv)]
    n = len(rates)
    assert rates == pytest.approx([0.2 * i / n for i in range(n)])


def test_stochastic_depth_zeroes_or_rescales_whole_rows_in_training_only():
    block = MBConv(16, 16, expand_ratio=6, kernel_size=3, stride=1, drop_prob=0.5).train()
    x = torch.randn(32, 16, 6, 6)
    with torch.no_grad():
        branch = block.block(x)  # training-mode BN: the same batch gives the same branch
        delta = block(x) - x
    dropped = delta.flatten(1).abs().amax(1) == 0
    kept = ~dropped
    assert 0 < dropped.sum() < len(x)  # both outcomes occur
    torch.testing.assert_close(delta[kept], branch[kept] / 0.5)

    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.block(x))
        torch.testing.assert_close(block(x), block(x))


def test_stochastic_depth_function_keeps_the_expectation():
    x = torch.ones(20_000, 3)
    y = stochastic_depth(x, p=0.3, mode="row")
    assert y[:, 0].unique().tolist() == pytest.approx([0.0, 1 / 0.7])  # rows dropped or rescaled
    assert torch.equal(y, y[:, :1].expand_as(y))  # one draw per row
    assert y.mean().item() == pytest.approx(1.0, abs=0.03)
    assert torch.equal(stochastic_depth(x, p=0.3, training=False), x)


def test_model_is_stochastic_in_training_and_deterministic_in_eval():
    model = get_model("efficientnet_b0", num_classes=10, dropout=0.0, small_input=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(x), model(x))  # only stochastic depth is random here
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_squeeze_excitation_gate():
    se = SqueezeExcitation(24, 6)
    x = torch.randn(2, 24, 5, 7)
    gate = se.gate(x)
    assert gate.shape == (2, 24, 1, 1)
    assert ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(se(x), gate * x)


def test_mbconv_squeezes_to_a_quarter_of_its_input_channels():
    model = build_on_meta(get_model, name="efficientnet_b0")
    block = model.features[2][0]  # MBConv6 24 <- 16: hidden 96, SE to 16 / 4 = 4
    se = next(m for m in block.modules() if isinstance(m, SqueezeExcitation))
    assert (se.fc1.in_channels, se.fc1.out_channels) == (96, 4)
    gate = se.gate(torch.empty(2, 96, 56, 56, device="meta"))
    assert gate.shape == (2, 96, 1, 1)


def test_small_input_single_channel():
    model = get_model("efficientnet_b0", num_classes=10, in_channels=1, small_input=True).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        assert model.features(x).shape[-2:] == (2, 2)  # a stride-2 stem would leave 1x1


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b7"])
def test_small_input_keeps_state_dict_layout(name: str):
    ours = build_on_meta(get_model, name=name, small_input=True)
    ref = build_on_meta(_reference, name=name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_input_size_checks():
    # Every layer is "same"-padded, so any size >= 1 is accepted (torchvision: min_size (1, 1)).
    model = get_model("efficientnet_b0").eval()
    assert model.min_image_size == 1
    with torch.no_grad():
        assert model(torch.randn(1, 3, 1, 1)).shape == (1, 1000)
    with pytest.raises(ValueError, match=r"\(B, 3, >=1, >=1\)"):
        model(torch.randn(1, 3, 0, 0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
