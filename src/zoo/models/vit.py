"""Vision Transformer: ViT-B/16, B/32, L/16, L/32, H/14, and the DeiT-sized ViT-Tiny and -Small.

A. Dosovitskiy, L. Beyer, A. Kolesnikov, D. Weissenborn, X. Zhai, T. Unterthiner,
M. Dehghani, M. Minderer, G. Heigold, S. Gelly, J. Uszkoreit, N. Houlsby, "An Image is
Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021 (arXiv 2020).
https://arxiv.org/abs/2010.11929

An ``H x W`` image is cut into ``N = HW / P^2`` patches of ``P x P`` pixels; each is
flattened and projected to width ``D`` (done here by a ``P x P`` conv with stride ``P``,
the same linear map). A learned class token is prepended, learned position embeddings
are added, and a Transformer encoder of pre-norm blocks follows (Section 3.1, Eq. 1-4):

    z_0  = [x_class; x_p^1 E; ...; x_p^N E] + E_pos       E: (P^2 C, D), E_pos: (N + 1, D)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                      l = 1..L
    z_l  = MLP(LN(z'_l)) + z'_l                            MLP: D -> D_mlp -> D, GELU
    y    = LN(z_L^0)                                       the class token's output

and a linear head on ``y`` gives the logits. Variants (Table 1): Base ``D = 768, L = 12,
h = 12, D_mlp = 3072``; Large ``1024, 24, 16, 4096``; Huge ``1280, 32, 16, 5120``; the
name's number is the patch size. ``vit_tiny`` and ``vit_small`` take the widths of DeiT-Ti
and DeiT-S (``192, 12, 3, 768`` and ``384, 12, 6, 1536``) from H. Touvron, M. Cord,
M. Douze, F. Massa, A. Sablayrolles, H. Jegou, "Training data-efficient image transformers
& distillation through attention", ICML 2021, https://arxiv.org/abs/2012.12877 (Table 1);
their ``depth``, ``hidden_dim``, ``num_heads``, ``mlp_dim``, ``patch_size`` and
``image_size`` can be changed for small images (configs/model/vit_tiny.yaml: 32 px digits
in 4x4 patches, depth 6).

Module names follow torchvision (``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_{i}.{ln_1,self_attention,ln_2,mlp}``, ``encoder.ln``,
``heads.head``): its ``state_dict``s load with ``strict=True`` and give the same outputs.
The attention is :class:`zoo.layers.attention.MultiHeadAttention`, whose parameters have
the layout of ``nn.MultiheadAttention``.

Deviations from the paper:

- The class token's output goes straight to a linear head: the paper's pre-training head
  has a hidden layer (an MLP with one tanh layer, Section 3.1); its fine-tuning head, and
  torchvision's, is the single linear layer used here. Like both, the head starts at zero.
- A model takes one ``image_size`` (a multiple of the patch size, as in torchvision);
  inputs of another size raise ``ValueError``. Weights trained at another size are fitted
  when they are loaded, by the paper's 2D interpolation of the position embeddings
  (Section 3.2; :func:`interpolate_pos_embedding`, the class token's kept), e.g. 224 px
  ImageNet weights fine-tuned at 384 px: ``zoo.create_model("vit_b_16", weights=...,
  image_size=384)`` or ``zoo-train model.image_size=384 finetune.weights=...``.
- ``small_input=True`` (not in the paper or torchvision) cuts 4x4 patches instead of the
  variant's 14-32 px ones, so that 28-32 px images make 49-64 tokens rather than one to
  four (ViTs trained on CIFAR usually do this). Module names are unchanged; ``conv_proj``
  has a 4x4 kernel and ``pos_embedding`` one row per patch.
- ``stochastic_depth_prob`` (off by default) drops residual branches with a probability
  rising linearly to that value in the last block, as DeiT trains (Huang et al., 2016).
- Initialisation follows torchvision: truncated normal patch projection (std
  ``1 / sqrt(fan_in)``), N(0, 0.02) position embeddings, zero class token, Xavier MLP
  weights with N(0, 1e-6) biases.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.errors import ConfigError
from zoo.layers.attention import MultiHeadAttention
from zoo.layers.stochastic_depth import StochasticDepth
from zoo.models.base import FeatureInfo, ImageModel, ModelSpec
from zoo.models.factory import register_model
from zoo.models.weights import torchvision_weights

LN_EPS = 1e-6  # the paper's JAX LayerNorm default, kept by torchvision
SMALL_INPUT_PATCH = 4  # small_input=True: 32 px images in 8x8 patches of 4x4 pixels


class MLPBlock(nn.Sequential):
    """``Linear(D, D_mlp) -> GELU -> Dropout -> Linear(D_mlp, D) -> Dropout`` (torchvision's indices 0..4)."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float):
        super().__init__(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )
        for m in (self[0], self[3]):
            nn.init.xavier_uniform_(m.weight)
            nn.init.normal_(m.bias, std=1e-6)


class EncoderBlock(nn.Module):
    """Pre-norm block: ``z' = MSA(LN(z)) + z``, ``z'' = MLP(LN(z')) + z'`` (Eq. 2-3)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.self_attention = MultiHeadAttention(dim, num_heads, dropout=attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = MLPBlock(dim, mlp_dim, dropout)
        self.drop_path = StochasticDepth(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(z)  # (B, N + 1, D)
        y, _ = self.self_attention(y, y, y)
        z = z + self.drop_path(self.dropout(y))  # Eq. 2
        return z + self.drop_path(self.mlp(self.ln_2(z)))  # Eq. 3


class Encoder(nn.Module):
    """Position embeddings, dropout, ``L`` blocks and the final LayerNorm."""

    def __init__(
        self, seq_length: int, variant: ViTVariant, dropout: float, attention_dropout: float, stochastic_depth_prob: float
    ):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, variant.hidden_dim))
        nn.init.normal_(self.pos_embedding, std=0.02)  # as BERT
        self.dropout = nn.Dropout(dropout)
        v, depth = variant, variant.depth
        blocks = OrderedDict()
        for i in range(depth):
            drop_path = stochastic_depth_prob * i / max(depth - 1, 1)  # 0 in the first block, rising linearly
            blocks[f"encoder_layer_{i}"] = EncoderBlock(
                v.hidden_dim, v.num_heads, v.mlp_dim, dropout, attention_dropout, drop_path
            )
        self.layers = nn.Sequential(blocks)
        self.ln = nn.LayerNorm(variant.hidden_dim, eps=LN_EPS)
        self.activation_checkpointing = False

    def add_positions(self, z: torch.Tensor) -> torch.Tensor:
        return self.dropout(z + self.pos_embedding)  # Eq. 1: + E_pos, (B, N + 1, D)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.add_positions(z)
        if self.activation_checkpointing and torch.is_grad_enabled():
            # Each block keeps only its input for the backward pass and recomputes the rest
            # there: memory for activations drops from ~L blocks' worth to ~1, for about
            # one more forward pass of compute.
            for block in self.layers:
                z = checkpoint(block, z, use_reentrant=False)
        else:
            z = self.layers(z)
        # Eq. 4's LN is applied to every token; the model keeps token 0.
        return self.ln(z)


def interpolate_pos_embedding(pos_embedding: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Position embeddings for a grid of ``num_patches`` patches from those of another grid.

    Section 3.2: the pre-trained ``E_pos`` rows of the patches are laid out on their 2D
    grid and resized to the new grid (bicubic, corners aligned, as torchvision's
    ``interpolate_embeddings``); the class token's row has no place on the grid and is kept.
    ``pos_embedding``: (1, 1 + n, D) with ``n`` a square; returns (1, 1 + num_patches, D).
    """
    _, length, dim = pos_embedding.shape
    old, new = math.isqrt(length - 1), math.isqrt(num_patches)
    if old * old != length - 1 or new * new != num_patches:
        raise ValueError(f"position embeddings of {length - 1} and {num_patches} patches are not both square grids")
    cls, grid = pos_embedding[:, :1], pos_embedding[:, 1:]
    grid = grid.reshape(1, old, old, dim).permute(0, 3, 1, 2)  # (1, D, old, old)
    grid = nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, num_patches, dim)  # (1, new * new, D), row-major as the patches
    return torch.cat([cls, grid], dim=1)


def _zero_init(head: nn.Module) -> None:
    """The head starts at zero, as in torchvision (the paper zero-initialises the head it
    fine-tunes with, Section 3.1)."""
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)


class VisionTransformer(ImageModel):
    """ViT for ``image_size`` x ``image_size`` images in ``patch_size`` patches.

    Args:
        variant: Patch size and the widths and depth of the encoder.
        num_classes: Number of output classes.
        in_channels: Channels of the input images.
        image_size: The one image size the model takes (a multiple of the patch size).
        dropout: Dropout after the position embeddings and in every residual branch.
        attention_dropout: Dropout on the attention weights.
        stochastic_depth_prob: Drop probability of the last block's residual branches.
        small_input: 4x4 patches whatever the variant's patch size, for 28-32 px images.
        activation_checkpointing: Recompute each encoder block's activations in the
            backward pass instead of storing them (same results, less memory, slower).
    """

    fast_path = False  # not measured as a CNN default; bf16-mixed is a trainer.precision away
    init_head = staticmethod(_zero_init)

    def __init__(
        self,
        variant: ViTVariant,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        stochastic_depth_prob: float = 0.0,
        small_input: bool = False,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        if small_input:
            variant = replace(variant, patch_size=SMALL_INPUT_PATCH)
        p = variant.patch_size
        if image_size % p:
            raise ConfigError(
                f"image_size={image_size} is not a multiple of the patch size {p}: a ViT cuts the image into {p}x{p} patches"
            )
        self.variant = variant
        self.num_classes, self.in_channels = num_classes, in_channels
        self.default_image_size = self.fixed_image_size = image_size
        self.num_features = d = variant.hidden_dim
        self.num_patches = (image_size // p) ** 2

        self.conv_proj = nn.Conv2d(in_channels, d, kernel_size=p, stride=p)  # the patch projection E
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))  # x_class
        self.encoder = Encoder(self.num_patches + 1, variant, dropout, attention_dropout, stochastic_depth_prob)
        self.encoder.activation_checkpointing = activation_checkpointing
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(d, num_classes)))
        _zero_init(self.heads.head)
        # Every block's output is a feature map: the patch tokens on their grid, stride P.
        self.feature_info = [FeatureInfo(f"encoder.layers.encoder_layer_{i}", d, p) for i in range(variant.depth)]
        # Stages: the patch embedding, the encoder blocks in (up to) four equal groups (the
        # last with the final LayerNorm), and the head.
        groups = min(4, variant.depth)
        bounds = [round(i * variant.depth / groups) for i in range(groups + 1)]
        blocks = tuple(
            (f"blocks{k}", tuple(f"encoder.layers.encoder_layer_{i}" for i in range(lo, hi)) + (("encoder.ln",) if k == groups else ()))
            for k, (lo, hi) in enumerate(zip(bounds, bounds[1:]), start=1)
        )  # fmt: skip
        self.spec = ModelSpec(
            classifier="heads.head", first_conv="conv_proj",
            stages=(("patch_embed", ("conv_proj", "class_token", "encoder.pos_embedding")), *blocks, ("head", ("heads",))),
        )  # fmt: skip

        fan_in = in_channels * p * p
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The class token and the embedded patches, ``z_0`` before ``E_pos``: (B, N + 1, D)."""
        x = self.conv_proj(x)  # (B, D, H/P, W/P)
        x = x.flatten(2).transpose(1, 2)  # patches as tokens: (B, N, D)
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.encoder(self._tokens(x))  # LN(z_L): (B, N + 1, D)

    def feature_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Each block's output ``z_l`` without the class token, its N = (H/P)(W/P) patch
        tokens laid back on the patch grid (row-major, as ``conv_proj`` flattened them):
        (B, D, H/P, W/P), a view of the tokens. The final LayerNorm is not applied."""
        grid = (x.shape[-2] // self.variant.patch_size, x.shape[-1] // self.variant.patch_size)
        z = self.encoder.add_positions(self._tokens(x))  # (B, N + 1, D)
        for layer in self.encoder.layers:
            z = layer(z)
            yield z[:, 1:].transpose(1, 2).unflatten(2, grid)  # (B, D, H/P, W/P)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Position embeddings trained for another image size, interpolated to this one."""
        key = "encoder.pos_embedding"
        pos = state.get(key)
        if pos is None or pos.ndim != 3 or pos.shape[1] == self.num_patches + 1 or pos.shape[2] != self.num_features:
            return state
        return {**state, key: interpolate_pos_embedding(pos, self.num_patches)}

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]  # y = LN(z_L^0), the class token: (B, D)
        return x if pre_logits else self.heads(x)  # (B, num_classes)


@dataclass(frozen=True)
class ViTVariant:
    """One row of Table 1 (with the patch size of the model's name)."""

    patch_size: int
    hidden_dim: int
    depth: int
    num_heads: int
    mlp_dim: int


VARIANTS: dict[str, ViTVariant] = {
    "vit_b_16": ViTVariant(16, 768, 12, 12, 3072),
    "vit_b_32": ViTVariant(32, 768, 12, 12, 3072),
    "vit_l_16": ViTVariant(16, 1024, 24, 16, 4096),
    "vit_l_32": ViTVariant(32, 1024, 24, 16, 4096),
    "vit_h_14": ViTVariant(14, 1280, 32, 16, 5120),
    # DeiT (Touvron et al., 2021), Table 1: DeiT-Ti and DeiT-S at 224 px in 16x16 patches.
    "vit_tiny": ViTVariant(16, 192, 12, 3, 768),
    "vit_small": ViTVariant(16, 384, 12, 6, 1536),
}


def _small(
    name: str,
    patch_size: int | None = None,
    hidden_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_dim: int | None = None,
    **kwargs,
) -> VisionTransformer:
    """A DeiT-sized ViT with any of its table entries overridden."""
    changes = dict(patch_size=patch_size, hidden_dim=hidden_dim, depth=depth, num_heads=num_heads, mlp_dim=mlp_dim)
    variant = replace(VARIANTS[name], **{k: v for k, v in changes.items() if v is not None})
    return VisionTransformer(variant, **kwargs)


@register_model(weights=torchvision_weights("ViT_B_16_Weights"))
def vit_b_16(**kwargs) -> VisionTransformer:
    return VisionTransformer(VARIANTS["vit_b_16"], **kwargs)


@register_model(weights=torchvision_weights("ViT_B_32_Weights"))
def vit_b_32(**kwargs) -> VisionTransformer:
    return VisionTransformer(VARIANTS["vit_b_32"], **kwargs)


@register_model(weights=torchvision_weights("ViT_L_16_Weights"))
def vit_l_16(**kwargs) -> VisionTransformer:
    return VisionTransformer(VARIANTS["vit_l_16"], **kwargs)


@register_model(weights=torchvision_weights("ViT_L_32_Weights"))
def vit_l_32(**kwargs) -> VisionTransformer:
    return VisionTransformer(VARIANTS["vit_l_32"], **kwargs)


@register_model(weights=torchvision_weights("ViT_H_14_Weights"))
def vit_h_14(**kwargs) -> VisionTransformer:
    return VisionTransformer(VARIANTS["vit_h_14"], **kwargs)


@register_model
def vit_tiny(**kwargs) -> VisionTransformer:
    return _small("vit_tiny", **kwargs)


@register_model
def vit_small(**kwargs) -> VisionTransformer:
    return _small("vit_small", **kwargs)
