"""scikit-learn's bundled handwritten digits: the default dataset, no download needed.

1,797 grayscale 8x8 images of the digits 0-9 (UCI "Optical Recognition of Handwritten
Digits", test part), pixel values 0..16. They are upsampled (bilinear) to
``image_size`` x ``image_size`` (``None``: 32, LeNet-5's input), scaled to [0, 1] and
normalised with the training split's mean and std.

The split is fixed and stratified by class, independent of the training seed:
``test_fraction`` (20%, 360 images) and ``val_fraction`` (10%, 180 images) of the whole
set are drawn with ``split_seed`` (0), the rest (1,257 images) is the training set.
Fractions that would leave a split with fewer than 10 images (the split is stratified:
one per digit at least), an empty one included, are refused before training.

Options for transfer learning (``scripts/transfer_digits.py``): ``classes`` keeps only
the listed digits, relabelled 0..k-1 in the order given (``[5, 6, 7, 8, 9]``: digit 5 is
class 0); ``train_per_class`` keeps that many training images of each class (a seeded
draw; validation and test sets stay whole). Both apply *after* the fixed split, so a
test image is a test image under every option. ``channels: 3`` replicates the gray
channel, for networks pretrained on colour images; ``mean``/``std`` replace the
training set's statistics (fine-tuning passes the pretraining's). ``orientations: 4``
(or ``8``) is a pretraining task: every image of every split also appears turned by
quarter turns (and mirrored), each orientation of each digit its own class (digit ``c``
in orientation ``o`` of :data:`ORIENTATIONS` is class ``c * orientations + o``), which
asks the network for features of stroke direction that the digits alone do not
("self-supervised label augmentation", Lee, Hwang & Shin, ICML 2020; Omniglot's
rotated characters as new classes, Santoro et al. 2016, Vinyals et al. 2016).

The whole set lives in memory as tensors on the training device and each batch is one
tensor indexing (:class:`zoo.data.base.TensorBatches`), so no worker processes are
needed; the training-time augmentation (random rotations of up to ``max_rotation`` degrees and
scalings of up to ``max_scale``, off by default, then random shifts of up to ``max_shift``
pixels, edge pixels repeated) runs on whole batches after they reach the device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from zoo.data.base import DATASETS, ImageDataModule, TensorBatches, check_split_sizes
from zoo.errors import ConfigError

DEFAULT_IMAGE_SIZE = 32  # LeNet-5's input: what image_size=None means


def split_indices(
    labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Stratified train/val/test indices; the same arguments always give the same split.

    Raises:
        ConfigError: a split would hold fewer examples than there are classes (an empty
            one included), which scikit-learn's stratified split cannot make.
    """
    from sklearn.model_selection import train_test_split

    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction and data.test_fraction must be fractions in (0, 1) with a sum below 1, "
            f"got {val_fraction} and {test_fraction}"
        )
    # The sizes scikit-learn's train_test_split gives (held-out parts rounded up).
    n = len(labels)
    n_test = math.ceil(test_fraction * n)
    n_val = math.ceil(val_fraction / (1.0 - test_fraction) * (n - n_test))
    classes = len(labels.unique())
    check_split_sizes(
        {"train": n - n_test - n_val, "val": n_val, "test": n_test},
        {"train": f"data.val_fraction={val_fraction} + data.test_fraction={test_fraction}",
         "val": f"data.val_fraction={val_fraction}", "test": f"data.test_fraction={test_fraction}"},
        f"the {n:,} images", at_least=classes, why=" (one per class: the split is stratified by class)",
    )  # fmt: skip
    indices = list(range(len(labels)))
    rest, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(
        rest, test_size=val_share, stratify=labels[rest], random_state=seed
    )
    return sorted(train), sorted(val), sorted(test)


def random_shift(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image of a (B, C, H, W) batch by its own random offset in pixels."""
    if max_shift <= 0:
        return images
    b, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")  # (B, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (b, 1), device=images.device)
    dx = torch.randint(0, 2 * max_shift + 1, (b, 1), device=images.device)
    rows = (dy + torch.arange(h, device=images.device)).view(b, 1, h, 1)
    cols = (dx + torch.arange(w, device=images.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    channel = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]


def rotate_scale(images: torch.Tensor, degrees: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rotate image ``i`` of a (B, C, H, W) batch by ``degrees[i]`` (counter-clockwise, as
    ``torchvision.transforms.v2.functional.rotate``) and scale it by ``scale[i]`` about the
    centre: bilinear sampling, edge pixels repeated where the image moves in."""
    angle = torch.deg2rad(degrees.to(images.dtype))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    # affine_grid maps each output pixel to where it samples the input: the inverse
    # transform, in coordinates with y pointing down (hence the signs).
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_rotate_scale(images: torch.Tensor, max_rotation: float, max_scale: float) -> torch.Tensor:
    """:func:`rotate_scale` by a random angle in [-max_rotation, max_rotation] degrees and
    a random factor in [1 - max_scale, 1 + max_scale], drawn for each image."""
    if max_rotation <= 0 and max_scale <= 0:
        return images
    b, device = images.shape[0], images.device
    degrees = (torch.rand(b, device=device) * 2 - 1) * max_rotation
    scale = 1 + (torch.rand(b, device=device) * 2 - 1) * max_scale
    return rotate_scale(images, degrees, scale.to(images.dtype))


ORIENTATIONS = ("", "rot90", "rot180", "rot270", "mirror", "mirror rot90", "mirror rot180", "mirror rot270")


def orient(images: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (B, C, H, W) batch in orientation ``orientation`` (0-7) of :data:`ORIENTATIONS`,
    the eight symmetries of the square: 0-3 turn it by that many quarter turns
    counter-clockwise, 4-7 mirror it left-right first."""
    if orientation >= 4:
        images = images.flip(3)
    return images.rot90(orientation % 4, dims=(2, 3))


def per_class(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Positions of ``n`` examples of each class in ``labels``, drawn with ``seed``, sorted."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    chosen = [order[labels[order] == c][:n] for c in labels.unique()]
    return torch.cat(chosen).sort().values


class DigitsDataModule(ImageDataModule):
    """scikit-learn digits, upsampled and held in memory."""

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        max_shift: int = 3,
        max_rotation: float = 0.0,
        max_scale: float = 0.0,
        drop_last: bool = False,
        classes: list[int] | None = None,
        train_per_class: int | None = None,
        channels: int = 1,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        orientations: int = 1,
    ):
        super().__init__(batch_size=batch_size, num_workers=0, drop_last=drop_last)
        if classes is not None and (
            not classes or len(set(classes)) != len(classes) or not set(classes) <= set(range(10))
        ):
            raise ConfigError(f"data.classes must be distinct digits 0-9 (or null for all), got {classes}")
        if train_per_class is not None and train_per_class < 1:
            raise ConfigError(f"data.train_per_class must be >= 1 (or null for all), got {train_per_class}")
        if channels < 1:
            raise ConfigError(f"data.channels must be >= 1, got {channels}")
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and len(value) not in (1, channels):
                raise ConfigError(f"data.{name} needs 1 or {channels} values (data.channels), got {list(value)}")
        if orientations not in (1, 4, 8):
            raise ConfigError(f"data.orientations must be 1, 4 or 8, got {orientations}")
        self.orientations = orientations
        self.image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        if max_rotation < 0 or not 0 <= max_scale < 1:
            raise ConfigError(
                f"data.max_rotation must be >= 0 degrees and data.max_scale in [0, 1), got {max_rotation}, {max_scale}"
            )
        self.max_shift, self.max_rotation, self.max_scale = max_shift, max_rotation, max_scale
        self.classes = list(classes) if classes is not None else list(range(10))
        self._class_names = [f"{c} {o}".strip() for c in self.classes for o in ORIENTATIONS[:orientations]]
        self.train_per_class = train_per_class
        self.num_classes, self.in_channels = len(self.classes) * orientations, channels
        self._mean, self._std = mean, std
        self.mean: tuple[float, ...] = ()
        self.std: tuple[float, ...] = ()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        labels = torch.tensor(digits.target, dtype=torch.long)
        size = self.image_size
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        train, val, test = split_indices(labels, self.val_fraction, self.test_fraction, self.split_seed)
        relabel = torch.full((10,), -1, dtype=torch.long)
        relabel[self.classes] = torch.arange(len(self.classes))
        labels = relabel[labels]
        train, val, test = ([i for i in split if labels[i] >= 0] for split in (train, val, test))
        if self.train_per_class is not None:
            train = [train[i] for i in per_class(labels[train], self.train_per_class, self.split_seed).tolist()]
        c = self.in_channels
        images = images.expand(-1, c, -1, -1)  # (N, C, H, W): the gray channel replicated
        mean = self._mean or [images[train].mean().item()]
        std = self._std or [images[train].std().item()]
        self.mean, self.std = tuple(mean) * (c // len(mean)), tuple(std) * (c // len(std))
        images = (images - torch.tensor(self.mean).view(1, c, 1, 1)) / torch.tensor(self.std).view(1, c, 1, 1)
        n = self.orientations

        def split(indices: list[int]) -> TensorBatches:  # every image in each orientation, its own class
            x, y = images[indices], labels[indices]
            return TensorBatches(torch.cat([orient(x, o) for o in range(n)]), torch.cat([y * n + o for o in range(n)]))

        self.train_set, self.val_set, self.test_set = split(train), split(val), split(test)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.training:
            images, labels = batch
            images = random_rotate_scale(images, self.max_rotation, self.max_scale)
            batch = random_shift(images, self.max_shift), labels
        return batch


@DATASETS.register("digits")
def digits(**kwargs: Any) -> DigitsDataModule:
    return DigitsDataModule(**kwargs)
