"""ResNet-18..152: V1.5 strides, zero_init_residual, small inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.models.resnet import VARIANTS, BasicBlock, Bottleneck
from zoo.models.factory import build_on_meta
from zoo.models import get_model, list_models

NAMES = list_models("resnet*")


def _reference(name: str, **kwargs) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


def test_all_variants_registered():
    assert NAMES == sorted(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])


@pytest.mark.parametrize("name", NAMES)
def test_stages_follow_table_1(name: str):
    model = build_on_meta(get_model, name=name)
    variant = VARIANTS[name]
    stages = model.stages()
    assert [n for n, _ in stages] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert tuple(len(stage) for _, stage in stages[1:5]) == variant.layers
    assert all(isinstance(b, variant.block) for b in _blocks(model))
    assert model.num_features == 512 * variant.block.expansion == model.fc.in_features


def test_bottleneck_strides_on_its_3x3_conv():
    # V1.5: the first block of layer2..layer4 downsamples in conv2 (3x3), not conv1 (1x1).
    model = build_on_meta(get_model, name="resnet50")
    for i, stride in zip(range(1, 5), (1, 2, 2, 2)):
        first = getattr(model, f"layer{i}")[0]
        assert (first.conv1.stride, first.conv2.stride) == ((1, 1), (stride, stride))
        assert first.downsample[0].stride == (stride, stride)  # projection: 64 -> 256 in layer1 too
        assert first.downsample[0].kernel_size == (1, 1)


def test_basic_blocks_project_only_when_the_shape_changes():
    model = build_on_meta(get_model, name="resnet34")
    with_projection = [name for name, m in model.named_modules() if isinstance(m, BasicBlock) and m.downsample]
    assert with_projection == ["layer2.0", "layer3.0", "layer4.0"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_residual_starts_every_block_as_its_shortcut(name: str):
    model = get_model(name, zero_init_residual=True).eval()
    last = "bn2" if name == "resnet18" else "bn3"
    zeroed = sorted(n for n, p in model.named_parameters() if n.endswith(".weight") and not p.any())
    blocks = [n for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert zeroed == sorted(f"{n}.{last}.weight" for n in blocks)
    assert len(zeroed) == sum(VARIANTS[name].layers)
    other_norms = [m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not n.endswith(last)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in other_norms)

    def block_outputs_equal_shortcuts() -> list[bool]:
        same = []

        def hook(block, inputs, output):
            x = inputs[0]
            shortcut = x if block.downsample is None else block.downsample(x)
            same.append(torch.equal(output, torch.relu(shortcut)))

        handles = [b.register_forward_hook(hook) for b in _blocks(model)]
        with torch.no_grad():
            model(torch.randn(2, 3, 32, 32))
        for h in handles:
            h.remove()
        return same

    assert block_outputs_equal_shortcuts() == [True] * sum(VARIANTS[name].layers)
    for block in _blocks(model):  # the default init: every residual branch contributes
        nn.init.ones_(block.last_norm.weight)
    assert not any(block_outputs_equal_shortcuts())


def test_small_input_single_channel_keeps_resolution():
    model = get_model("resnet18", num_classes=10, in_channels=1, small_input=True).eval()
    x = torch.randn(2, 1, 32, 32)
    seen = {}
    model.layer1.register_forward_pre_hook(lambda _, inputs: seen.update(layer1=inputs[0].shape))
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        assert model.forward_features(x).shape == (2, 512, 4, 4)  # unpooled
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 512)
    assert seen["layer1"] == (2, 64, 32, 32)  # the default stem would leave 8x8
    assert model.conv1.weight.shape == (64, 1, 3, 3) and model.conv1.stride == (1, 1)
    stem = dict(model.stages())["stem"]
    with torch.no_grad():
        assert stem(x).shape == (2, 64, 32, 32)


@pytest.mark.parametrize("name", ["resnet18", "resnet152"])
def test_small_input_keeps_state_dict_keys(name: str):
    ours = build_on_meta(get_model, name=name, small_input=True)
    ref = build_on_meta(_reference, name=name)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    ref_shapes = {k: v.shape for k, v in ref.state_dict().items()}
    assert ours_shapes.pop("conv1.weight") == (64, 3, 3, 3) and ref_shapes.pop("conv1.weight") == (64, 3, 7, 7)
    assert ours_shapes == ref_shapes


def test_input_size_checks():
    # Every conv and the max pool are padded: torchvision's min_size is (1, 1).
    ref = _reference("resnet18").eval()
    model = get_model("resnet18").eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    assert model.min_image_size == 1
    x = torch.randn(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 3, >=1, >=1\)"):
        model(torch.randn(1, 3, 0, 0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
