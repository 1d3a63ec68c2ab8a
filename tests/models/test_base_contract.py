"""The image-model contract (src/zoo/models/base.py), checked for every registered image model."""

import pytest
import torch

from zoo import get_model
from zoo.models import MODELS
from zoo.models.factory import build_on_meta
from zoo.bench.profiling import count_macs

from tests.helpers import accepts

def _input_size(model) -> int:
    return model.fixed_image_size or max(model.min_image_size, 32)


def _small_input(name: str) -> dict:
    """Models with an ImageNet stem or a 224 px patch grid are checked in their 32 px form,
    as zoo-train builds them for 32 px data."""
    return {key: value for key, value in (("small_input", True), ("image_size", 32)) if accepts(name, key)}


def test_model_keeps_the_contract(family_image_model):
    """On real tensors, for the smallest variant of each family (the meta-device checks
    below cover every variant)."""
    name = family_image_model
    model = get_model(name, num_classes=7, in_channels=1, **_small_input(name))
    assert (model.num_classes, model.in_channels) == (7, 1)
    size = _input_size(model)
    x = torch.randn(2, 1, size, size)

    # Training: logits (plus auxiliary logits for some models), finite, and every
    # parameter receives a gradient.
    model.train()
    out = model(x)
    outputs = out if isinstance(out, tuple) else (out,)
    for logits in outputs:
        assert logits.shape == (2, 7)
        assert torch.isfinite(logits).all()
    sum(o.square().mean() for o in outputs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"

    # Evaluation: one tensor, equal to head(features); the features are the trunk's
    # unpooled output and forward_head(pre_logits=True) pools them to num_features.
    model.eval()
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 7)
        assert features.dim() in (2, 3, 4) and features.shape[0] == 2
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), logits)

        model.double().reset_classifier(5)
        assert model.num_classes == 5 and model(x.double()).shape == (2, 5)

    # Stages run from input to head and hold every parameter exactly once.
    stages = model.stages()
    names = [n for n, _ in stages]
    assert len(set(names)) == len(names) and names[-1] == "head"
    in_stages = [id(p) for _, module in stages for p in module.parameters()]
    assert len(in_stages) == len(set(in_stages))
    assert set(in_stages) == {id(p) for p in model.parameters()}

    # The wrong channel count is refused with the expected shape in the message.
    with pytest.raises(ValueError, match=r"\(B, 1, "):
        model(torch.randn(2, 3, size, size))


def test_model_builds_on_meta_and_counts_macs_on_its_example(model_name):
    name = model_name
    model = build_on_meta(MODELS.get(name))
    assert all(p.device.type == "meta" for p in model.parameters())
    inputs = model.example_inputs(batch_size=2)
    assert all(t.device.type == "meta" for t in inputs)
    assert count_macs(model, inputs) > 0


def test_the_declared_parts_are_the_models_own(image_model):
    """``spec`` names the first convolution (it reads the input channels), the classifier
    and the head keys: exactly the tensors that a new head replaces."""
    model = build_on_meta(MODELS.get(image_model), in_channels=5)
    if model.spec.first_conv is not None:
        assert model.get_submodule(model.spec.first_conv).weight.shape[1] == 5
    assert model.get_classifier() is model.get_submodule(model.spec.classifier)
    assert model.get_classifier().out_features == model.num_classes
    before = {k: id(v) for k, v in model.state_dict(keep_vars=True).items()}
    declared = model.head_keys()
    model.reset_classifier(model.num_classes)
    replaced = {k for k, v in model.state_dict(keep_vars=True).items() if before[k] != id(v)}
    assert declared == replaced and declared


def test_a_new_head_keeps_the_models_device_and_dtype(image_model):
    model = build_on_meta(MODELS.get(image_model)).to(torch.float64)
    model.reset_classifier(3)
    for path in (model.spec.classifier, *model.spec.aux_classifiers):
        head = model.get_submodule(path)
        assert head.out_features == 3, path
        assert head.weight.dtype == head.bias.dtype == torch.float64, path
        assert head.weight.device.type == "meta", path
    assert model.num_classes == 3
