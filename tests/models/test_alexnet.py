"""AlexNet against torchvision (parameters, initialisation, outputs, MACs) and its input sizes."""

import re

import pytest
import torch
import torchvision

from zoo.profiling import build_on_meta, count_macs, count_params
from zoo.models import get_model


def test_param_count_matches_torchvision():
    ours = build_on_meta(get_model, name="alexnet")
    ref = build_on_meta(torchvision.models.alexnet)
    assert count_params(ours) == count_params(ref) == 61_100_840


def test_init_matches_torchvision():
    # Same modules built in the same order with the same init: the same seed gives the same weights.
    torch.manual_seed(1)
    ref = torchvision.models.alexnet(weights=None)
    torch.manual_seed(1)
    ours = get_model("alexnet")
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


def test_outputs_match_torchvision():
    ref = torchvision.models.alexnet(weights=None).eval()
    ours = build_on_meta(get_model, name="alexnet")
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = ours.forward_head(ours.forward_features(x), pre_logits=True)
        logits = ours(x)
        ref_features = torch.flatten(ref.avgpool(ref.features(x)), 1)
        ref_logits = ref.classifier(ref_features)  # torchvision's forward, without a second trunk pass
    assert features.shape == (1, ours.num_features) == (1, 9216)
    torch.testing.assert_close(features, ref_features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_macs_match_torchvision_published():
    # torchvision's AlexNet_Weights "GFLOPS" (_ops) is 0.714; it counts multiply-accumulates.
    macs = count_macs(build_on_meta(get_model, name="alexnet"), (1, 3, 224, 224))
    assert macs / 1e9 == pytest.approx(0.714, rel=0.01)


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
