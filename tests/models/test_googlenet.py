"""GoogLeNet: auxiliary outputs (training-mode parity with torchvision), small inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.models.factory import build_on_meta
from zoo.bench.profiling import count_params
from zoo.models import get_model


def _reference(**kwargs) -> nn.Module:
    return torchvision.models.googlenet(weights=None, init_weights=True, **kwargs)


@pytest.mark.parametrize("aux_logits", [True, False])
def test_param_count_matches_torchvision(aux_logits: bool):
    ours = count_params(build_on_meta(get_model, name="googlenet", aux_logits=aux_logits))
    ref = count_params(build_on_meta(_reference, aux_logits=aux_logits))
    assert ours == ref
    if not aux_logits:
        assert ours == 6_624_904  # torchvision's GoogLeNet_Weights.IMAGENET1K_V1 num_params


def test_training_outputs_match_torchvision_including_aux():
    # Without dropout, training mode is deterministic (BN uses batch statistics), so the
    # auxiliary heads and the (logits, aux2, aux1) order can be compared too.
    ref = _reference(aux_logits=True, dropout=0.0, dropout_aux=0.0)
    ours = get_model("googlenet", dropout=0.0, dropout_aux=0.0)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.train()
    ref.train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert len(got) == 3
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_training_returns_three_logits_and_eval_one():
    model = get_model("googlenet", num_classes=7)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 3
    assert all(o.shape == (2, 7) for o in out)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


@pytest.mark.parametrize("training", [True, False])
def test_without_aux_returns_a_tensor_in_both_modes(training: bool):
    model = get_model("googlenet", num_classes=5, aux_logits=False).train(training)
    assert model.aux1 is None and model.aux2 is None
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


def test_summed_loss_reaches_every_parameter_including_aux():
    model = get_model("googlenet", num_classes=4).train()
    logits, aux2, aux1 = model(torch.randn(2, 3, 64, 64))
    target = torch.tensor([0, 3])
    loss_fn = nn.functional.cross_entropy
    (loss_fn(logits, target) + 0.3 * (loss_fn(aux1, target) + loss_fn(aux2, target))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_reset_classifier_resets_aux_heads():
    model = get_model("googlenet", num_classes=10)
    model.reset_classifier(3)
    assert model.num_classes == 3
    outs = model.train()(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 3)] * 3


def test_stages_put_aux_heads_in_head():
    model = build_on_meta(get_model, name="googlenet")
    names = [name for name, _ in model.stages()]
    assert names[-1] == "head"
    head_params = {id(p) for p in model.stages()[-1][1].parameters()}
    assert all(id(p) in head_params for p in [*model.aux1.parameters(), *model.aux2.parameters()])


def test_small_input_single_channel():
    model = get_model("googlenet", num_classes=10, in_channels=1, small_input=True)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 1024)
    assert [o.shape for o in model.train()(x)] == [(2, 10)] * 3


def test_small_input_keeps_state_dict_layout():
    ours = build_on_meta(get_model, name="googlenet", small_input=True)
    ref = build_on_meta(_reference, aux_logits=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_too_small_input_raises_naming_expected_shape():
    model = get_model("googlenet").eval()
    assert model.min_image_size == 15
    with pytest.raises(ValueError, match=r"\(B, 3, >=15, >=15\)"):
        model(torch.randn(1, 3, 14, 14))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 15, 15)).shape == (1, 1000)  # the bound is tight
