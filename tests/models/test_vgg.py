"""VGG: Table 1's layers, initialisation equal to torchvision's and input sizes (outputs,
state_dict and cost: test_torchvision_parity.py)."""

import re

import pytest
import torch
import torchvision
from torch import nn

from zoo.models.vgg import VGG
from zoo.models.factory import build_on_meta
from zoo.models import get_model, list_models

VARIANTS = list_models("vgg*")



def test_all_variants_registered():
    expected = {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}
    assert set(VARIANTS) == expected


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
