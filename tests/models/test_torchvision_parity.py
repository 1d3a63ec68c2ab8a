"""Every model that shares its name with a torchvision model, against that model, from one table:
the same state_dict (keys, shapes, order), the same outputs on the same weights, and the
parameter count and MACs that torchvision's weight metadata publishes for each of its weights.

Family-specific behaviour (training-mode outputs, initialisation, options, input sizes)
stays in the family's own test file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from zoo.models import get_model, list_models
from zoo.models.vit import VARIANTS as VIT_VARIANTS
from zoo.models.vit import VisionTransformer
from zoo.models.factory import build_on_meta
from zoo.bench.profiling import count_macs, count_params

from tests.helpers import assert_varies_with_the_input, informative_weights, models_on_meta

SHARED = sorted(set(list_models()) & set(torchvision.models.list_models()))


@dataclass(frozen=True)
class Case:
    """How one model is compared: image size and batch, and options given to both builders."""

    size: int
    batch: int = 2
    options: dict = field(default_factory=dict)


def _vit_depth_two(name: str) -> Case:
    # A full ViT-L/H costs seconds to build and run on a CPU (H/14: 632M parameters). Its
    # widths, heads, MLP and patch size are compared on two blocks and two patches a side
    # (torchvision takes any image_size); the depth is in the state_dict comparison below.
    return Case(size=2 * VIT_VARIANTS[name].patch_size, options={"depth": 2})


# The first variant of each family at its published resolution; the others at a small size
# that still reaches every layer (ResNet's odd 33 px also checks every stride-2 rounding:
# 33 -> 17 -> 9 -> 5 -> 3 -> 2; 29 and 32 px are the smallest DenseNet and VGG take).
CASES: dict[str, Case] = {
    "alexnet": Case(224),
    "googlenet": Case(224),
    "vgg11_bn": Case(224),
    **{name: Case(32) for name in SHARED if name.startswith("vgg") and name != "vgg11_bn"},
    "resnet50": Case(224),
    **{name: Case(33) for name in ("resnet18", "resnet34", "resnet101", "resnet152")},
    "densenet121": Case(224),
    **{name: Case(29) for name in ("densenet161", "densenet169", "densenet201")},
    "efficientnet_b0": Case(224),
    **{f"efficientnet_b{i}": Case(48) for i in range(1, 8)},
    "vit_b_16": Case(224, batch=2),
    **{name: _vit_depth_two(name) for name in ("vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")},
}


def _ours(name: str, **options) -> nn.Module:
    if "depth" in options:  # the registered vit_* builders fix the variant; the class takes any
        variant = replace(VIT_VARIANTS[name], depth=options.pop("depth"))
        return VisionTransformer(variant=variant, **options)
    return get_model(name, **options)


def _torchvision(name: str, **options) -> nn.Module:
    if "depth" in options:  # torchvision's vit_* builders fix num_layers; its class takes it
        v = VIT_VARIANTS[name]
        return TorchvisionViT(options["image_size"], v.patch_size, options["depth"], v.num_heads, v.hidden_dim, v.mlp_dim)
    if name == "googlenet":
        options = {"init_weights": True, **options}  # without it torchvision warns about its future default
    return torchvision.models.get_model(name, weights=None, **options)


def _informative_reference(name: str, case: Case, **options) -> nn.Module:
    """torchvision's model with weights under which its outputs depend on the input.

    Built on meta and filled once (torchvision's constructors would draw every weight, and
    VGG's 130M twice): every tensor drawn at random first (ViT's class token, positions and
    attention projections), layer norms' scales near one, then ``informative_weights``.
    """
    ref = build_on_meta(_torchvision, name=name, **options)
    ref.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*ref.parameters(), *ref.buffers()]:
            tensor.normal_(0.0, 0.02) if tensor.is_floating_point() else tensor.zero_()
        for m in ref.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return informative_weights(ref, torch.randn(4, 3, case.size, case.size))


def test_the_table_covers_every_model_torchvision_has():
    assert sorted(CASES) == SHARED
    assert len(SHARED) == 32  # AlexNet, GoogLeNet, 8 VGG, 5 ResNet, 4 DenseNet, 8 EfficientNet, 5 ViT


@pytest.mark.parametrize("name", SHARED)
def test_state_dict_and_parameter_count_equal_torchvisions(name: str):
    ours = build_on_meta(get_model, name=name)
    ref = build_on_meta(_torchvision, name=name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert count_params(ours) == count_params(ref)


@pytest.mark.parametrize("name", SHARED)
def test_eval_outputs_equal_torchvisions_on_the_same_weights(name: str):
    case = CASES[name]
    options = {**case.options, "image_size": case.size} if "depth" in case.options else {}
    ref = _informative_reference(name, case, **options)
    ours = build_on_meta(_ours, name=name, **options)  # given the reference's tensors: no second init
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    ours.eval()
    norms = (nn.BatchNorm2d, nn.LayerNorm)
    settings = [(type(m), m.eps, getattr(m, "momentum", None)) for m in ours.modules() if isinstance(m, norms)]
    assert settings == [(type(m), m.eps, getattr(m, "momentum", None)) for m in ref.modules() if isinstance(m, norms)]
    x = torch.randn(case.batch, 3, case.size, case.size)
    with torch.no_grad():
        want = ref(x)
        assert_varies_with_the_input(want)
        torch.testing.assert_close(ours(x), want, rtol=1e-5, atol=1e-5)


def _published_weights() -> list:
    return [weights for name in SHARED for weights in torchvision.models.get_model_weights(name)]


@pytest.mark.parametrize("weights", _published_weights(), ids=str)
def test_parameters_and_macs_equal_torchvisions_metadata(weights):
    """Each of torchvision's weights for a model publishes the parameter count and GFLOPS
    (``_ops``: multiply-accumulates) of the model they load into, at its crop size."""
    name = next(n for n in SHARED if weights in torchvision.models.get_model_weights(n))
    crop = weights.transforms().crop_size[0]
    options = {}
    if getattr(models_on_meta()[name], "fixed_image_size", None):
        options["image_size"] = crop  # a ViT's positions are sized for its input (SWAG: 384-518 px)
    if name == "googlenet":
        options["aux_logits"] = False  # torchvision drops the auxiliary heads when it loads weights
    ours = build_on_meta(get_model, name=name, **options)
    assert count_params(ours) == weights.meta["num_params"]
    assert count_macs(ours, (1, 3, crop, crop)) / 1e9 == pytest.approx(weights.meta["_ops"], rel=0.01)
