"""ResNet-18, -34, -50, -101 and -152.

K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016 (arXiv 2015). https://arxiv.org/abs/1512.03385

A residual block learns the residual ``F`` of a mapping instead of the mapping itself
(Section 3.2):

    y = F(x, {W_i}) + x            (Eq. 1)  identity shortcut
    y = F(x, {W_i}) + W_s x        (Eq. 2)  projection shortcut, when the shape changes

followed by a ReLU, ``sigma(y)``. Batch norm comes right after every convolution and
before the activation (Section 3.4). The two residual functions of Table 1 are

    basic:       F = BN(W_2 * sigma(BN(W_1 * x)))                          3x3, 3x3
    bottleneck:  F = BN(W_3 sigma(BN(W_2 * sigma(BN(W_1 x)))))             1x1, 3x3, 1x1

where the bottleneck's 1x1 convs reduce the width to ``planes`` and restore it to
``4 * planes`` (Section 4.1, Fig. 5). The network (Table 1, 224 px input) is a 7x7/2 conv
with 64 channels, a 3x3/2 max pool, four stages ``conv2_x``..``conv5_x`` (here
``layer1``..``layer4``) of 64, 128, 256, 512 ``planes`` that halve the resolution at their
first block (except ``conv2_x``, which follows the pool), global average pooling and a
linear classifier. ``W_s`` is a 1x1 conv with batch norm (option B, Section 4.1).

Deviations from the paper (torchvision parity: its ``state_dict`` loads with
``strict=True`` and gives the same outputs):

- V1.5 stride placement: a downsampling bottleneck has its stride on the 3x3 conv
  (``conv2``), not on the first 1x1 conv as in the paper. This is what torchvision and
  most re-implementations do; it costs more (ResNet-50: 4.09 GMACs, where Table 1 gives
  3.8 billion multiply-adds) and is more accurate.
- Every shape-changing shortcut is a projection (option B), also for ResNet-18/34,
  whose ImageNet results in Table 2 use zero-padded identity shortcuts (option A).
- ``zero_init_residual=True`` (off by default) zeroes the last batch-norm scale of each
  residual branch, so that every block starts as its shortcut (Goyal et al. 2017,
  "Accurate, Large Minibatch SGD", arXiv:1706.02677); not in the paper.
- Not a deviation, for the record: convs are initialised N(0, 2 / fan_out) as in the
  paper's reference [13] (He et al. 2015) and torchvision; the classifier keeps
  PyTorch's default ``nn.Linear`` initialisation, as torchvision does.
- ``small_input=True`` (28-32 px images, not in torchvision): ``conv1`` becomes a 3x3
  stride-1 conv and ``maxpool`` an identity, so a 32 px image reaches ``layer1`` at
  32x32 instead of 8x8 (the CIFAR recipe of Section 4.2 keeps full resolution in its
  first stage as well). Module names are unchanged; ``conv1.weight`` is 3x3 instead of 7x7.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from zoo.models.base import FeatureInfo, ImageModel, ModelSpec
from zoo.models.factory import register_model
from zoo.models.weights import torchvision_weights


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with "same" padding and no bias (batch norm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (batch norm follows)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _init_weights(module: nn.Module) -> None:
    """He normal init (fan_out) for convs, BN scale 1 and shift 0; linear layers keep PyTorch's."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut: ``y = sigma(BN(W_2 * sigma(BN(W_1 * x))) + shortcut(x))``.

    Args:
        in_channels: Input channels.
        planes: Width of the block; the output has ``planes * expansion`` channels.
        stride: Stride of the first conv (2 at the start of ``layer2``..``layer4``).
        downsample: The projection shortcut ``W_s`` (Eq. 2), or ``None`` for identity (Eq. 1).
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The batch norm that ends the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, planes, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # F(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a shortcut; the stride sits on the 3x3 (V1.5).

    Args:
        in_channels: Input channels.
        planes: Width of the 3x3 conv; the output has ``planes * expansion`` channels.
        stride: Stride of the 3x3 conv (2 at the start of ``layer2``..``layer4``).
        downsample: The projection shortcut ``W_s`` (Eq. 2), or ``None`` for identity (Eq. 1).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        # The paper puts the stride on conv1 (V1); torchvision on this 3x3 conv (V1.5).
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The batch norm that ends the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, 4 planes, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # F(x): (B, 4 planes, H/s, W/s)
        return self.relu(out + shortcut)


class ResNet(ImageModel):
    """ResNet built from a row of the variants table (block type, blocks per stage).

    Args:
        variant: Block type and number of blocks in each of the four stages.
        num_classes: Number of output classes.
        in_channels: Channels of the input images.
        small_input: 3x3 stride-1 ``conv1`` and no max pool, for 28-32 px images.
        zero_init_residual: Zero the last batch-norm scale of every residual branch.
    """

    # Every conv and the max pool are padded, so even a 1x1 image goes through
    # (torchvision: min_size (1, 1)); smaller maps just end at 1x1.
    min_image_size = 1

    def __init__(
        self,
        variant: ResNetVariant,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.variant, self.small_input, self.zero_init_residual = variant, small_input, zero_init_residual
        self.num_classes, self.in_channels = num_classes, in_channels
        block = variant.block
        self.num_features = STAGE_PLANES[-1] * block.expansion

        width = STEM_CHANNELS
        if small_input:
            self.conv1 = conv3x3(in_channels, width)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)

        for i, (planes, n_blocks) in enumerate(zip(STAGE_PLANES, variant.layers), start=1):
            stride = 1 if i == 1 else 2  # conv2_x follows the max pool; later stages halve
            out = planes * block.expansion
            downsample = None
            if stride != 1 or width != out:  # option B: project only when the shape changes
                downsample = nn.Sequential(conv1x1(width, out, stride), nn.BatchNorm2d(out))
            blocks = [block(width, planes, stride, downsample)]
            blocks += [block(out, planes) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            width = out

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        # The stem (after the max pool) and layer1..layer4: strides 4, 4, 8, 16, 32, or
        # 1, 1, 2, 4, 8 with the small-input stem.
        reduction = 1 if small_input else 4
        self.feature_info = [FeatureInfo("maxpool", STEM_CHANNELS, reduction)]
        for i, planes in enumerate(STAGE_PLANES, start=1):
            reduction *= 1 if i == 1 else 2
            self.feature_info.append(FeatureInfo(f"layer{i}", planes * block.expansion, reduction))
        layers = tuple((f"layer{i}", (f"layer{i}",)) for i in range(1, len(STAGE_PLANES) + 1))
        self.spec = ModelSpec(
            classifier="fc", first_conv="conv1",
            stages=(("stem", ("conv1", "bn1", "relu", "maxpool")), *layers, ("head", ("fc",))),
        )  # fmt: skip
        _init_weights(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_norm.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for a 224 px image (small_input, 32 px: 32 -> 32, 32, 16, 8, 4).
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 64, 112, 112)
        x = self.maxpool(x)  # (B, 64, 56, 56)
        x = self.layer1(x)  # (B, 64 e, 56, 56), e = block expansion (1 or 4)
        x = self.layer2(x)  # (B, 128 e, 28, 28)
        x = self.layer3(x)  # (B, 256 e, 14, 14)
        return self.layer4(x)  # (B, 512 e, 7, 7)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)  # (B, num_features)
        return x if pre_logits else self.fc(x)  # (B, num_classes)

    def feature_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        yield x  # stem: (B, 64, H/4, W/4)
        for i in range(1, len(STAGE_PLANES) + 1):
            x = getattr(self, f"layer{i}")(x)
            yield x  # (B, 64 e 2^(i-1), H/2^(i+1), W/2^(i+1))


@dataclass(frozen=True)
class ResNetVariant:
    """One column of Table 1: the block type and the number of blocks in conv2_x..conv5_x."""

    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]


# Table 1 of the paper: conv1 has 64 channels; conv2_x..conv5_x have these widths.
STEM_CHANNELS = 64
STAGE_PLANES: tuple[int, ...] = (64, 128, 256, 512)
VARIANTS: dict[str, ResNetVariant] = {
    "resnet18": ResNetVariant(BasicBlock, (2, 2, 2, 2)),
    "resnet34": ResNetVariant(BasicBlock, (3, 4, 6, 3)),
    "resnet50": ResNetVariant(Bottleneck, (3, 4, 6, 3)),
    "resnet101": ResNetVariant(Bottleneck, (3, 4, 23, 3)),
    "resnet152": ResNetVariant(Bottleneck, (3, 8, 36, 3)),
}


@register_model(weights=torchvision_weights("ResNet18_Weights"))
def resnet18(**kwargs) -> ResNet:
    return ResNet(VARIANTS["resnet18"], **kwargs)


@register_model(weights=torchvision_weights("ResNet34_Weights"))
def resnet34(**kwargs) -> ResNet:
    return ResNet(VARIANTS["resnet34"], **kwargs)


@register_model(weights=torchvision_weights("ResNet50_Weights"))
def resnet50(**kwargs) -> ResNet:
    return ResNet(VARIANTS["resnet50"], **kwargs)


@register_model(weights=torchvision_weights("ResNet101_Weights"))
def resnet101(**kwargs) -> ResNet:
    return ResNet(VARIANTS["resnet101"], **kwargs)


@register_model(weights=torchvision_weights("ResNet152_Weights"))
def resnet152(**kwargs) -> ResNet:
    return ResNet(VARIANTS["resnet152"], **kwargs)
