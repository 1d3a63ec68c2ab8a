"""Vision Transformer: the parameter count of Section 3.1, the contract details of a fixed-size
model, stochastic depth, and a short real run of vit_tiny on digits (outputs, state_dict and
cost against torchvision: test_torchvision_parity.py)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from zoo.cli.train import train
from zoo.models.vit import VARIANTS, EncoderBlock
from zoo.models.factory import build_on_meta
from zoo.bench.profiling import count_params
from zoo.models import get_model, list_models

from tests.helpers import QUIET, compose_config

TORCHVISION = ["vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32"]


def _expected_params(name: str, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> int:
    """Section 3.1 counted by hand: patch projection, class token, positions, L blocks, LN, head."""
    v = VARIANTS[name]
    d, m, n = v.hidden_dim, v.mlp_dim, (image_size // v.patch_size) ** 2
    block = (4 * d * d + 4 * d) + (2 * d * m + m + d) + 4 * d  # MSA (W^QKV, W^O) + MLP + 2 LayerNorms
    embedding = (in_channels * v.patch_size**2 * d + d) + d + (n + 1) * d  # E and its bias, x_class, E_pos
    return embedding + v.depth * block + 2 * d + (d * num_classes + num_classes)


def test_all_variants_registered():
    assert list_models("vit*") == sorted([*TORCHVISION, "vit_small", "vit_tiny"])


@pytest.mark.parametrize("name", TORCHVISION)
def test_param_count_follows_section_3_1(name):
    assert count_params(build_on_meta(get_model, name=name)) == _expected_params(name)


def test_deit_sized_variants_count_as_deit():
    # DeiT Table 1 lists 5M and 22M; the exact counts (1000 classes, 224 px, 16x16 patches):
    assert count_params(build_on_meta(get_model, name="vit_tiny")) == _expected_params("vit_tiny") == 5_717_416
    assert count_params(build_on_meta(get_model, name="vit_small")) == _expected_params("vit_small") == 22_050_664


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
    with pytest.raises(ValueError, match="image_size=32 is not a multiple of the patch size 14"):
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
