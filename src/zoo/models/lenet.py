"""LeNet-5.

Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), 1998. https://doi.org/10.1109/5.726791

Architecture (Section II.B), for a 32x32 input:

    C1  conv 6@5x5          -> 6x28x28     a = f(W * x + b)
    S2  subsample 2x2       -> 6x14x14
    C3  conv 16@5x5         -> 16x10x10    each map sees a subset of S2 maps (Table I)
    S4  subsample 2x2       -> 16x5x5
    C5  conv 120@5x5        -> 120x1x1     (a full connection, since S4 is 5x5)
    F6  full 84             -> 84
    out full num_classes

The paper's squashing function is the scaled tanh ``f(a) = 1.7159 tanh(2a/3)``.

Deviations from the paper (all options; the constructor defaults follow the paper
where a choice exists, ``configs/model/lenet5.yaml`` picks the modern recipe):

- ``c3_table="partial"`` is the paper's Table I (60 of 96 connections, 1,516 weights);
  ``"full"`` connects every S2 map to every C3 map (2,416 weights), as most modern
  re-implementations do.
- S2/S4 in the paper are trainable subsampling (sum of 4 inputs times a learned
  coefficient plus bias, then squashing). We use parameter-free pooling:
  ``pool="avg"`` (closest) or ``"max"``.
- ``activation`` defaults to ``tanh`` (the paper scales it; we do not); ``relu`` and
  others are available.
- The output layer is a linear layer trained with cross-entropy instead of Euclidean
  RBF units trained with the paper's MAP criterion.
- ``norm="batch"`` inserts batch normalisation after C1, C3, C5 and F6 (Ioffe & Szegedy,
  2015, which postdates LeNet) and is not in the paper.
- Inputs other than 32x32 are refused: C5 must see a 5x5 map. ``in_channels`` may differ
  from 1.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import make_activation
from zoo.models.base import FeatureInfo, ImageModel, ModelSpec
from zoo.models.factory import register_model

# Table I of the paper: the S2 maps each C3 map is connected to.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


class PartialConv2d(nn.Module):
    """A convolution where output map ``j`` only sees the input maps ``table[j]``.

    Only the connected kernels are parameters, so the parameter count is the paper's;
    the full weight tensor is assembled (zeros elsewhere) on every forward.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_channels: int, kernel_size: int):
        super().__init__()
        out_idx = [j for j, inputs in enumerate(table) for _ in inputs]
        in_idx = [i for inputs in table for i in inputs]
        if max(in_idx) >= in_channels:
            raise ValueError(f"connection table refers to input map {max(in_idx)} of {in_channels}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, len(table), kernel_size
        self.fan_in = [len(inputs) * kernel_size**2 for inputs in table]
        self.register_buffer("out_idx", torch.tensor(out_idx), persistent=False)
        self.register_buffer("in_idx", torch.tensor(in_idx), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(out_idx), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(len(table)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same rule as nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in per map.
        if self.weight.is_meta:  # built on the meta device (zoo.models.build_on_meta): no values to draw
            return
        bound = torch.tensor(self.fan_in, dtype=torch.float32, device=self.bias.device).rsqrt()
        with torch.no_grad():
            self.weight.uniform_(-1, 1).mul_(bound[self.out_idx].view(-1, 1, 1))
            self.bias.uniform_(-1, 1).mul_(bound)

    def full_weight(self) -> torch.Tensor:
        k = self.kernel_size
        w = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        w[self.out_idx, self.in_idx] = self.weight
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.full_weight(), self.bias)


class LeNet5(ImageModel):
    """LeNet-5 for 32x32 inputs; see the module docstring for the options."""

    # 6 to 120 channels on 32 px: too narrow for bf16 or channels-last kernels to pay
    # (the measurement: docs/performance.md).
    fast_path = False

    default_image_size = 32
    fixed_image_size = 32

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        activation: str = "tanh",
        pool: str = "avg",
        c3_table: str = "partial",
        norm: str | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        if c3_table not in ("partial", "full"):
            raise ValueError(f"c3_table must be 'partial' or 'full', got {c3_table!r}")
        if norm not in (None, "none", "batch"):
            raise ValueError(f"norm must be null or 'batch', got {norm!r}")
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, 84
        use_bn = norm == "batch"
        pool_layer = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d

        def conv_block(conv: nn.Module, channels: int, subsample: bool) -> nn.Sequential:
            layers = [conv]
            if use_bn:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(make_activation(activation))
            if subsample:
                layers.append(pool_layer(2))
            return nn.Sequential(*layers)

        if c3_table == "partial":
            c3 = PartialConv2d(C3_TABLE, 6, 5)
        else:
            c3 = nn.Conv2d(6, 16, 5)
        self.c1 = conv_block(nn.Conv2d(in_channels, 6, 5), 6, subsample=True)  # C1 + S2
        self.c3 = conv_block(c3, 16, subsample=True)  # C3 + S4
        self.c5 = conv_block(nn.Conv2d(16, 120, 5), 120, subsample=False)
        f6 = [nn.Linear(120, 84)] + ([nn.BatchNorm1d(84)] if use_bn else [])
        self.f6 = nn.Sequential(*f6, make_activation(activation))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(84, num_classes))
        # The paper's layers C1, S2, C3, S4, C5 (after the activation; S2/S4 are the pools
        # that end the c1/c3 blocks). Unpadded 5x5 convs: 28, 14, 10, 5, 1 px from 32.
        act = str(len(self.c1) - 2)  # index of the activation, after the optional batch norm
        self.feature_info = [
            FeatureInfo(f"c1.{act}", 6, 1),
            FeatureInfo("c1", 6, 2),
            FeatureInfo(f"c3.{act}", 16, 2),
            FeatureInfo("c3", 16, 4),
            FeatureInfo("c5", 120, 4),
        ]
        self.spec = ModelSpec(
            classifier="classifier.1", first_conv="c1.0",
            stages=(("c1", ("c1",)), ("c3", ("c3",)), ("c5", ("c5",)), ("f6", ("f6",)), ("head", ("classifier",))),
        )  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(x)  # (B, 6, 14, 14)
        x = self.c3(x)  # (B, 16, 5, 5)
        return self.c5(x)  # (B, 120, 1, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.f6(x.flatten(1))  # (B, 84)
        return x if pre_logits else self.classifier(x)  # (B, num_classes)

    def feature_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        x = self.c1[:-1](x)
        yield x  # C1: (B, 6, 28, 28)
        x = self.c1[-1](x)
        yield x  # S2: (B, 6, 14, 14)
        x = self.c3[:-1](x)
        yield x  # C3: (B, 16, 10, 10)
        x = self.c3[-1](x)
        yield x  # S4: (B, 16, 5, 5)
        yield self.c5(x)  # C5: (B, 120, 1, 1)


@register_model
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5 (LeCun et al., 1998)."""
    return LeNet5(**kwargs)
