"""Convolution -> batch norm -> activation, the unit most CNNs are built from.

Batch normalisation: S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift", 2015. https://arxiv.org/abs/1502.03167

    y = act(BN(W * x))        BN(z) = gamma (z - mean) / sqrt(var + eps) + beta

The convolution has no bias: the batch norm's ``beta`` plays that role.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (no bias, "same" padding for odd kernels) -> ``BatchNorm2d`` -> activation.

    A ``Sequential`` so that parameters are named ``0.weight`` (conv) and ``1.weight``,
    ``1.bias``, ... (norm), the layout torchvision's ``Conv2dNormActivation`` uses.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size; padding is ``(kernel_size - 1) // 2``.
        stride: Convolution stride.
        groups: Convolution groups (``groups = in_channels`` for a depthwise convolution).
        activation: Factory for the activation module, or ``None`` for a linear output.
        bn_eps: Batch-norm epsilon.
        bn_momentum: Batch-norm momentum (PyTorch convention: weight of the new batch).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[[], nn.Module] | None = lambda: nn.ReLU(inplace=True),
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self.out_channels = out_channels
