"""Vision Transformer: torchvision parity (params, strict state_dict, outputs, MACs), the
contract details of a fixed-size model, and a short real run of vit_tiny on digits."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from zoo.cli.train import train
from zoo.models.vit import VARIANTS, EncoderBlock, VisionTransformer
from zoo.profiling import build_on_meta, count_macs, count_params
from zoo.models import get_model, list_models

from helpers import QUIET, compose_config

TORCHVISION = ["vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32"]
# torchvision's published "GFLOPS" (really GMACs) at 224 px.
PUBLISHED_GMACS = {"vit_b_16": 17.564, "vit_b_32": 4.409, "vit_l_16": 61.555, "vit_l_32": 15.378, "vit_h_14": 167.295}


def _expected_params(name: str, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> int:
    """Section 3.1 counted by hand: patch projection, class token, positions, L blocks, LN, head."""
    v = VARIANTS[name]
    d, m, n = v.hidden_dim, v.mlp_dim, (image_size // v.patch_size) ** 2
    block = (4 * d * d + 4 * d) + (2 * d * m + m + d) + 4 * d  # MSA (W^QKV, W^O) + MLP + 2 LayerNorms
    embedding = (in_channels * v.patch_size**2 * d + d) + d + (n + 1) * d  # E and its bias, x_class, E_pos
    return embedding + v.depth * block + 2 * d + (d * num_classes + num_classes)


def _randomize(model: torch.nn.Module) -> None:
    """The zero head and class token of a fresh ViT would hide mistakes in what feeds them."""
    with torch.no_grad():
        model.heads.head.weight.normal_(0.0, 0.02)
        model.heads.head.bias.normal_()
        model.class_token.normal_()
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)


def test_all_variants_registered():
    assert list_models("vit*") == sorted([*TORCHVISION, "vit_small", "vit_tiny"])


@pytest.mark.parametrize("name", TORCHVISION)
def test_param_count_and_strict_load_match_torchvision(name):
    ours = build_on_meta(get_model, name=name)
    ref = build_on_meta(getattr(torchvision.models, name))
    assert count_params(ours) == count_params(ref) == _expected_params(name)
    loaded = ours.load_state_dict(ref.state_dict(), strict=True, assign=True)  # raises on other keys or shapes
    assert loaded.missing_keys == [] and loaded.unexpected_keys == []
    published = {"vit_b_16": 86567656, "vit_b_32": 88224232, "vit_l_16": 304326632, "vit_l_32": 306535400}
    if name in published:
        assert count_params(ours) == published[name]


def test_deit_sized_variants_count_as_deit():
    # DeiT Table 1 lists 5M and 22M; the exact counts (1000 classes, 224 px, 16x16 patches):
    assert count_params(build_on_meta(get_model, name="vit_tiny")) == _expected_params("vit_tiny") == 5_717_416
    assert count_params(build_on_meta(get_model, name="vit_small")) == _expected_params("vit_small") == 22_050_664


@pytest.mark.parametrize("name", TORCHVISION)
def test_macs_match_published_gflops(name):
    macs = count_macs(build_on_meta(get_model, name=name), (1, 3, 224, 224))
    assert macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.01)


def _assert_same_outputs(ours: VisionTransformer, ref: torch.nn.Module, size: int, batch: int = 2) -> None:
    _randomize(ref)
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    ours.eval()
    ref.eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_vit_b_16_outputs_equal_torchvision_at_224():
    ref = torchvision.models.vit_b_16(weights=None)
    _assert_same_outputs(build_on_meta(get_model, name="vit_b_16"), ref, 224, batch=1)


@pytest.mark.parametrize("name", ["vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"])
def test_other_variants_equal_torchvision_at_depth_two_on_small_images(name, one_thread):
    # Full models cost seconds each to build on CPU (H/14: 632M parameters); their widths,
    # heads, MLPs and patch sizes are checked here on two blocks and two patches a side
    # (torchvision takes any image_size); the depth is checked by the parameter counts.
    v = replace(VARIANTS[name], depth=2)
    size = 2 * v.patch_size
    ref = TorchvisionViT(size, v.patch_size, 2, v.num_heads, v.hidden_dim, v.mlp_dim)
    ours = build_on_meta(VisionTransformer, variant=v, image_size=size)
    _assert_same_outputs(ours, ref, size)


def test_stages_cover_every_parameter_in_order():
    model = build_on_meta(get_model, name="vit_b_16")
    stages = model.stages()
    assert [n for n, _ in stages] == ["patch_embed", "blocks1", "blocks2", "blocks3", "blocks4", "head"]
    assert [len([m for m in s if isinstance(m, EncoderBlock)]) for _, s in stages[1:5]] == [3, 3, 3, 3]
    assert stages[4][1][-1] is model.encoder.ln
    embed = dict(stages)["patch_embed"]
    assert {id(p) for p in embed.parameters()} == {
        id(model.class_token), id(model.encoder.pos_embedding), id(model.conv_proj.weight), id(model.conv_proj.bias)
    }
    assert [len(paths) for _, paths in build_on_meta(get_model, name="vit_tiny", depth=2).spec.stages[1:-1]] == [1, 2]
    assert sorted(model.state_dict()) == sorted(build_on_meta(torchvision.models.vit_b_16).state_dict())


def test_fixed_image_size_and_input_checks(one_thread):
    model = get_model("vit_tiny", num_classes=10, in_channels=1, image_size=32, patch_size=4, depth=1).eval()
    assert model.fixed_image_size == model.default_image_size == 32 and model.num_patches == 64
    assert model.encoder.pos_embedding.shape == (1, 65, 192)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
        assert model.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 65, 192)  # every token
    with pytest.raises(ValueError, match=r"expects 32x32 images \(input shape \(B, 1, 32, 32\)\), got 28x28"):
        model(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model.forward_features(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="image_size=32 is not a multiple of patch_size=14"):
        get_model("vit_h_14", image_size=32)  # torchvision refuses it too


@pytest.mark.parametrize("name", TORCHVISION)
def test_small_input_cuts_4x4_patches_and_keeps_the_keys(name):
    ours = build_on_meta(get_model, name=name, image_size=32, small_input=True)
    assert ours.num_patches == 64 and ours.conv_proj.kernel_size == ours.conv_proj.stride == (4, 4)
    ref_shapes = {k: v.shape for k, v in build_on_meta(getattr(torchvision.models, name)).state_dict().items()}
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    d = VARIANTS[name].hidden_dim
    assert ours_shapes.pop("conv_proj.weight") == (d, 3, 4, 4)
    assert ours_shapes.pop("encoder.pos_embedding") == (1, 65, d)
    del ref_shapes["conv_proj.weight"], ref_shapes["encoder.pos_embedding"]
    assert ours_shapes == ref_shapes


def test_features_are_the_tokens_and_pre_logits_the_class_token_after_the_final_norm(one_thread):
    model = get_model("vit_tiny", num_classes=3, in_channels=1, image_size=16, patch_size=4, depth=2).eval()
    seen = {}
    model.encoder.ln.register_forward_hook(lambda m, i, out: seen.update(tokens=out))
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 16, 16))
        pooled = model.forward_head(features, pre_logits=True)
    assert seen["tokens"].shape == (2, 17, 192)
    torch.testing.assert_close(features, seen["tokens"])
    torch.testing.assert_close(pooled, seen["tokens"][:, 0])


def test_reset_classifier_keeps_device_and_starts_at_zero():
    model = build_on_meta(get_model, name="vit_b_32")
    model.reset_classifier(5)
    head = model.heads.head
    assert head.weight.device.type == "meta" and head.weight.shape == (5, 768) and model.num_classes == 5
    fresh = get_model("vit_tiny", num_classes=4, image_size=16, patch_size=8, depth=1)
    fresh.reset_classifier(7)
    assert not fresh.heads.head.weight.any() and fresh.heads.head.weight.shape == (7, 192)


def test_stochastic_depth_rises_linearly_and_only_trains():
    model = get_model("vit_tiny", image_size=16, patch_size=8, depth=5, stochastic_depth_prob=0.2)
    probs = [getattr(b.drop_path, "p", 0.0) for b in model.encoder.layers]
    assert probs == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), model.forward_features(x))


def test_vit_tiny_learns_digits_through_zoo_train(tmp_path, one_thread):
    cfg = compose_config(
        "train", tmp_path,
        ["model=vit_tiny", "model.patch_size=8", "model.hidden_dim=64", "model.depth=2", "model.num_heads=2",
         "model.mlp_dim=128", "model.stochastic_depth_prob=0", "optim=adamw", "optim.lr=3e-3", "sched=cosine",
         "sched.warmup_epochs=1", "trainer.max_epochs=8", "data.batch_size=64", "~logger", *QUIET],
    )  # fmt: skip
    train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["model"] == "vit_tiny" and record["epochs"] == 8
    assert record["test"]["test/acc"] > 0.6  # chance is 0.1


def test_stochastic_depth_drops_branches_per_sample_in_training():
    """In training every sample draws its own keep/drop for each residual branch (DeiT's
    drop-path), so a batch of identical inputs comes out different; one draw for the whole
    batch would leave every row equal."""
    block = get_model("vit_tiny", image_size=16, patch_size=8, depth=2, stochastic_depth_prob=0.5).encoder.layers[-1]
    z = torch.randn(1, 5, 192).expand(64, -1, -1).contiguous()  # (B, N + 1, D), 64 equal samples
    with torch.no_grad():
        out = block.train()(z)
        assert len({tuple(row.flatten().tolist()) for row in out}) > 1
        same = block.eval()(z)
        assert all(torch.equal(row, same[0]) for row in same)
