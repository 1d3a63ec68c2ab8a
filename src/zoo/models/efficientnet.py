"""EfficientNet B0-B7.

M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019. https://arxiv.org/abs/1905.11946

The baseline B0 (Table 1, found by architecture search) is a stem conv 3x3/2, seven
stages of MBConv blocks (the inverted bottleneck of MobileNetV2, Sandler et al. 2018,
with squeeze-and-excitation, Hu et al. 2018), a 1x1 conv to 1280 channels, global
average pooling, dropout and a linear classifier. Every conv is followed by batch norm;
the non-linearity is SiLU/Swish, ``x * sigmoid(x)``. An MBConv block with expansion
``e``, kernel ``k`` and stride ``s`` computes

    h = SiLU(BN(W_expand x))              1x1, C_in -> e C_in    (skipped when e = 1)
    h = SiLU(BN(W_dw * h))                depthwise k x k, stride s
    h = s(h) * h,  s(h) = sigmoid(W2 SiLU(W1 GAP(h)))    SE, squeeze to C_in / 4
    h = BN(W_project h)                   1x1, e C_in -> C_out, no activation
    y = x + StochasticDepth(h)            if s = 1 and C_in = C_out, else y = h

Stochastic depth (Huang et al. 2016) drops the residual branch of block ``i`` of ``N``
with probability ``p_i = 0.2 i / N`` during training (linearly increasing with depth),
and is the identity at inference.

Compound scaling (Section 3.3, Eq. 3): depth ``d = alpha^phi``, width ``w = beta^phi``,
resolution ``r = gamma^phi`` with ``alpha = 1.2, beta = 1.1, gamma = 1.15`` chosen so
that ``alpha beta^2 gamma^2 ~ 2`` (FLOPs roughly double per unit of ``phi``). The
released B1-B7 use rounded coefficients, listed in ``VARIANTS`` as in the authors' code
(tensorflow/tpu, ``efficientnet_builder.efficientnet_params``) and torchvision:
channels become ``round_filters(c * w)`` (nearest multiple of 8, never more than 10%
below) and each stage's layer count ``ceil(L * d)``.

Deviations from the paper (torchvision parity; its ``state_dict`` loads with
``strict=True`` and gives the same outputs):

- Batch norm: B0-B4 use PyTorch's defaults (eps 1e-5, momentum 0.1), B5-B7 eps 1e-3
  and momentum 0.01, as torchvision does for the checkpoints it ships; the authors'
  code uses eps 1e-3 and moving-average decay 0.99 (momentum 0.01) everywhere.
- Padding is symmetric, ``(k - 1) // 2``, instead of TensorFlow's "same" padding, which
  is asymmetric for stride-2 convolutions on even-sized inputs.
- ``default_image_size`` is the paper's resolution; torchvision's B2 weights are
  evaluated at 288 px instead of 260.
- Not a deviation, for the record: weights are initialised as in the authors' code and
  torchvision, N(0, 2 / fan_out) for convs and U(+-1/sqrt(num_classes)) for the classifier.
- ``small_input=True`` (28-32 px images): the stem convolution has stride 1, so a 32 px
  image ends at 2x2 instead of 1x1. Module names and weight shapes are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from zoo.layers.conv import ConvNormAct
from zoo.layers.squeeze_excitation import SqueezeExcitation
from zoo.layers.stochastic_depth import StochasticDepth
from zoo.models.base import FeatureInfo, ModelSpec, SequentialTrunkModel
from zoo.models.factory import register_model
from zoo.models.weights import torchvision_weights


def round_filters(channels: int, width_mult: float, divisor: int = 8) -> int:
    """``channels * width_mult`` rounded to the nearest multiple of ``divisor``, never < 90% of it."""
    scaled = channels * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def round_repeats(layers: int, depth_mult: float) -> int:
    """Layers of a stage after depth scaling: ``ceil(layers * depth_mult)``."""
    return int(math.ceil(layers * depth_mult))


def _silu() -> nn.Module:
    return nn.SiLU(inplace=True)


def _init_weights(module: nn.Module) -> None:
    """torchvision's EfficientNet init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation and stochastic depth.

    Args:
        in_channels: Input channels ``C_in``.
        out_channels: Output channels ``C_out``.
        expand_ratio: Expansion ``e`` of the hidden width (1 skips the expansion conv).
        kernel_size: Depthwise kernel size ``k``.
        stride: Depthwise stride (1 or 2).
        drop_prob: Stochastic-depth drop probability of the residual branch.
        bn_eps: Batch-norm epsilon.
        bn_momentum: Batch-norm momentum.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        drop_prob: float = 0.0,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MBConv stride must be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and in_channels == out_channels
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if hidden != in_channels:
            layers.append(ConvNormAct(in_channels, hidden, 1, activation=_silu, **bn))
        layers += [
            ConvNormAct(hidden, hidden, kernel_size, stride=stride, groups=hidden, activation=_silu, **bn),
            # SE ratio 0.25 of the block's *input* channels, as in the authors' code.
            SqueezeExcitation(hidden, max(1, in_channels // 4), activation=_silu),
            ConvNormAct(hidden, out_channels, 1, activation=None, **bn),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_prob, mode="row")
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(x)  # (B, C_out, H / stride, W / stride)
        if self.use_res_connect:
            h = self.stochastic_depth(h) + x
        return h


class EfficientNet(SequentialTrunkModel):
    """EfficientNet built from the B0 stage table and a variant's scaling coefficients.

    Args:
        variant: Scaling coefficients, resolution, dropout and batch-norm settings.
        num_classes: Number of output classes.
        in_channels: Channels of the input images.
        dropout: Dropout before the classifier; ``None`` takes the variant's.
        stochastic_depth_prob: Block ``i`` of ``N`` drops its branch with ``p = prob * i / N``.
        small_input: Stride-1 stem, for 28-32 px images.
    """

    min_image_size = 1  # every layer is "same"-padded, so even a 1x1 image goes through
    init_head = staticmethod(_init_weights)  # a new head starts as the constructor's

    def __init__(
        self,
        variant: EfficientNetVariant,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float | None = None,
        stochastic_depth_prob: float = 0.2,
        small_input: bool = False,
    ):
        super().__init__()
        w, d = variant.width_mult, variant.depth_mult
        bn = {"bn_eps": variant.bn_eps, "bn_momentum": variant.bn_momentum}
        self.variant, self.small_input = variant, small_input
        self.num_classes, self.in_channels = num_classes, in_channels
        self.default_image_size = variant.resolution

        width = round_filters(STEM_CHANNELS, w)
        layers: list[nn.Module] = [
            ConvNormAct(in_channels, width, 3, stride=1 if small_input else 2, activation=_silu, **bn)
        ]
        repeats = [round_repeats(row.layers, d) for row in B0_STAGES]
        total, block_id = sum(repeats), 0
        reduction = 1 if small_input else 2
        # Feature maps: the last stage at each stride (stages 1, 2, 3, 5, 7 of Table 1's
        # MBConv rows), strides 2, 4, 8, 16, 32; the stem and the 1x1 head conv are not.
        self.feature_info = []
        for k, (row, n) in enumerate(zip(B0_STAGES, repeats), start=1):
            reduction *= row.stride
            out = round_filters(row.channels, w)
            if k == len(B0_STAGES) or B0_STAGES[k].stride > 1:
                self.feature_info.append(FeatureInfo(f"features.{k}", out, reduction))
            blocks = []
            for i in range(n):
                drop_prob = stochastic_depth_prob * block_id / total  # linear in depth
                stride = row.stride if i == 0 else 1
                blocks.append(MBConv(width, out, row.expand_ratio, row.kernel, stride, drop_prob, **bn))
                width, block_id = out, block_id + 1
            layers.append(nn.Sequential(*blocks))
        self.num_features = round_filters(HEAD_CHANNELS, w)
        layers.append(ConvNormAct(width, self.num_features, 1, activation=_silu, **bn))

        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=variant.dropout if dropout is None else dropout),
            nn.Linear(self.num_features, num_classes),
        )
        # B0 at 224 px: maps (B, 16, 112, 112), (B, 24, 56, 56), (B, 40, 28, 28), (B, 112, 14, 14),
        # (B, 320, 7, 7); the 1x1 head conv gives (B, num_features, 7, 7) to the pool.
        stages = tuple((f"stage{i}", (f"features.{i}",)) for i in range(1, len(B0_STAGES) + 1))
        self.spec = ModelSpec(
            classifier="classifier.1", first_conv="features.0.0",
            stages=(("stem", ("features.0",)), *stages, ("conv_head", (f"features.{len(layers) - 1}",)),
                    ("head", ("avgpool", "classifier"))),
        )  # fmt: skip
        _init_weights(self)


@dataclass(frozen=True)
class StageConfig:
    """One MBConv row of Table 1 (B0): block type MBConv``expand_ratio``, kernel, layers."""

    expand_ratio: int
    kernel: int
    stride: int
    channels: int
    layers: int


# Table 1 of the paper (B0). Stage 1 (stem) is conv 3x3/2 with 32 channels and stage 9
# (head) conv 1x1 with 1280; strides are where the resolution column halves.
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
B0_STAGES: tuple[StageConfig, ...] = (
    StageConfig(expand_ratio=1, kernel=3, stride=1, channels=16, layers=1),  # stage 2, 112 -> 112
    StageConfig(expand_ratio=6, kernel=3, stride=2, channels=24, layers=2),  # stage 3, 112 -> 56
    StageConfig(expand_ratio=6, kernel=5, stride=2, channels=40, layers=2),  # stage 4, 56 -> 28
    StageConfig(expand_ratio=6, kernel=3, stride=2, channels=80, layers=3),  # stage 5, 28 -> 14
    StageConfig(expand_ratio=6, kernel=5, stride=1, channels=112, layers=3),  # stage 6, 14 -> 14
    StageConfig(expand_ratio=6, kernel=5, stride=2, channels=192, layers=4),  # stage 7, 14 -> 7
    StageConfig(expand_ratio=6, kernel=3, stride=1, channels=320, layers=1),  # stage 8, 7 -> 7
)


@dataclass(frozen=True)
class EfficientNetVariant:
    """Compound-scaling coefficients of one variant (authors' code / torchvision)."""

    width_mult: float
    depth_mult: float
    resolution: int
    dropout: float
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1


_TF_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}  # B5-B7: torchvision ports TF weights
VARIANTS: dict[str, EfficientNetVariant] = {
    "b0": EfficientNetVariant(width_mult=1.0, depth_mult=1.0, resolution=224, dropout=0.2),
    "b1": EfficientNetVariant(width_mult=1.0, depth_mult=1.1, resolution=240, dropout=0.2),
    "b2": EfficientNetVariant(width_mult=1.1, depth_mult=1.2, resolution=260, dropout=0.3),
    "b3": EfficientNetVariant(width_mult=1.2, depth_mult=1.4, resolution=300, dropout=0.3),
    "b4": EfficientNetVariant(width_mult=1.4, depth_mult=1.8, resolution=380, dropout=0.4),
    "b5": EfficientNetVariant(width_mult=1.6, depth_mult=2.2, resolution=456, dropout=0.4, **_TF_BN),
    "b6": EfficientNetVariant(width_mult=1.8, depth_mult=2.6, resolution=528, dropout=0.5, **_TF_BN),
    "b7": EfficientNetVariant(width_mult=2.0, depth_mult=3.1, resolution=600, dropout=0.5, **_TF_BN),
}


@register_model(weights=torchvision_weights("EfficientNet_B0_Weights"))
def efficientnet_b0(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b0"], **kwargs)


@register_model(weights=torchvision_weights("EfficientNet_B1_Weights"))
def efficientnet_b1(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b1"], **kwargs)


@register_model(weights=torchvision_weights("EfficientNet_B2_Weights"))
def efficientnet_b2(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b2"], **kwargs)


@register_model(weights=torchvision_weights("EfficientNet_B3_Weights"))
def efficientnet_b3(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b3"], **kwargs)


@register_model(weights=torchvision_weights("EfficientNet_B4_Weights"))
def efficientnet_b4(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b4"], **kwargs)


@register_model(weights=torchvision_weights("EfficientNet_B5_Weights"))
def efficientnet_b5(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b5"], **kwargs)


@register_model(weights=torchvision_weights("EfficientNet_B6_Weights"))
def efficientnet_b6(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b6"], **kwargs)


@register_model(weights=torchvision_weights("EfficientNet_B7_Weights"))
def efficientnet_b7(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b7"], **kwargs)
