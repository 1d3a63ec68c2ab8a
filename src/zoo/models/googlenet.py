"""GoogLeNet (Inception v1).

C. Szegedy, W. Liu, Y. Jia, P. Sermanet, S. Reed, D. Anguelov, D. Erhan, V. Vanhoucke,
A. Rabinovich, "Going Deeper with Convolutions", 2014. https://arxiv.org/abs/1409.4842

An Inception module (Figure 2b) runs four branches on the same input and concatenates
them along channels:

    y = concat( conv1x1(x),
                conv3x3(conv1x1_reduce(x)),
                conv5x5(conv1x1_reduce(x)),
                conv1x1_proj(maxpool3x3/1(x)) )

where every convolution is followed by a ReLU and the 1x1 "reduce" convolutions cut the
channels before the expensive 3x3 and 5x5 ones. Table 1 gives the widths of the nine
modules (3a, 3b, 4a-4e, 5a, 5b), transcribed below as ``INCEPTION_TABLE``.

Network for a 224x224 input (Table 1): conv 7x7/2 -> maxpool 3x3/2 -> conv 1x1 ->
conv 3x3 -> maxpool 3x3/2 -> 3a, 3b -> maxpool 3x3/2 -> 4a..4e -> maxpool -> 5a, 5b ->
global average pool -> dropout -> linear. Two auxiliary classifiers (Section 5) sit on
the outputs of 4a and 4d: avg pool 5x5/3 -> conv 1x1 (128) -> fc 1024 -> dropout 0.7 ->
linear; during training their losses are added with weight 0.3, at inference they are
discarded. In training mode :meth:`GoogLeNet.forward` returns
``(logits, aux2_logits, aux1_logits)`` (torchvision's order), in eval mode ``logits``.

Deviations from the paper (all follow torchvision so that its ``state_dict`` loads with
``strict=True`` and gives the same outputs):

- Every convolution is conv (no bias) -> batch norm (eps 1e-3) -> ReLU (torchvision's
  ``BasicConv2d``); batch norm postdates the paper. The two local response
  normalisation layers of the stem are therefore omitted.
- The "5x5" branch uses a 3x3 convolution, a known torchvision quirk
  (pytorch/vision#906) kept because the weight shapes must match its checkpoints.
- The auxiliary classifiers pool with adaptive average pooling to 4x4 instead of a
  5x5/3 average pool (the same 4x4 output on a 14x14 map, slightly different windows),
  and their 1x1 convolution has batch norm.
- The last max pool (after 4e) is 2x2/2 instead of 3x3/2 (same 7x7 output); all max
  pools use ``ceil_mode=True``.
- Global average pooling is adaptive (any input size >= 15 px) instead of 7x7/1.
- Head dropout defaults to 0.2 (torchvision) instead of the paper's 0.4.
- Weights are initialised from N(0, 0.01) (truncated at +-2), as torchvision does.
- torchvision's ``transform_input`` (re-normalising inputs for the Inception weights
  ported from TensorFlow) is not implemented: we never load those weights.
- ``small_input=True`` (28-32 px images): the first convolution has stride 1 and the two
  stem max pools are identities, so a 32 px image reaches the Inception stages at
  32/16/8 px, as a 224 px image reaches them at 28/14/7. Module names and weight shapes
  are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import FeatureInfo, ImageModel, ModelSpec
from zoo.models.factory import register_model
from zoo.models.weights import torchvision_weights


def _init_weights(module: nn.Module) -> None:
    """torchvision's GoogLeNet init: N(0, 0.01) for conv/linear weights, BN to identity."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2.0, b=2.0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicConv2d(nn.Module):
    """conv (no bias) -> BN (eps 1e-3) -> ReLU, with torchvision's ``conv``/``bn`` names."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


@dataclass(frozen=True)
class InceptionConfig:
    """One row of Table 1: output channels of each branch of an Inception module."""

    name: str
    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    ch5x5_reduce: int
    ch5x5: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


class Inception(nn.Module):
    """Four parallel branches concatenated along channels (Figure 2b)."""

    def __init__(self, in_channels: int, cfg: InceptionConfig):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, cfg.ch1x1, 1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, cfg.ch3x3_reduce, 1),
            BasicConv2d(cfg.ch3x3_reduce, cfg.ch3x3, 3, padding=1),
        )
        # The paper's 5x5 convolution is 3x3 here: torchvision's checkpoints have 3x3 weights.
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, cfg.ch5x5_reduce, 1),
            BasicConv2d(cfg.ch5x5_reduce, cfg.ch5x5, 3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, cfg.pool_proj, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, dim=1)  # (B, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)


class InceptionAux(nn.Module):
    """Auxiliary classifier (Section 5): pool to 4x4 -> conv 1x1 (128) -> fc 1024 -> fc."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))  # (B, C, 4, 4)
        x = self.conv(x).flatten(1)  # (B, 2048)
        x = self.dropout(F.relu(self.fc1(x), inplace=True))  # (B, 1024)
        return self.fc2(x)  # (B, num_classes)


class GoogLeNet(ImageModel):
    """GoogLeNet with optional auxiliary classifiers; see the module docstring.

    Args:
        num_classes: Number of output classes.
        in_channels: Channels of the input images.
        aux_logits: Build the two auxiliary classifiers (used in training mode only).
        dropout: Dropout before the final linear layer.
        dropout_aux: Dropout inside the auxiliary classifiers.
        small_input: Stride-1 stem without max pools, for 28-32 px images.
    """

    default_image_size = 224
    init_head = staticmethod(_init_weights)  # new heads start as the constructor's

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        small_input: bool = False,
    ):
        super().__init__()
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, 1024
        self.aux_logits, self.small_input = aux_logits, small_input
        # Smallest side for which maxpool3 still has an output (torchvision: min_size 15).
        self.min_image_size = 2 if small_input else 15

        stem_stride = 1 if small_input else 2
        self.conv1 = BasicConv2d(in_channels, 64, 7, stride=stem_stride, padding=3)
        self.maxpool1 = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, ceil_mode=True)

        channels = {}  # output channels of each module, to size the next one and the aux heads
        width = 192
        for cfg in INCEPTION_TABLE:
            setattr(self, f"inception{cfg.name}", Inception(width, cfg))
            width = channels[cfg.name] = cfg.out_channels
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            self.aux1 = InceptionAux(channels["4a"], num_classes, dropout=dropout_aux)
            self.aux2 = InceptionAux(channels["4d"], num_classes, dropout=dropout_aux)

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(width, num_classes)
        # The stem's output, then each group's last module (3b, 4e, 5b) before the max
        # pool that follows it: strides 8, 8, 16, 32 (small_input: 1, 1, 2, 4).
        reduction = 1 if small_input else 8
        self.feature_info = [
            FeatureInfo("maxpool2", 192, reduction),
            FeatureInfo("inception3b", channels["3b"], reduction),
            FeatureInfo("inception4e", channels["4e"], reduction * 2),
            FeatureInfo("inception5b", channels["5b"], reduction * 4),
        ]
        # The auxiliary classifiers belong to ``head``: like ``fc`` they map features to
        # logits and are reset with it, so freezing all but the head leaves them trainable.
        aux = ("aux1", "aux2") if aux_logits else ()
        inception4 = ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4")
        self.spec = ModelSpec(
            classifier="fc", first_conv="conv1.conv", aux_classifiers=tuple(f"{a}.fc2" for a in aux),
            stages=(
                ("stem", ("conv1", "maxpool1", "conv2", "conv3", "maxpool2")),
                ("inception3", ("inception3a", "inception3b", "maxpool3")),
                ("inception4", inception4),
                ("inception5", ("inception5a", "inception5b")),
                ("head", ("avgpool", "dropout", "fc", *aux)),
            ),
        )  # fmt: skip
        _init_weights(self)

    def _trunk(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The last inception module's output and, if ``with_aux``, the two auxiliary logits.
        Shapes for 224 px."""
        x = self.conv1(x)  # (B, 64, 112, 112)
        x = self.maxpool1(x)  # (B, 64, 56, 56)
        x = self.conv3(self.conv2(x))  # (B, 192, 56, 56)
        x = self.maxpool2(x)  # (B, 192, 28, 28)
        x = self.inception3b(self.inception3a(x))  # (B, 480, 28, 28)
        x = self.maxpool3(x)  # (B, 480, 14, 14)
        x = self.inception4a(x)  # (B, 512, 14, 14)
        aux1 = self.aux1(x) if with_aux else None  # (B, num_classes)
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (B, 528, 14, 14)
        aux2 = self.aux2(x) if with_aux else None  # (B, num_classes)
        x = self.inception4e(x)  # (B, 832, 14, 14)
        x = self.maxpool4(x)  # (B, 832, 7, 7)
        x = self.inception5b(self.inception5a(x))  # (B, 1024, 7, 7)
        return x, aux2, aux1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x, with_aux=False)[0]  # (B, 1024, H/32, W/32)

    def feature_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        # Shapes for 224 px; the auxiliary classifiers are not run.
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        yield x  # stem: (B, 192, 28, 28)
        x = self.inception3b(self.inception3a(x))
        yield x  # (B, 480, 28, 28)
        x = self.maxpool3(x)
        for name in ("4a", "4b", "4c", "4d", "4e"):
            x = getattr(self, f"inception{name}")(x)
        yield x  # (B, 832, 14, 14)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        yield x  # (B, 1024, 7, 7)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)  # (B, 1024)
        return x if pre_logits else self.fc(self.dropout(x))  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits in eval mode (or without aux heads); ``(logits, aux2, aux1)`` in training."""
        self.check_input(x)
        with_aux = self.training and self.aux_logits
        features, aux2, aux1 = self._trunk(x, with_aux)
        logits = self.forward_head(features)
        return (logits, aux2, aux1) if with_aux else logits


# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_TABLE: tuple[InceptionConfig, ...] = (
    InceptionConfig("3a", 64, 96, 128, 16, 32, 32),
    InceptionConfig("3b", 128, 128, 192, 32, 96, 64),
    InceptionConfig("4a", 192, 96, 208, 16, 48, 64),
    InceptionConfig("4b", 160, 112, 224, 24, 64, 64),
    InceptionConfig("4c", 128, 128, 256, 24, 64, 64),
    InceptionConfig("4d", 112, 144, 288, 32, 64, 64),
    InceptionConfig("4e", 256, 160, 320, 32, 128, 128),
    InceptionConfig("5a", 256, 160, 320, 32, 128, 128),
    InceptionConfig("5b", 384, 192, 384, 48, 128, 128),
)


@register_model(weights=torchvision_weights("GoogLeNet_Weights"))
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet / Inception v1 (Szegedy et al., 2014)."""
    return GoogLeNet(**kwargs)
