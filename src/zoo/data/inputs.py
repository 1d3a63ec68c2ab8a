"""What a trained network's inputs need, recorded in its checkpoint and read back without the data.

Training writes one record into every checkpoint, under
``zoo.checkpoint.INPUTS_KEY`` (``zoo_inputs``), from the data module it trained on (``zoo.data.DataModule.inputs``):

- images (``ImageInputs``): the channels, the evaluation crop and resize with its
  interpolation, the normalisation and the class names, in the order of the logits;
- text pairs (``TextInputs``): the source and target vocabularies and the longest
  training source.

Using a trained model (``zoo.load``, ``zoo-predict``, ``zoo-translate``, ``zoo-export``) needs
this record and the weights only: it is read with torch and torchvision, without the data
modules and without Lightning, whose import alone takes seconds. The data modules evaluate
with the same steps (``eval_steps``), so a prediction is preprocessed as the test split was.

torchvision is imported when an image transform is made, not with this module: it takes
over a second to import, which ``zoo-translate`` has no use for.

Records hold plain values (what a ``weights_only`` checkpoint may hold) and are checked when
read: a damaged or edited record is a ``zoo.checkpoint.CheckpointError`` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from zoo.checkpoint import INPUTS_KEY, CheckpointError
from zoo.data.images import to_mode
from zoo.data.vocab import Vocab
from zoo.errors import ZooError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")  # of the evaluation resize (and data=imagefolder's)


def eval_steps(image_size: int, mean: tuple[float, ...], std: tuple[float, ...], resize_size: int | None = None,
               interpolation: str = "bilinear") -> list:  # fmt: skip
    """The evaluation transform from a PIL image in the model's mode to its input: a [0, 1]
    float tensor, the shorter side resized to ``resize_size`` (``None``: ``image_size``) with
    ``interpolation``, the central ``image_size`` square kept, normalised with ``mean``/``std``."""
    from torchvision.transforms import InterpolationMode, v2  # 1.3 s to import: image inputs only, not zoo-translate's

    resize = v2.Resize(resize_size or image_size, interpolation=InterpolationMode(interpolation), antialias=True)
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), resize, v2.CenterCrop(image_size), v2.Normalize(mean, std)]


@dataclass(frozen=True)
class ImageInputs:
    """How an image classifier's inputs are made, and what its outputs are called."""

    in_channels: int
    image_size: int  # the square side the network takes (the centre crop)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]  # one per logit, in order
    resize_size: int | None = None  # the shorter side before the crop; None: image_size
    interpolation: str = "bilinear"

    kind = "image"

    def eval_steps(self) -> list:
        """``eval_steps`` with this record's values."""
        return eval_steps(self.image_size, self.mean, self.std, self.resize_size, self.interpolation)

    def transform(self) -> Any:
        """Any PIL image (grayscale, RGB, RGBA, palette; any size) to the network's (C, H, W)
        input: converted to its channels by ``zoo.data.images.to_mode``, then ``eval_steps``."""
        from torchvision.transforms import v2  # see eval_steps

        return v2.Compose([v2.Lambda(partial(to_mode, channels=self.in_channels)), *self.eval_steps()])

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "in_channels": self.in_channels, "image_size": self.image_size, "mean": list(self.mean),
            "std": list(self.std), "class_names": list(self.class_names), "resize_size": self.resize_size,
            "interpolation": self.interpolation,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ImageInputs:
        def whole(key: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} is {value!r}, not a positive whole number")
            return value

        channels = whole("in_channels", state["in_channels"])
        mean, std = tuple(float(v) for v in state["mean"]), tuple(float(v) for v in state["std"])
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std hold {len(mean)} and {len(std)} values for {channels} channels")
        names = state["class_names"]
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError("class_names is not a list of names")
        resize = state.get("resize_size")
        interpolation = state.get("interpolation", "bilinear")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation is {interpolation!r}, not one of {', '.join(INTERPOLATIONS)}")
        return cls(channels, whole("image_size", state["image_size"]), mean, std, tuple(names),
                   None if resize is None else whole("resize_size", resize), interpolation)  # fmt: skip


@dataclass(frozen=True)
class TextInputs:
    """The vocabularies of a sequence-to-sequence model, and how long its training sources were."""

    src_vocab: Vocab
    tgt_vocab: Vocab
    longest_source: int | None = None  # tokens, <eos> included; None in checkpoints older than the record

    kind = "text"

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "src_vocab": self.src_vocab.state(), "tgt_vocab": self.tgt_vocab.state(),
                "longest_source": self.longest_source}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TextInputs:
        longest = state.get("longest_source")
        if longest is not None and (isinstance(longest, bool) or not isinstance(longest, int) or longest < 1):
            raise ValueError(f"longest_source is {longest!r}, not a positive whole number")
        return cls(Vocab.from_state(state["src_vocab"]), Vocab.from_state(state["tgt_vocab"]), longest)


KINDS = {cls.kind: cls for cls in (ImageInputs, TextInputs)}


def inputs_from_state(state: Any, path: str | Path) -> ImageInputs | TextInputs:
    """The record ``zoo.checkpoint.INPUTS_KEY`` of the checkpoint at ``path``, checked.

    Raises:
        CheckpointError: the record is not one of ``KINDS`` with sound values.
    """
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in KINDS:
        raise CheckpointError(f"{Path(path).resolve()}: its {INPUTS_KEY} record is not one of {', '.join(KINDS)}")
    try:
        return KINDS[kind].from_state(state)
    except (KeyError, TypeError, ValueError, ZooError) as err:
        detail = f"{err.args[0]} is missing" if isinstance(err, KeyError) else str(err)
        raise CheckpointError(f"{Path(path).resolve()}: its {INPUTS_KEY} record is damaged ({detail})") from None
