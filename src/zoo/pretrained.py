"""Models with weights, from Python: :func:`create_model`, :func:`list_weights`,
:func:`weights_transforms`.

``create_model`` is the one door the command lines use too: it builds a registered model
and loads weights into it through :func:`zoo.finetune.load_pretrained` (files read with
``weights_only=True`` or safetensors; torchvision weights from the local hub cache) and
:func:`zoo.finetune.load_into` (strict key and shape checks; a new class count resets the
head, new input channels adapt the first convolution, a ViT of another image size gets
its position embeddings interpolated).

What torchvision publishes about its weights (accuracy, GFLOPS, file size, preprocessing,
recipe) is read from its own weights metadata: nothing is downloaded to list them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torchvision.models import get_weight

from zoo.finetune.weights import (
    load_into, load_pretrained, resolve_weights_name, torchvision_weights_names, unknown_weights,
)  # fmt: skip
from zoo.models import MODELS, get_model
from zoo.models.features import FeatureExtractor

__all__ = ["WeightsInfo", "create_model", "list_weights", "weights_transforms"]


def create_model(
    name: str,
    weights: str | None = None,
    *,
    pretrained: bool = False,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    download: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """The registered model ``name``, with ``weights`` loaded if given.

    Args:
        name: A registered model (``zoo.list_models()``).
        weights: A file (a state_dict ``.pth``/``.pt``, ``.safetensors``, a ``zoo-train``
            ``.ckpt``) or torchvision weights: ``"ResNet50_Weights.IMAGENET1K_V2"``,
            ``"IMAGENET1K_V2"``, ``"DEFAULT"`` (``zoo.list_weights(name)`` lists them).
        pretrained: ``weights="DEFAULT"`` when no ``weights`` are given (as in timm).
        num_classes: The classifier's class count; weights for another count load all
            but the head, which starts fresh. Default: the checkpoint's, else the model's.
        in_channels: Input channels; pretrained first-conv kernels are summed to one
            channel (or spread from one), which keeps the network's function on gray input.
        image_size: For a ViT, the image size; weights trained at another size get their
            position embeddings interpolated (bicubic, the class token's kept).
        features_only: Return the trunk as a :class:`zoo.models.features.FeatureExtractor`
            giving the feature maps at ``out_indices``.
        download: Fetch torchvision weights missing from the hub cache (default: refuse,
            saying where to place the file).
        **kwargs: Any other constructor argument of the model (``dropout=0.2``, ...).

    Raises:
        zoo.finetune.WeightsError: the weights cannot be read, are unknown (the names the
            model accepts are listed) or do not fit (the first mismatching keys are named).
    """
    if pretrained and weights is None:
        weights = "DEFAULT"
    source = load_pretrained(str(weights), download, model=name) if weights is not None else None
    options = dict(source.model_options) if source is not None and source.model_name == name else {}
    options.update(kwargs)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if value is not None:
            options[key] = value
    net = get_model(name, **options)
    if source is not None:
        load_into(net, source)
    return FeatureExtractor(net, out_indices, name=name) if features_only else net


@dataclass(frozen=True)
class WeightsInfo:
    """One of torchvision's weights for a model, as torchvision's metadata describes it."""

    name: str  # the full name, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    is_default: bool  # what "DEFAULT" means for this model
    acc1: float  # ImageNet-1K validation top-1 accuracy, %
    acc5: float
    gflops: float  # per image at the evaluation size
    file_size_mb: float
    num_params: int
    resize_size: int  # the shorter side before the centre crop
    crop_size: int
    interpolation: str  # of the resize: bilinear, bicubic
    mean: tuple[float, ...]
    std: tuple[float, ...]
    recipe: str  # where the training recipe is described
    url: str

    @property
    def member(self) -> str:
        """The short name, e.g. ``IMAGENET1K_V2``."""
        return self.name.rsplit(".", 1)[1]


def list_weights(name: str) -> list[WeightsInfo]:
    """The torchvision weights model ``name`` can load (none for the models torchvision
    does not have), with their published ImageNet-1K accuracy, cost and preprocessing."""
    MODELS.get(name)  # an unknown model: the registry's error, with close matches
    infos = []
    for member in torchvision_weights_names(name)[:-1]:  # every member; DEFAULT is an alias
        weights = get_weight(resolve_weights_name(member, name))
        meta, preset = weights.meta, weights.transforms()
        metrics = meta["_metrics"]["ImageNet-1K"]
        infos.append(
            WeightsInfo(
                name=f"{type(weights).__name__}.{weights.name}",
                is_default=weights is type(weights).DEFAULT,
                acc1=metrics["acc@1"], acc5=metrics["acc@5"], gflops=meta["_ops"], file_size_mb=meta["_file_size"],
                num_params=meta["num_params"], resize_size=preset.resize_size[0], crop_size=preset.crop_size[0],
                interpolation=preset.interpolation.value, mean=tuple(preset.mean), std=tuple(preset.std),
                recipe=meta["recipe"], url=weights.url,
            )
        )  # fmt: skip
    return infos


def weights_transforms(name: str, weights: str = "DEFAULT") -> nn.Module:
    """The evaluation transform that matches torchvision weights ``weights`` of model
    ``name`` (resize, centre crop, scale to [0, 1], normalise): torchvision's own preset,
    for a PIL image or a uint8 tensor."""
    full_name = resolve_weights_name(weights, name)
    if full_name is None:
        raise unknown_weights(weights, name)
    return get_weight(full_name).transforms()
