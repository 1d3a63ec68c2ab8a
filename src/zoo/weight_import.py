"""What the package takes from torchvision about pretrained weights, in one place: its weights
enums read as plain facts (where a file is, how its images were fed, what it scores), and
the evaluation transform its presets apply. The models themselves are written from their
papers and import nothing of torchvision; the weights table (:mod:`zoo.models.weights`)
turns these facts into its entries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

# torchvision is imported where it is used: importing torchvision.models costs over a second,
# which every `import zoo.models` (and so every command) would pay for a table nobody asked for.


def _facts(weights: Any) -> dict[str, Any]:
    meta, preset = weights.meta, weights.transforms()  # ImageClassification: resize, crop, normalise
    dataset, metrics = next(iter(meta["_metrics"].items()))
    enum = type(weights)
    return {
        "name": f"{enum.__name__}.{weights.name}", "enum": enum.__name__, "source": weights.url,
        "crop_size": preset.crop_size[0], "resize_size": preset.resize_size[0], "mean": tuple(preset.mean),
        "std": tuple(preset.std), "interpolation": preset.interpolation.value,
        "sha256": torch.hub.HASH_REGEX.search(Path(urlparse(weights.url).path).name).group(1),
        "is_default": weights is enum.DEFAULT, "num_classes": len(meta["categories"] or ()) or None,
        "dataset": dataset, "metrics": dict(metrics), "num_params": meta["num_params"], "gflops": meta["_ops"],
        "file_size_mb": meta["_file_size"], "recipe": meta["recipe"],
        "license": meta.get("license"),  # where torchvision names one (the SWAG weights)
    }  # fmt: skip


def torchvision_members(enum: str) -> list[dict[str, Any]]:
    """The facts of every member of torchvision's weights enum ``enum`` (``"ResNet50_Weights"``)."""
    from torchvision.models import get_weight

    return [_facts(w) for w in type(get_weight(f"{enum}.DEFAULT"))]


def torchvision_member(name: str) -> dict[str, Any] | None:
    """The facts of the torchvision weights named in full (``ResNet50_Weights.IMAGENET1K_V2``); ``None`` for no such weights."""
    from torchvision.models import get_weight

    try:
        return _facts(get_weight(name))
    except (ValueError, KeyError, AttributeError):
        return None


class EvalTransform(nn.Module):
    """A PIL image or a uint8 (C, H, W) tensor as the network was fed: the shorter side
    resized to ``resize_size`` (antialiased), the centre ``crop_size`` square, values scaled
    to [0, 1], normalised per channel. The steps and their order are those of torchvision's
    weights presets (``ImageClassification``), so the two give the same tensor to the bit."""

    def __init__(self, crop_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float], interpolation: str):
        super().__init__()
        self.crop_size, self.resize_size = crop_size, resize_size
        self.mean, self.std, self.interpolation = list(mean), list(std), interpolation

    def forward(self, image: Any) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        x = image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)
        x = F.resize(x, [self.resize_size], interpolation=InterpolationMode(self.interpolation), antialias=True)
        x = F.center_crop(x, [self.crop_size])
        return F.normalize(F.convert_image_dtype(x, torch.float), self.mean, self.std)

    def extra_repr(self) -> str:
        return (f"resize_size={self.resize_size}, crop_size={self.crop_size}, interpolation={self.interpolation}, "
                f"mean={self.mean}, std={self.std}")  # fmt: skip
