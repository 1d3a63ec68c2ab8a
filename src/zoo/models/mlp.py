"""Multi-layer perceptron.

D. E. Rumelhart, G. E. Hinton, R. J. Williams, "Learning representations by
back-propagating errors", Nature 323, 533-536, 1986. https://doi.org/10.1038/323533a0

Each hidden layer computes ``a^l = f(W^l a^{l-1} + b^l)`` on the flattened image
``a^0 = vec(x)``; the output layer is linear, ``z^L = W^L a^{L-1} + b^L``, and the
softmax lives in the loss.

Options beyond the 1986 network: batch normalisation (Ioffe & Szegedy, 2015) or layer
normalisation (Ba et al., 2016) between the affine map and the activation, and
dropout (Srivastava et al., 2014) after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.layers import make_activation
from zoo.models.base import ImageModel, ModelSpec
from zoo.models.factory import register_model

_NORMS = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class MLP(ImageModel):
    """Fully connected classifier of ``in_channels x image_size x image_size`` images."""

    fast_path = False  # matrix products of a few hundred units: nothing for bf16 kernels to gain

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 32,
        hidden_sizes: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str | None = None,
    ):
        super().__init__()
        if norm not in (None, "none", *_NORMS):
            raise ValueError(f"norm must be null, 'batch' or 'layer', got {norm!r}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.default_image_size = self.fixed_image_size = image_size
        width = in_channels * image_size * image_size
        layers: list[nn.Module] = [nn.Flatten()]
        for hidden in hidden_sizes:
            block = [nn.Linear(width, hidden)]
            if norm in _NORMS:
                block.append(_NORMS[norm](hidden))
            block.append(make_activation(activation))
            if dropout > 0:
                block.append(nn.Dropout(dropout))
            layers.append(nn.Sequential(*block))
            width = hidden
        self.features = nn.Sequential(*layers)
        self.num_features = width
        self.classifier = nn.Linear(width, num_classes)
        hidden = tuple((f"hidden{i}", (f"features.{i}",)) for i in range(1, len(layers)))
        self.spec = ModelSpec(classifier="classifier", first_conv=None, stages=(*hidden, ("head", ("classifier",))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, num_features): the last hidden layer, nothing to pool

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.classifier(x)  # (B, num_classes)


@register_model
def mlp(**kwargs) -> MLP:
    """Multi-layer perceptron on flattened images."""
    return MLP(**kwargs)
