"""AlexNet: initialisation equal to torchvision's and its input sizes (outputs, state_dict and cost:
test_torchvision_parity.py)."""

import re

import pytest
import torch
import torchvision

from zoo.models.factory import build_on_meta
from zoo.models import get_model


def test_init_matches_torchvision():
    # Same modules built in the same order with the same init: the same seed gives the same weights.
    torch.manual_seed(1)
    ref = torchvision.models.alexnet(weights=None)
    torch.manual_seed(1)
    ours = get_model("alexnet")
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


def test_small_input_keeps_state_dict_keys():
    ours = build_on_meta(get_model, name="alexnet", small_input=True)
    ref = build_on_meta(torchvision.models.alexnet)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert ours.state_dict()["features.0.weight"].shape == (64, 3, 3, 3)


def test_small_input_on_32px_grayscale():
    model = get_model("alexnet", small_input=True, in_channels=1, num_classes=10).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("small_input, min_size", [(False, 63), (True, 7)])
def test_min_image_size_is_exact(small_input, min_size):
    model = build_on_meta(get_model, name="alexnet", small_input=small_input, in_channels=1)
    assert model.min_image_size == min_size
    ok = model(torch.zeros(2, 1, min_size, min_size, device="meta"))
    assert ok.shape == (2, 1000)
    too_small = torch.zeros(2, 1, min_size - 1, min_size - 1, device="meta")
    expected = re.escape(f"at least {min_size}x{min_size} (input shape (B, 1, >={min_size}, >={min_size}))")
    with pytest.raises(ValueError, match=expected):
        model(too_small)
    # The bound is tight: past the check, the network itself has nothing left to pool.
    with pytest.raises(RuntimeError):
        model.forward_features(too_small)
