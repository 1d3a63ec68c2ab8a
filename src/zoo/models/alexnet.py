"""AlexNet.

A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012. https://papers.nips.cc/paper/4824

Five convolutional layers and three fully connected ones (Section 3.5, Figure 2), with
ReLU ``f(x) = max(0, x)`` after every layer but the last (Section 3.1) and overlapping
max pooling, 3x3 windows with stride 2 (z = 3, s = 2; Section 3.4). The paper's network
for a 224x224 RGB image (really 227x227 for the arithmetic to work), split over two GPUs:

    conv1  96@11x11/4 (48 per GPU)            -> ReLU -> LRN -> maxpool 3x3/2
    conv2  256@5x5    (sees its own GPU only) -> ReLU -> LRN -> maxpool 3x3/2
    conv3  384@3x3    (sees both GPUs)        -> ReLU
    conv4  384@3x3    (sees its own GPU only) -> ReLU
    conv5  256@3x3    (sees its own GPU only) -> ReLU -> maxpool 3x3/2   -> 256x6x6
    fc6 4096 -> ReLU -> dropout(0.5) -> fc7 4096 -> ReLU -> dropout(0.5) -> fc8 1000 -> softmax

Local response normalisation (Section 3.3), across n = 5 adjacent channels of N:

    b^i_{x,y} = a^i_{x,y} / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j_{x,y})^2)^beta
    with k = 2, alpha = 1e-4, beta = 0.75.

The paper's network has about 60M parameters; the one built here has 61,100,840
(torchvision's ``alexnet``, whose ``state_dict`` loads with ``strict=True``).

Deviations from the paper (all but the last two follow torchvision):

- Single-tower widths 64-192-384-256-256 from A. Krizhevsky, "One weird trick for
  parallelizing convolutional neural networks", 2014, https://arxiv.org/abs/1404.5997,
  instead of the two-GPU 96-256-384-384-256 with the grouped connectivity above; no LRN.
- conv1 has padding 2, so a 224 px image gives the 55x55 map the paper needs 227 px for.
- An adaptive average pool to 6x6 after the last max pool lets any image of at least
  63x63 through (it is the identity at 224 px).
- Dropout sits before fc6 and fc7 (on their inputs) rather than on the outputs of fc6 and
  fc7 as in the paper: the last hidden layer reaches fc8 without dropout.
- Weights use PyTorch's default initialisation instead of N(0, 0.01) with biases of 1 in
  conv2, conv4, conv5 and the hidden fully connected layers.
- ``in_channels`` may differ from 3; the softmax lives in the loss.
- ``small_input=True`` (28-32 px images, not in torchvision): conv1 becomes 3x3 with
  stride 1 and padding 1 and the first max pool an identity, so a 32 px image leaves the
  convolutions as a 7x7 map (6x6 at 224 px in the standard network) instead of being
  destroyed by the 11x11/4 stem. Module names are unchanged, but ``features.0.weight``
  then has shape (64, in_channels, 3, 3), so ImageNet weights load only without it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from zoo.models.base import FeatureInfo, ModelSpec, SequentialTrunkModel, split_sequential
from zoo.models.factory import register_model
from zoo.models.weights import torchvision_weights


@dataclass(frozen=True)
class ConvSpec:
    """One convolutional layer: ``Conv2d -> ReLU``, optionally followed by a max pool."""

    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    pool: bool


class AlexNet(SequentialTrunkModel):
    """Single-tower AlexNet (torchvision's layout); see the module docstring.

    Args:
        num_classes: Number of output classes.
        in_channels: Channels of the input images.
        dropout: Dropout probability before fc6 and fc7.
        small_input: 3x3 stride-1 conv1 and no first max pool, for 28-32 px images.
    """

    default_image_size = 224

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        small_input: bool = False,
    ):
        super().__init__()
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, 256 * 6 * 6
        self.small_input = small_input
        # Smallest side that leaves the last max pool a 1x1 output: 63 (torchvision's
        # min_size) through the 11x11/4 stem, 7 through the small-input stem.
        self.min_image_size = 7 if small_input else 63

        convs = ALEXNET_CONVS
        if small_input:
            convs = (SMALL_INPUT_CONV1,) + convs[1:]
        layers: list[nn.Module] = []
        width, reduction = in_channels, 1
        self.feature_info = []  # conv1 .. conv5 as in stages(): after the ReLU, or the max pool
        for i, spec in enumerate(convs):
            layers.append(nn.Conv2d(width, spec.out_channels, spec.kernel_size, spec.stride, spec.padding))
            layers.append(nn.ReLU(inplace=True))
            reduction *= spec.stride
            if spec.pool:
                # The small-input stem keeps an identity in the first pool's slot so that
                # every later module keeps torchvision's index (and state_dict key).
                skip = small_input and i == 0
                layers.append(nn.Identity() if skip else nn.MaxPool2d(3, stride=2))
                reduction *= 1 if skip else 2
            width = spec.out_channels
            self.feature_info.append(FeatureInfo(f"features.{len(layers) - 1}", width, reduction))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(self.num_features, 4096),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),  # fc7
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),  # fc8
        )
        # conv1 .. conv5, each with its ReLU and max pool; the head is the pool and classifier.
        # Shapes for a 224 px image: (B, 64, 27, 27), (B, 192, 13, 13), (B, 384, 13, 13),
        # (B, 256, 13, 13), (B, 256, 6, 6); avgpool keeps 6x6 (9216 features).
        starts = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)] + [len(self.features)]
        convs = split_sequential("features", starts, "conv")
        self.spec = ModelSpec(
            classifier="classifier.6", first_conv="features.0", stages=(*convs, ("head", ("avgpool", "classifier")))
        )  # fmt: skip

# The convolutions of "One weird trick" (torchvision's alexnet). The 2012 paper's
# two-GPU widths were 96, 256, 384, 384, 256 with conv1 unpadded on a 227 px input.
ALEXNET_CONVS: tuple[ConvSpec, ...] = (
    ConvSpec(64, kernel_size=11, stride=4, padding=2, pool=True),  # conv1
    ConvSpec(192, kernel_size=5, stride=1, padding=2, pool=True),  # conv2
    ConvSpec(384, kernel_size=3, stride=1, padding=1, pool=False),  # conv3
    ConvSpec(256, kernel_size=3, stride=1, padding=1, pool=False),  # conv4
    ConvSpec(256, kernel_size=3, stride=1, padding=1, pool=True),  # conv5
)
# conv1 for 28-32 px images; its pool becomes an identity (see AlexNet.__init__).
SMALL_INPUT_CONV1 = replace(ALEXNET_CONVS[0], kernel_size=3, stride=1, padding=1)


@register_model(weights=torchvision_weights("AlexNet_Weights"))
def alexnet(**kwargs) -> AlexNet:
    """AlexNet (Krizhevsky et al., 2012), single-tower "One weird trick" widths."""
    return AlexNet(**kwargs)
