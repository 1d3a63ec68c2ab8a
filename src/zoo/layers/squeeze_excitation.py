"""Squeeze-and-excitation channel gating.

J. Hu, L. Shen, S. Albanie, G. Sun, E. Wu, "Squeeze-and-Excitation Networks", 2017.
https://arxiv.org/abs/1709.01507

Squeeze (Eq. 2) then excite (Eq. 3) then rescale (Eq. 4):

    z = GAP(x)                        (B, C, 1, 1)
    s = sigma(W2 delta(W1 z))         W1: C -> C_squeeze, W2: C_squeeze -> C
    y = s * x                         channel-wise

``delta`` is ReLU in the paper (SiLU in EfficientNet) and ``sigma`` the sigmoid.
W1 and W2 are 1x1 convolutions with bias, equivalent to the paper's fully connected
layers on the pooled vector, and named ``fc1``/``fc2`` as in torchvision.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """Rescale each channel of ``x`` by a gate computed from the global average of ``x``.

    Args:
        channels: Channels of the input (and of the gate).
        squeeze_channels: Width of the bottleneck between ``fc1`` and ``fc2``.
        activation: Factory for ``delta``, the bottleneck non-linearity.
        gate_activation: Factory for ``sigma``, the gating non-linearity.
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        activation: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
        gate_activation: Callable[[], nn.Module] = nn.Sigmoid,
    ):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = activation()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.scale_activation = gate_activation()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate ``s`` (B, C, 1, 1) for an input ``x`` (B, C, H, W)."""
        z = self.avgpool(x)  # (B, C, 1, 1)
        return self.scale_activation(self.fc2(self.activation(self.fc1(z))))  # (B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x) * x  # (B, C, H, W)
