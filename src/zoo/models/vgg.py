"""VGG.

K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (arXiv 2014). https://arxiv.org/abs/1409.1556

Every convolution is 3x3 with stride 1 and padding 1 (the spatial size is kept) and is
followed by a ReLU; five 2x2/2 max pools halve the size between blocks (Section 2.1).
A 224x224 RGB image therefore reaches the classifier as a 512x7x7 map:

    block1  conv3-64  x n1 -> maxpool    224 -> 112
    block2  conv3-128 x n2 -> maxpool    112 -> 56
    block3  conv3-256 x n3 -> maxpool     56 -> 28
    block4  conv3-512 x n4 -> maxpool     28 -> 14
    block5  conv3-512 x n5 -> maxpool     14 -> 7
    fc 4096 -> ReLU -> dropout(0.5) -> fc 4096 -> ReLU -> dropout(0.5) -> fc 1000 -> softmax

with (n1, ..., n5) from Table 1: A (11 weight layers) 1,1,2,2,2; B (13) 2,2,2,2,2;
D (16) 2,2,3,3,3; E (19) 2,2,4,4,4. Why stacks of 3x3 convolutions (Section 2.3): three
of them see a 7x7 window, like one 7x7 convolution, with three non-linearities instead
of one and 3 * (3^2 C^2) = 27 C^2 weights instead of 7^2 C^2 = 49 C^2 for C channels.

Table 2 gives 133, 133, 138 and 144 million parameters for A, B, D, E; exactly:
132,863,336 / 133,047,848 / 138,357,544 / 143,667,240 (torchvision's vgg11..vgg19, whose
``state_dict`` loads here with ``strict=True``).

Deviations from the paper (all follow torchvision):

- ``batch_norm=True`` (the ``vgg*_bn`` variants) puts a batch norm between every
  convolution and its ReLU (Ioffe & Szegedy, 2015, which postdates the paper).
- An adaptive average pool to 7x7 sits between the convolutions and the classifier (the
  identity at 224 px), so any image of at least 32x32 is accepted. A 32 px image leaves
  block5 as a 1x1 map, which the pool repeats 49 times; that is why there is no
  ``small_input`` option: the 3x3 convolutions never lose a small image, and the
  classifier's 25,088 inputs (and the torchvision keys) stay the same.
- Weights are initialised He-style (kaiming normal, fan_out, for ReLU) for the
  convolutions and N(0, 0.01) for the linear layers, biases zero; the paper trained A
  from N(0, 0.01) and initialised the deeper nets from A's layers (Section 3.1).
- Configurations A-LRN (local response normalisation) and C (1x1 convolutions) are not
  built, nor the dense (fully convolutional) multi-scale evaluation of Section 3.2.
- ``in_channels`` may differ from 3; the softmax lives in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from zoo.models.base import FeatureInfo, ModelSpec, SequentialTrunkModel, split_sequential
from zoo.models.factory import register_model
from zoo.models.weights import torchvision_weights


def _init_weights(module: nn.Module) -> None:
    """torchvision's VGG init: He normal (fan_out) convs, N(0, 0.01) linears, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def make_features(blocks: tuple[tuple[int, ...], ...], in_channels: int, batch_norm: bool) -> nn.Sequential:
    """The convolutional trunk as one flat ``Sequential`` (torchvision's indices).

    Args:
        blocks: Output channels of each 3x3 convolution, grouped by block (a Table 1 column).
        in_channels: Channels of the input images.
        batch_norm: Insert ``BatchNorm2d`` between each convolution and its ReLU.
    """
    layers: list[nn.Module] = []
    width = in_channels
    for block in blocks:
        for out_channels in block:
            layers.append(nn.Conv2d(width, out_channels, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            width = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(SequentialTrunkModel):
    """VGG configuration A, B, D or E of Table 1; see the module docstring.

    Args:
        num_classes: Number of output classes.
        in_channels: Channels of the input images.
        config: Column of Table 1: ``"A"`` (VGG-11), ``"B"`` (13), ``"D"`` (16), ``"E"`` (19).
        batch_norm: Batch norm after every convolution (not in the paper).
        dropout: Dropout probability after the two hidden fully connected layers.
    """

    default_image_size = 224
    # Five 2x2/2 max pools: a side under 32 leaves the last one nothing to pool.
    min_image_size = 32
    init_head = staticmethod(_init_weights)  # a new head starts as the constructor's: N(0, 0.01)

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        config: str = "D",
        batch_norm: bool = False,
        dropout: float = 0.5,
    ):
        super().__init__()
        if config not in VGG_CONFIGS:
            raise ValueError(f"config must be one of {sorted(VGG_CONFIGS)}, got {config!r}")
        self.num_classes, self.in_channels, self.num_features = num_classes, in_channels, 512 * 7 * 7
        self.config, self.batch_norm = config, batch_norm

        self.features = make_features(VGG_CONFIGS[config], in_channels, batch_norm)
        # block1 .. block5 as in stages(): each max pool's output, strides 2 .. 32.
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.feature_info = [
            FeatureInfo(f"features.{i}", block[-1], 2**k)
            for k, (i, block) in enumerate(zip(pools, VGG_CONFIGS[config]), start=1)
        ]
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(self.num_features, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        # block1 .. block5: ``features`` split after each max pool, (B, 64, H/2, W/2) ..
        # (B, 512, H/32, W/32); the head is the pool (7x7, 25088 features) and classifier.
        ends = [0] + [i + 1 for i in pools]
        blocks = split_sequential("features", ends, "block")
        self.spec = ModelSpec(
            classifier="classifier.6", first_conv="features.0", stages=(*blocks, ("head", ("avgpool", "classifier")))
        )  # fmt: skip
        _init_weights(self)

# Table 1 of the paper: output channels of the 3x3 convolutions, one tuple per block
# (each block ends with a max pool).
VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


@dataclass(frozen=True)
class VGGVariant:
    """A registered VGG: its Table 1 column and whether it has batch norm."""

    config: str
    batch_norm: bool


VARIANTS: dict[str, VGGVariant] = {
    "vgg11": VGGVariant("A", batch_norm=False),
    "vgg13": VGGVariant("B", batch_norm=False),
    "vgg16": VGGVariant("D", batch_norm=False),
    "vgg19": VGGVariant("E", batch_norm=False),
    "vgg11_bn": VGGVariant("A", batch_norm=True),
    "vgg13_bn": VGGVariant("B", batch_norm=True),
    "vgg16_bn": VGGVariant("D", batch_norm=True),
    "vgg19_bn": VGGVariant("E", batch_norm=True),
}


def _vgg(name: str, **kwargs) -> VGG:
    """Build variant ``name``; its config is fixed, ``batch_norm`` may be overridden."""
    variant = VARIANTS[name]
    return VGG(config=variant.config, **{"batch_norm": variant.batch_norm, **kwargs})


@register_model(weights=torchvision_weights("VGG11_Weights"))
def vgg11(**kwargs) -> VGG:
    """VGG-11, configuration A (Simonyan & Zisserman, 2014)."""
    return _vgg("vgg11", **kwargs)


@register_model(weights=torchvision_weights("VGG13_Weights"))
def vgg13(**kwargs) -> VGG:
    """VGG-13, configuration B (Simonyan & Zisserman, 2014)."""
    return _vgg("vgg13", **kwargs)


@register_model(weights=torchvision_weights("VGG16_Weights"))
def vgg16(**kwargs) -> VGG:
    """VGG-16, configuration D (Simonyan & Zisserman, 2014)."""
    return _vgg("vgg16", **kwargs)


@register_model(weights=torchvision_weights("VGG19_Weights"))
def vgg19(**kwargs) -> VGG:
    """VGG-19, configuration E (Simonyan & Zisserman, 2014)."""
    return _vgg("vgg19", **kwargs)


@register_model(weights=torchvision_weights("VGG11_BN_Weights"))
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with batch norm, configuration A."""
    return _vgg("vgg11_bn", **kwargs)


@register_model(weights=torchvision_weights("VGG13_BN_Weights"))
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with batch norm, configuration B."""
    return _vgg("vgg13_bn", **kwargs)


@register_model(weights=torchvision_weights("VGG16_BN_Weights"))
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with batch norm, configuration D."""
    return _vgg("vgg16_bn", **kwargs)


@register_model(weights=torchvision_weights("VGG19_BN_Weights"))
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with batch norm, configuration E."""
    return _vgg("vgg19_bn", **kwargs)
