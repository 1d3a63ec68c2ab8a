"""VGG against torchvision (parameters, initialisation, outputs, MACs) and its input sizes."""

import re

import pytest
import torch
import torchvision
from torch import nn

from zoo.models.vgg import VGG
from zoo.profiling import build_on_meta, count_macs, count_params
from zoo.models import get_model, list_models

VARIANTS = list_models("vgg*")
FULL_SIZE = "vgg11_bn"  # compared with torchvision at 224 px; the others at 32 px, the smallest

# torchvision's published "GFLOPS" (_ops, really multiply-accumulates) at 224 px.
PUBLISHED_GMACS = {"vgg11": 7.609, "vgg13": 11.308, "vgg16": 15.47, "vgg19": 19.632}


def test_all_variants_registered():
    expected = {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}
    assert set(VARIANTS) == expected


@pytest.mark.parametrize("name", VARIANTS)
def test_param_count_matches_torchvision(name):
    ours = build_on_meta(get_model, name=name)
    ref = build_on_meta(getattr(torchvision.models, name))
    assert count_params(ours) == count_params(ref)


@pytest.mark.parametrize("name", VARIANTS)
def test_weight_layers_follow_table_1(name):
    # "VGG-n" has n weight layers: the convolutions of its Table 1 column plus three FC layers,
    # and stages() splits the convolutions into five blocks, each ending in a max pool.
    model = build_on_meta(get_model, name=name)
    depth = int(name.removeprefix("vgg").removesuffix("_bn"))
    weight_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weight_layers) == depth
    stages = model.stages()
    assert [n for n, _ in stages] == ["block1", "block2", "block3", "block4", "block5", "head"]
    for _, block in stages[:5]:
        assert isinstance(block[-1], nn.MaxPool2d)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert has_bn == name.endswith("_bn")


def _random_reference(name: str) -> nn.Module:
    """torchvision's model with random weights, non-zero biases and non-trivial batch norms.

    Built on meta and filled once: torchvision's constructor would draw every weight twice
    (PyTorch's default init, then its own), the cost of this file.
    """
    ref = build_on_meta(getattr(torchvision.models, name))
    ref.to_empty(device="cpu")
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5)  # He: activations keep their scale
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.num_batches_tracked.zero_()
    return ref.eval()


@pytest.mark.parametrize("name", VARIANTS)
def test_outputs_match_torchvision(name):
    ref = _random_reference(name)
    # Ours on meta, then take torchvision's tensors: no second 130M-parameter init.
    ours = build_on_meta(get_model, name=name)
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    ours.eval()
    size = 224 if name == FULL_SIZE else ours.min_image_size
    x = torch.randn(1 if size == 224 else 2, 3, size, size)
    with torch.no_grad():
        features = ours.forward_head(ours.forward_features(x), pre_logits=True)
        logits = ours(x)
        ref_features = torch.flatten(ref.avgpool(ref.features(x)), 1)
        ref_logits = ref.classifier(ref_features)  # torchvision's forward, without a second trunk pass
    assert features.shape == (x.shape[0], ours.num_features) == (x.shape[0], 25088)
    torch.testing.assert_close(features, ref_features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_init_matches_torchvision():
    # Same modules built in the same order with the same init: the same seed gives the same weights.
    torch.manual_seed(1)
    ref = torchvision.models.vgg11_bn(weights=None)
    torch.manual_seed(1)
    ours = get_model("vgg11_bn")
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


@pytest.mark.parametrize("name", VARIANTS)
def test_macs_match_torchvision_published(name):
    macs = count_macs(build_on_meta(get_model, name=name), (1, 3, 224, 224))
    assert macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name.removesuffix("_bn")], rel=0.01)


@pytest.mark.parametrize("name", VARIANTS)
def test_grayscale_32px_and_min_size_is_exact(name):
    model = build_on_meta(get_model, name=name, in_channels=1, num_classes=10)
    assert model.min_image_size == 32
    assert model(torch.zeros(2, 1, 32, 32, device="meta")).shape == (2, 10)
    too_small = torch.zeros(2, 1, 31, 31, device="meta")
    with pytest.raises(ValueError, match=re.escape("at least 32x32 (input shape (B, 1, >=32, >=32))")):
        model(too_small)
    # The bound is tight: past the check, the fifth max pool has nothing left to pool.
    with pytest.raises(RuntimeError):
        model.forward_features(too_small)


def test_config_is_validated():
    with pytest.raises(ValueError, match="config must be one of"):
        VGG(config="C")
