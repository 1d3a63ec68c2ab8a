"""Feature extraction: ``get_model(name, features_only=True, out_indices=...)``.

Every registered image model is checked on the ``meta`` device (shapes only, no cost):
its maps have the channels ``feature_info`` declares and the size its stride implies,
and the head is gone. Small models are then run on real numbers, to show that each map
is the activation of the module ``feature_info`` names in the full model, that the last
one pooled the family's way is ``forward_head(..., pre_logits=True)``, that ``out_indices`` picks the same
tensors, and that the extractor keeps no parameter it does not use.
"""


import pytest
import torch
import torch.nn.functional as F

from zoo import get_model
from zoo.errors import ConfigError
from zoo.models import MODELS, ImageModel
from zoo.models.features import FeatureExtractor
from zoo.models.factory import build_on_meta

from tests.helpers import accepts, model_lists, models_on_meta, randomize_batch_norms

_ON_META = models_on_meta()
IMAGE_MODELS = model_lists()["image_model"]
WITH_MAPS = [name for name in IMAGE_MODELS if _ON_META[name].feature_info]
WITHOUT_MAPS = [name for name in model_lists()["model_name"] if name not in WITH_MAPS]
# A family's small-input stem changes its strides: checked on its smallest variant.
SHAPE_CASES = [pytest.param(name, {}, id=name) for name in WITH_MAPS] + [
    pytest.param(name, {"small_input": True}, id=f"{name}-small_input")
    for name in model_lists()["family_image_model"]
    if name in WITH_MAPS and accepts(name, "small_input")
]
# An odd size of the form 32k - 1 (and a different width, to tell H from W): pools
# without padding (AlexNet's, VGG's) give floor(H / stride) there, padded ones the ceiling.
HEIGHT, WIDTH = 223, 191
# LeNet-5's unpadded 5x5 convolutions shrink the maps below 32 / stride (Section II.B).
PAPER_SIZES = {"lenet5": [28, 14, 10, 5, 1]}


def _head_keys(model: ImageModel) -> set[str]:
    """``state_dict`` keys of the parameters in ``stages()``'s head group."""
    head = {id(p) for p in dict(model.stages())["head"].parameters()}
    return {key for key, p in model.named_parameters() if id(p) in head}


def test_every_image_model_but_the_mlp_has_feature_maps():
    assert [name for name in IMAGE_MODELS if name not in WITH_MAPS] == ["mlp"]


@pytest.mark.parametrize("name", WITHOUT_MAPS)
def test_features_only_is_refused_by_models_without_feature_maps(name):
    with pytest.raises(ConfigError, match=f"model '{name}' has no feature maps"):
        build_on_meta(get_model, name=name, features_only=True)


@pytest.mark.parametrize(("name", "options"), SHAPE_CASES)
def test_feature_maps_have_the_declared_channels_and_strides(name, options):
    full = build_on_meta(MODELS.get(name), **options) if options else _ON_META[name]
    backbone = build_on_meta(get_model, name=name, features_only=True, **options)
    assert isinstance(backbone, FeatureExtractor)
    info = list(full.feature_info)
    assert backbone.feature_info == info and backbone.out_indices == tuple(range(len(info)))  # default: all

    if full.fixed_image_size:
        h = w = full.fixed_image_size
    else:
        h, w = HEIGHT, WIDTH
    maps = backbone(torch.empty(2, full.in_channels, h, w, device="meta"))
    assert len(maps) == len(info)
    modules = dict(full.named_modules())
    for k, (fmap, f) in enumerate(zip(maps, info)):
        assert f.name in modules, f"feature_info names {f.name!r}, which is not a module of {name}"
        assert fmap.shape[:2] == (2, f.channels), f.name
        if name in PAPER_SIZES:
            assert fmap.shape[2:] == (PAPER_SIZES[name][k],) * 2, f.name
        else:
            assert fmap.shape[2] in (h // f.stride, -(-h // f.stride)), (f.name, fmap.shape, f.stride)
            assert fmap.shape[3] in (w // f.stride, -(-w // f.stride)), (f.name, fmap.shape, f.stride)
    assert [f.stride for f in info] == sorted(f.stride for f in info)

    # The classifier is not part of the extractor; every key it keeps is the model's own.
    keys, full_keys = set(backbone.state_dict()), set(full.state_dict())
    assert _head_keys(full) and not _head_keys(full) & keys
    assert keys < full_keys


def test_out_indices_select_maps_and_prune_what_follows():
    backbone = build_on_meta(get_model, name="resnet18", features_only=True, out_indices=(2, 0))
    assert backbone.out_indices == (0, 2)  # network order
    assert [(f.name, f.channels, f.stride) for f in backbone.feature_info] == [("maxpool", 64, 4), ("layer2", 128, 8)]
    maps = backbone(torch.empty(1, 3, 64, 64, device="meta"))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 16, 16), (1, 128, 8, 8)]
    prefixes = {key.split(".")[0] for key in backbone.state_dict()}
    assert prefixes == {"conv1", "bn1", "layer1", "layer2"}  # layer3, layer4 and fc are gone

    backbone = build_on_meta(get_model, name="resnet18", features_only=True, out_indices=(-1, 1))
    assert backbone.out_indices == (1, 4)


@pytest.mark.parametrize("out_indices", [(0, 5), (-6,), (1, -4), ()])
def test_bad_out_indices_are_refused_with_the_valid_range(out_indices):
    message = r"valid indices are -5\.\.4 \(maxpool, layer1, layer2, layer3, layer4\)"
    if out_indices == (1, -4):
        message = "the same map twice"
    elif not out_indices:
        message = "no feature index"
    with pytest.raises(ValueError, match=message):
        build_on_meta(get_model, name="resnet18", features_only=True, out_indices=out_indices)


def test_out_indices_without_features_only_is_a_config_error():
    with pytest.raises(ConfigError, match="features_only=True"):
        build_on_meta(get_model, name="resnet18", out_indices=(1,))


# Real numbers: (options, input size) of small models, one per family.
REAL_CASES = {
    "lenet5": ({}, 32),
    "alexnet": ({"small_input": True}, 32),
    "googlenet": ({}, 64),
    "resnet18": ({}, 64),
    "densenet121": ({}, 64),
    "efficientnet_b0": ({}, 64),
    "vit_tiny": ({}, 224),
}
# The family's own way from its last map to the pooled features (pre_logits): pooling, norm, what remains.
POOLED = {
    "lenet5": lambda model, f: model.f6(f.flatten(1)),
    "alexnet": lambda model, f: model.avgpool(f).flatten(1),
    "googlenet": lambda model, f: model.avgpool(f).flatten(1),
    "resnet18": lambda model, f: model.avgpool(f).flatten(1),
    "densenet121": lambda model, f: F.adaptive_avg_pool2d(F.relu(f), 1).flatten(1),
    "efficientnet_b0": lambda model, f: model.avgpool(model.features[-1](f)).flatten(1),
    # A ViT's pooled feature is the class token, which the maps drop: the final
    # LayerNorm turns the last map into the patch tokens that sit next to it instead.
    "vit_tiny": lambda model, f: model.encoder.ln(f.flatten(2).transpose(1, 2)),
}


def _capture(store: dict, name: str):
    def hook(module, inputs, output):
        store[name] = output.clone()  # before any in-place op that follows can change it

    return hook


def _token_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, 1 + h w, D) tokens, class token first, patches row-major -> (B, D, h, w)."""
    b, _, d = tokens.shape
    return tokens[:, 1:].reshape(b, *grid, d).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", list(REAL_CASES))
def test_maps_are_the_full_models_activations(name, one_thread):
    options, size = REAL_CASES[name]
    full = get_model(name, **options).eval()
    randomize_batch_norms(full)
    backbone = get_model(name, features_only=True, **options).eval()
    loaded = backbone.load_state_dict(full.state_dict(), strict=False)
    assert loaded.missing_keys == [] and _head_keys(full) <= set(loaded.unexpected_keys)
    x = torch.randn(2, full.in_channels, size, size)

    captured: dict[str, torch.Tensor] = {}
    hooks = [full.get_submodule(f.name).register_forward_hook(_capture(captured, f.name)) for f in full.feature_info]
    encoder_out = {}
    if name.startswith("vit"):
        hooks.append(full.encoder.register_forward_hook(_capture(encoder_out, "encoder")))
    with torch.no_grad():
        features = full.forward_head(full.forward_features(x), pre_logits=True)
        maps = backbone(x)
        last_pooled = POOLED[name](full, maps[-1])
    for hook in hooks:
        hook.remove()

    assert len(maps) == len(full.feature_info) == len(captured)
    for fmap, f in zip(maps, backbone.feature_info):
        expected = captured[f.name]
        if expected.dim() == 3:  # a ViT block's tokens
            expected = _token_grid(expected, fmap.shape[-2:])
        torch.testing.assert_close(fmap, expected, rtol=0, atol=0, msg=f.name)
    if encoder_out:
        tokens = encoder_out["encoder"]  # LN(z_L): (B, N + 1, D)
        torch.testing.assert_close(tokens[:, 0], features, rtol=0, atol=0)
        torch.testing.assert_close(last_pooled, tokens[:, 1:], rtol=0, atol=0)
    else:
        torch.testing.assert_close(last_pooled, features, rtol=0, atol=0)

    # A subset is the same tensors; the stage after the last one asked for is pruned.
    subset = get_model(name, features_only=True, out_indices=(-2, 1), **options).eval()
    loaded = subset.load_state_dict(full.state_dict(), strict=False)
    assert loaded.missing_keys == [] and len(subset.state_dict()) < len(backbone.state_dict())
    with torch.no_grad():
        picked = subset(x)
    assert len(picked) == 2
    torch.testing.assert_close(picked[0], maps[1], rtol=0, atol=0)
    torch.testing.assert_close(picked[1], maps[-2], rtol=0, atol=0)

    # Training: every parameter the extractor keeps receives a gradient, so nothing unused
    # is left for an optimizer or DDP to trip over (the ViT's final LayerNorm, which the
    # raw block outputs never see, included).
    backbone.train()
    sum(fmap.square().mean() for fmap in backbone(x)).backward()
    unused = [key for key, p in backbone.named_parameters() if p.grad is None]
    assert not unused and len(unused) < len(list(backbone.parameters()))


def test_the_model_gives_the_same_maps_without_a_wrapper(one_thread):
    model = get_model("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x)
        last_two = model.forward_intermediates(x, indices=[-2, -1])
        logits = model(x)  # the model keeps its head
    assert [m.shape[1] for m in maps] == [f.channels for f in model.feature_info]
    torch.testing.assert_close(last_two, maps[-2:], rtol=0, atol=0)
    torch.testing.assert_close(model.forward_head(maps[-1]), logits, rtol=0, atol=0)  # the last map is the trunk's output
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 3, H, W\)"):
        model.forward_intermediates(torch.randn(1, 1, 64, 64))


def test_a_backbone_built_on_meta_takes_weights_by_assignment(one_thread):
    """The ViT's class token is a parameter of the model itself, not of a submodule: the
    extractor must hand the model what ``assign=True`` puts in its place."""
    options = {"image_size": 32, "patch_size": 8, "depth": 2}
    full = get_model("vit_tiny", **options).eval()
    with torch.no_grad():
        full.class_token.normal_()  # initialised to zero: make it count
    backbone = build_on_meta(get_model, name="vit_tiny", features_only=True, **options)
    loaded = backbone.load_state_dict(full.state_dict(), strict=False, assign=True)
    pruned = {"heads.head.weight", "heads.head.bias", "encoder.ln.weight", "encoder.ln.bias"}
    assert loaded.missing_keys == [] and set(loaded.unexpected_keys) == pruned
    assert {p.device.type for p in backbone.parameters()} == {"cpu"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = backbone.eval()(x)
        expected = full.forward_intermediates(x)
    assert [tuple(m.shape) for m in maps] == [(2, 192, 4, 4)] * 2
    torch.testing.assert_close(maps, expected, rtol=0, atol=0)
