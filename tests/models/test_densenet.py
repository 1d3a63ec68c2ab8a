"""DenseNet-121..201: widths, memory_efficient, small inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.models.densenet import VARIANTS, DenseLayer
from zoo.models.factory import build_on_meta
from zoo.models import get_model, list_models

NAMES = list_models("densenet*")
# Width of the pooled features: blocks add L k maps, transitions halve them.
NUM_FEATURES = {"densenet121": 1024, "densenet161": 2208, "densenet169": 1664, "densenet201": 1920}


def _reference(name: str, **kwargs) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def test_all_variants_registered():
    assert NAMES == ["densenet121", "densenet161", "densenet169", "densenet201"]


@pytest.mark.parametrize("name", NAMES)
def test_widths_follow_growth_rate_and_compression(name: str):
    model = build_on_meta(get_model, name=name)
    k, config = VARIANTS[name].growth_rate, VARIANTS[name].block_config
    assert model.features.conv0.out_channels == 2 * k
    width = 2 * k
    for i, num_layers in enumerate(config, start=1):
        block = getattr(model.features, f"denseblock{i}")
        # Layer l sees k_0 + k (l - 1) maps, has a 4k-wide bottleneck and adds k maps.
        assert [layer.norm1.num_features for layer in block.values()] == [width + k * j for j in range(num_layers)]
        assert all((layer.conv1.out_channels, layer.conv2.out_channels) == (4 * k, k) for layer in block.values())
        width += num_layers * k
        if i < len(config):
            transition = getattr(model.features, f"transition{i}")
            assert transition.conv.out_channels == width // 2
            width //= 2
    assert model.num_features == width == NUM_FEATURES[name]
    names = [n for n, _ in model.stages()]
    assert names == ["stem", "denseblock1", "denseblock2", "denseblock3", "denseblock4", "head"]


def _pair(**kwargs) -> tuple[nn.Module, nn.Module]:
    efficient = get_model("densenet121", memory_efficient=True, **kwargs)
    plain = get_model("densenet121", **kwargs)
    plain.load_state_dict(efficient.state_dict(), strict=True)
    return efficient, plain


def test_memory_efficient_gives_the_same_outputs_gradients_and_statistics():
    efficient, plain = _pair(num_classes=10)
    probe = efficient.features.denseblock2.denselayer3.conv1
    calls = []
    probe.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    results = []
    for model in (efficient, plain):
        model.train()
        xi = x.clone().requires_grad_()
        out = model(xi)
        out.square().mean().backward()
        results.append((out, xi.grad, model))
    (out_e, dx_e, _), (out_p, dx_p, _) = results
    # The bottleneck ran twice in the memory-efficient model: forward, then recomputation.
    assert len(calls) == 2
    torch.testing.assert_close(out_e, out_p, rtol=0, atol=0)
    torch.testing.assert_close(dx_e, dx_p)
    grads_e = {n: p.grad for n, p in efficient.named_parameters()}
    for n, p in plain.named_parameters():
        torch.testing.assert_close(grads_e[n], p.grad, msg=lambda m, n=n: f"{n}: {m}")
    # The recomputation must not update the batch-norm running statistics a second time.
    buffers_e = dict(efficient.named_buffers())
    for n, b in plain.named_buffers():
        torch.testing.assert_close(buffers_e[n], b, msg=lambda m, n=n: f"{n}: {m}")


def test_memory_efficient_skips_recomputation_without_gradients():
    efficient, plain = _pair(small_input=True, in_channels=1, num_classes=10)
    probe = efficient.features.denseblock1.denselayer1.conv1
    calls = []
    probe.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(efficient.eval()(x), plain.eval()(x), rtol=0, atol=0)
    assert len(calls) == 1


def test_memory_efficient_checkpoints_behind_a_frozen_stem():
    efficient, plain = _pair(small_input=True, num_classes=10)
    probe = efficient.features.denseblock1.denselayer1.conv1
    calls = []
    probe.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 8, 8)
    for model in (efficient, plain):
        for p in model.stages()[0][1].parameters():
            p.requires_grad_(False)
        model(x).square().mean().backward()
    assert len(calls) == 2  # the first layer's input does not require grad, yet it is recomputed
    grads_e = {n: p.grad for n, p in efficient.named_parameters()}
    for n, p in plain.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads_e[n], p.grad, msg=lambda m, n=n: f"{n}: {m}")
        else:
            assert p.grad is None and grads_e[n] is None


def test_drop_rate_drops_new_maps_in_training_only():
    model = get_model("densenet121", drop_rate=0.5, small_input=True, num_classes=10)
    plain = get_model("densenet121", small_input=True, num_classes=10)
    plain.load_state_dict(model.state_dict(), strict=True)
    assert all(layer.drop_rate == 0.5 for layer in model.modules() if isinstance(layer, DenseLayer))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), plain.eval()(x), rtol=0, atol=0)
        model.train()
        assert not torch.allclose(model(x), model(x))


def test_small_input_single_channel_keeps_resolution():
    model = get_model("densenet121", num_classes=10, in_channels=1, small_input=True).eval()
    x = torch.randn(2, 1, 32, 32)
    seen = {}
    model.features.denseblock1.register_forward_pre_hook(lambda _, inputs: seen.update(block1=inputs[0].shape))
    model.features.norm5.register_forward_pre_hook(lambda _, inputs: seen.update(norm5=inputs[0].shape))
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    assert seen["block1"] == (2, 64, 32, 32)  # the default stem would leave 8x8
    assert seen["norm5"] == (2, 1024, 4, 4)
    assert model.features.conv0.weight.shape == (64, 1, 3, 3)
    # Three 2x2 pools need 8 px at the first block.
    assert model.min_image_size == 8
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)
    with pytest.raises(ValueError, match=r"\(B, 1, >=8, >=8\)"):
        model(torch.randn(1, 1, 7, 7))


@pytest.mark.parametrize("name", ["densenet121", "densenet161"])
def test_small_input_keeps_state_dict_keys(name: str):
    ours = build_on_meta(get_model, name=name, small_input=True)
    ref = build_on_meta(_reference, name=name)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    ref_shapes = {k: v.shape for k, v in ref.state_dict().items()}
    k = VARIANTS[name].growth_rate
    assert ours_shapes.pop("features.conv0.weight") == (2 * k, 3, 3, 3)
    assert ref_shapes.pop("features.conv0.weight") == (2 * k, 3, 7, 7)
    assert ours_shapes == ref_shapes


def test_input_size_checks():
    # 29 px -> 15 -> 8 at the first block -> 4 -> 2 -> 1 (torchvision's min_size is (29, 29)).
    model = get_model("densenet121").eval()
    assert model.min_image_size == 29
    with torch.no_grad():
        assert model(torch.randn(1, 3, 29, 29)).shape == (1, 1000)
    with pytest.raises(ValueError, match=r"\(B, 3, >=29, >=29\)"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
