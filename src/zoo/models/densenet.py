"""DenseNet-121, -161, -169 and -201 (DenseNet-BC).

G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger, "Densely Connected Convolutional
Networks", CVPR 2017 (arXiv 2016). https://arxiv.org/abs/1608.06993

Where a ResNet adds a layer's output to its input, ``x_l = H_l(x_{l-1}) + x_{l-1}``
(Eq. 1), layer ``l`` of a dense block sees the concatenation of the feature maps of all
the layers before it (Section 3, Eq. 2):

    x_l = H_l([x_0, x_1, ..., x_{l-1}])

Each ``H_l`` adds ``k`` maps (the growth rate), so layer ``l`` has ``k_0 + k (l - 1)``
inputs. With the bottleneck (DenseNet-B) it is

    H_l(x) = W_2 * ReLU(BN(W_1 ReLU(BN(x))))      W_1: 1x1 to 4k maps, W_2: 3x3 to k maps

and a transition layer between two blocks, BN -> 1x1 conv -> 2x2 average pool (stride 2),
compresses ``m`` maps to ``floor(theta m)`` with ``theta = 0.5`` (DenseNet-C; both
together: DenseNet-BC). The ImageNet networks (Table 1) start with a 7x7/2 conv of ``2k``
channels and a 3x3/2 max pool, have four dense blocks and three transitions, and end with
global average pooling and a linear classifier. Since every ``H_l`` starts with BN-ReLU,
the last block's output goes through a final BN (``norm5``) and ReLU before the pooling,
as in the authors' code and torchvision.

Deviations from the paper (torchvision parity: its ``state_dict`` loads with
``strict=True`` and gives the same outputs):

- DenseNet-161 (k = 48, blocks 6-12-36-24) is not in Table 1; the authors released it
  with their code, and torchvision ships it. DenseNet-264 (Table 1) is not registered
  here, since torchvision has no reference to check it against.
- ``drop_rate`` (default 0, as for ImageNet in the paper) drops out each layer's ``k``
  new maps only, as torchvision does; Section 4.2 puts dropout after every conv but the
  first, and used it only on the CIFAR and SVHN sets without data augmentation.
- ``memory_efficient=True`` recomputes the concatenation, BN, ReLU and 1x1 conv of each
  layer during the backward pass (G. Pleiss et al., "Memory-Efficient Implementation of
  DenseNets", 2017, arXiv:1707.06990) with ``torch.utils.checkpoint``: the same outputs
  and gradients for memory quadratic -> linear in depth. The recomputation normalises
  with the batch statistics again but does not update the running statistics a second
  time (torchvision's version does, so its running statistics drift from the plain model).
- The paper gives no initialisation; we use torchvision's: N(0, 2 / fan_in) for convs,
  BN scale 1 and shift 0, classifier bias 0 (PyTorch's default for its weights).
- ``small_input=True`` (28-32 px images, not in torchvision): ``conv0`` becomes a 3x3
  stride-1 conv and ``pool0`` an identity, so a 32 px image reaches the first block at
  32x32 and the last at 4x4 instead of 1x1. This keeps the ImageNet network (the paper's
  CIFAR DenseNets have three blocks and fewer channels). Module names are unchanged;
  ``conv0.weight`` is 3x3 instead of 7x7.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.models.base import FeatureInfo, ImageModel, ModelSpec
from zoo.models.factory import register_model
from zoo.models.weights import torchvision_weights


def _init_weights(module: nn.Module) -> None:
    """torchvision's DenseNet init (see the module docstring)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)  # fan_in, gain sqrt(2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class DenseLayer(nn.Module):
    """``H_l``: BN-ReLU-1x1 conv to ``bn_size * k`` maps, BN-ReLU-3x3 conv to ``k`` maps.

    Takes the list ``[x_0, ..., x_{l-1}]`` and returns the ``k`` new maps ``x_l``; the
    concatenation happens inside, so that ``memory_efficient`` can recompute it.

    Args:
        in_channels: Channels of the concatenated input, ``k_0 + k (l - 1)``.
        growth_rate: ``k``, the number of maps the layer adds.
        bn_size: Width of the bottleneck in units of ``k`` (4 in the paper).
        drop_rate: Dropout probability on the new maps.
        memory_efficient: Recompute the bottleneck in the backward pass instead of storing it.
    """

    def __init__(
        self, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float = 0.0, memory_efficient: bool = False
    ):
        super().__init__()
        width = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        self.drop_rate, self.memory_efficient = drop_rate, memory_efficient

    def bottleneck(self, features: list[torch.Tensor], recomputing: bool = False) -> torch.Tensor:
        """``W_1 ReLU(BN([x_0, ..., x_{l-1}]))``: (B, bn_size * k, H, W)."""
        x = torch.cat(features, 1)  # (B, k_0 + k (l - 1), H, W)
        if recomputing and self.norm1.training:
            # The forward pass already updated the running statistics. Normalise with the
            # batch statistics again (what training-mode BN does) and let throwaway copies
            # take the second update; the op, and what it saves for backward, stay the same.
            n = self.norm1
            stats = (n.running_mean.clone(), n.running_var.clone())
            x = F.batch_norm(x, *stats, n.weight, n.bias, training=True, momentum=0.0, eps=n.eps)
        else:
            x = self.norm1(x)
        return self.conv1(self.relu1(x))

    def _checkpointed_bottleneck(self, features: list[torch.Tensor]) -> torch.Tensor:
        calls = 0

        def run(*inputs: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1  # 1: forward; 2: recomputation in backward
            return self.bottleneck(list(inputs), recomputing=calls > 1)

        return checkpoint(run, *features, use_reentrant=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # Whenever autograd records, not only when an input requires grad (torchvision's
        # test), so that the first block behind a frozen stem is checkpointed too.
        if self.memory_efficient and torch.is_grad_enabled():
            h = self._checkpointed_bottleneck(features)  # only the inputs are kept for backward
        else:
            h = self.bottleneck(features)  # (B, bn_size k, H, W)
        h = self.conv2(self.relu2(self.norm2(h)))  # (B, k, H, W)
        if self.drop_rate > 0:
            h = F.dropout(h, p=self.drop_rate, training=self.training)
        return h


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; the output is the concatenation ``[x_0, x_1, ..., x_L]``.

    A ``ModuleDict`` (``denselayer1``, ``denselayer2``, ...) as in torchvision's state_dict.

    Args:
        num_layers: Number of layers ``L``.
        in_channels: Channels ``k_0`` of the block's input.
        growth_rate: ``k``.
        bn_size: Bottleneck width in units of ``k``.
        drop_rate: Dropout probability on each layer's new maps.
        memory_efficient: Recompute each layer's bottleneck in the backward pass.
    """

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ):
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient)
            self[f"denselayer{i + 1}"] = layer
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]  # x_0: (B, k_0, H, W)
        for layer in self.values():
            features.append(layer(features))  # x_l: (B, k, H, W)
        return torch.cat(features, 1)  # (B, k_0 + L k, H, W)


class Transition(nn.Sequential):
    """BN -> ReLU -> 1x1 conv -> 2x2 average pool (stride 2) between two dense blocks.

    Args:
        in_channels: Channels ``m`` coming out of the dense block.
        out_channels: ``floor(theta m)``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            OrderedDict(
                norm=nn.BatchNorm2d(in_channels),
                relu=nn.ReLU(inplace=True),
                conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                pool=nn.AvgPool2d(2, stride=2),
            )
        )


class DenseNet(ImageModel):
    """DenseNet-BC built from a row of the variants table (growth rate, layers per block).

    Args:
        variant: Growth rate ``k`` and the number of layers in each dense block.
        num_classes: Number of output classes.
        in_channels: Channels of the input images.
        small_input: 3x3 stride-1 ``conv0`` and no ``pool0``, for 28-32 px images.
        memory_efficient: Recompute each layer's concatenation and bottleneck during the
            backward pass (same results, less memory, slower).
        drop_rate: Dropout probability on the new maps of every dense layer.
    """

    init_head = staticmethod(_init_weights)  # a new head starts as the constructor's (zero bias)

    def __init__(
        self,
        variant: DenseNetVariant,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        memory_efficient: bool = False,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.variant, self.small_input = variant, small_input
        self.num_classes, self.in_channels = num_classes, in_channels
        k = variant.growth_rate
        width = 2 * k  # "2k convolutions of size 7x7 with stride 2" (Section 3, implementation details)

        if small_input:
            conv0 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        else:
            conv0 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        stem = OrderedDict(
            conv0=conv0,
            norm0=nn.BatchNorm2d(width),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.features = nn.Sequential(stem)
        reduction = 1 if small_input else 4
        # Feature maps: the stem, then each dense block's output after the batch norm that
        # follows it (the next transition's, or norm5), before its ReLU.
        self.feature_info = [FeatureInfo("features.pool0", width, reduction)]
        n_blocks = len(variant.block_config)
        for i, num_layers in enumerate(variant.block_config, start=1):
            block = DenseBlock(num_layers, width, k, BN_SIZE, drop_rate, memory_efficient)
            self.features.add_module(f"denseblock{i}", block)
            width = block.out_channels
            norm = f"features.transition{i}.norm" if i < n_blocks else "features.norm5"
            self.feature_info.append(FeatureInfo(norm, width, reduction))
            if i < n_blocks:
                out = math.floor(COMPRESSION * width)
                self.features.add_module(f"transition{i}", Transition(width, out))
                width, reduction = out, reduction * 2
        self.features.add_module("norm5", nn.BatchNorm2d(width))
        self.num_features = width
        self.classifier = nn.Linear(width, num_classes)

        # Each transition's 2x2 pool needs a map of at least 2 px, so the first block needs
        # 2^(n_blocks - 1); the default stem divides by 4, rounding up (torchvision: 29 px).
        first_block = 2 ** (n_blocks - 1)
        self.min_image_size = first_block if small_input else 4 * (first_block - 1) + 1
        # Stage i is dense block i with the transition that follows it (norm5 for the last).
        blocks = tuple(
            (f"denseblock{i}", (f"features.denseblock{i}", f"features.transition{i}" if i < n_blocks else "features.norm5"))
            for i in range(1, n_blocks + 1)
        )  # fmt: skip
        stem = tuple(f"features.{name}" for name in stem)
        self.spec = ModelSpec(
            classifier="classifier", first_conv="features.conv0", stages=(("stem", stem), *blocks, ("head", ("classifier",)))
        )  # fmt: skip
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for a 224 px image; C_i is the width after block i (DenseNet-121: 64 at
        # the stem, C_1..C_4 = 256, 512, 1024, 1024, halved by each transition).
        return self.features(x)  # stem (B, 2k, 56, 56) -> blocks 56, 28, 14, 7 -> (B, C_4, 7, 7)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.relu(x)  # the final BN (norm5) is followed by a ReLU, then global pooling
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, num_features)
        return x if pre_logits else self.classifier(x)  # (B, num_classes)

    def feature_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        f = self.features
        x = f.pool0(f.relu0(f.norm0(f.conv0(x))))
        yield x  # stem: (B, 2k, H/4, W/4)
        n_blocks = len(self.variant.block_config)
        for i in range(1, n_blocks + 1):
            x = getattr(f, f"denseblock{i}")(x)  # (B, C_i, H/2^(i+1), W/2^(i+1))
            if i == n_blocks:
                yield f.norm5(x)
                return
            transition = getattr(f, f"transition{i}")
            y = transition.norm(x)
            yield y
            # Not the transition's in-place ReLU: it would overwrite the map just yielded.
            x = transition.pool(transition.conv(torch.relu(y)))


@dataclass(frozen=True)
class DenseNetVariant:
    """One column of Table 1: growth rate ``k`` and the number of layers in each dense block."""

    growth_rate: int
    block_config: tuple[int, ...]


# Section 3: bottleneck width 4k, compression theta = 0.5 (DenseNet-BC).
BN_SIZE, COMPRESSION = 4, 0.5
VARIANTS: dict[str, DenseNetVariant] = {
    "densenet121": DenseNetVariant(growth_rate=32, block_config=(6, 12, 24, 16)),
    "densenet161": DenseNetVariant(growth_rate=48, block_config=(6, 12, 36, 24)),  # authors' release
    "densenet169": DenseNetVariant(growth_rate=32, block_config=(6, 12, 32, 32)),
    "densenet201": DenseNetVariant(growth_rate=32, block_config=(6, 12, 48, 32)),
}


@register_model(weights=torchvision_weights("DenseNet121_Weights"))
def densenet121(**kwargs) -> DenseNet:
    return DenseNet(VARIANTS["densenet121"], **kwargs)


@register_model(weights=torchvision_weights("DenseNet161_Weights"))
def densenet161(**kwargs) -> DenseNet:
    return DenseNet(VARIANTS["densenet161"], **kwargs)


@register_model(weights=torchvision_weights("DenseNet169_Weights"))
def densenet169(**kwargs) -> DenseNet:
    return DenseNet(VARIANTS["densenet169"], **kwargs)


@register_model(weights=torchvision_weights("DenseNet201_Weights"))
def densenet201(**kwargs) -> DenseNet:
    return DenseNet(VARIANTS["densenet201"], **kwargs)
