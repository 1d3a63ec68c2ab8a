"""Image datasets in their standard on-disk formats, read through torchvision.

- ``mnist``, ``fashion_mnist``: IDX files under ``<root>/MNIST/raw`` and
  ``<root>/FashionMNIST/raw`` (LeCun et al., 1998; Xiao et al., 2017).
- ``cifar10``, ``cifar100``: the pickled python batches under
  ``<root>/cifar-10-batches-py`` and ``<root>/cifar-100-python`` (Krizhevsky, 2009),
  checked against their published MD5 sums by torchvision.
- ``imagefolder``: your own images, one folder per class, under ``<root>/train``
  (required), ``<root>/val`` and ``<root>/test`` (optional; a missing ``val`` is split off
  ``train``, a missing ``test`` falls back to the validation set).

Nothing is downloaded unless ``download=true``. The validation set of the fixed
train/test datasets is a seeded ``val_fraction`` of the official training set, so the
official test set stays untouched. Standard augmentation (``augment=true``): random
crops with padding, plus horizontal flips for natural images; ImageNet-style random
resized crops for ``imagefolder``. Recipes add ``auto_augment`` (autoaugment,
randaugment, trivialaugment) and ``random_erasing`` (a probability); batch-level MixUp
and CutMix are the task's (``task.mixup_alpha``, ``task.cutmix_alpha``).

``imagefolder`` reads its files by the rules of :mod:`zoo.data.images`, as ``zoo-predict``
does: an image over Pillow's size limit (``PIL.Image.MAX_IMAGE_PIXELS``) or one that cannot
be decoded stops the run with a ``DataError`` naming the file; 16-bit, float, palette,
CMYK and transparent images are converted to the model's channels (16-bit values scaled,
transparency composited on white). Symbolic links in the folders are followed, except a
link back to a folder that contains it (a loop), which is skipped with one warning naming
it; a file reached by two paths is read once.

A ``val_fraction`` that leaves the training or validation split empty is refused before
training (:func:`zoo.data.base.check_split_sizes`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision.datasets.vision import StandardTransform
from torchvision.transforms import InterpolationMode, v2

from zoo.data.base import DATASETS, ImageDataModule, check_split_sizes
from zoo.data.images import read_image, walk_files
from zoo.data.inputs import INTERPOLATIONS
from zoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGEFOLDER_IMAGE_SIZE = 224  # what data=imagefolder's image_size=None means


@dataclass(frozen=True)
class VisionSpec:
    """Facts about one torchvision dataset; mean/std are those of its training set."""

    dataset: type
    folder: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # horizontal flips preserve the label (natural images, not digits)


SPECS: dict[str, VisionSpec] = {
    "mnist": VisionSpec(datasets.MNIST, "MNIST/raw", 10, 1, 28, (0.1307,), (0.3081,), False),
    "fashion_mnist": VisionSpec(
        datasets.FashionMNIST, "FashionMNIST/raw", 10, 1, 28, (0.2860,), (0.3530,), False
    ),
    "cifar10": VisionSpec(
        datasets.CIFAR10, "cifar-10-batches-py", 10, 3, 32,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True,
    ),
    "cifar100": VisionSpec(
        datasets.CIFAR100, "cifar-100-python", 100, 3, 32,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True,
    ),
}  # fmt: skip


def _to_tensor() -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


# Learned and random augmentation policies (torchvision transforms v2), applied to the
# uint8 image after the crop and flip, as torchvision's reference recipes do.
AUTO_AUGMENT = {
    "autoaugment": v2.AutoAugment,  # Cubuk et al., 2018: the ImageNet policy
    "randaugment": v2.RandAugment,  # Cubuk et al., 2019: 2 random ops of magnitude 9
    "trivialaugment": v2.TrivialAugmentWide,  # Mueller and Hutter, 2021: 1 op, random magnitude
}


def train_augmentation(geometric: list, auto_augment: str | None, random_erasing: float, normalize: v2.Normalize) -> list:
    """``ToImage -> geometric (crop, flip) -> policy -> float -> normalize -> random erasing``."""
    if auto_augment is not None and auto_augment not in AUTO_AUGMENT:
        raise DataError(f"data.auto_augment must be null or one of {', '.join(AUTO_AUGMENT)}; got {auto_augment!r}")
    if not 0.0 <= random_erasing <= 1.0:
        raise DataError(f"data.random_erasing is a probability in [0, 1]; got {random_erasing}")
    steps = [v2.ToImage(), *geometric]
    if auto_augment:
        steps.append(AUTO_AUGMENT[auto_augment]())
    steps += [v2.ToDtype(torch.float32, scale=True), normalize]
    if random_erasing:
        steps.append(v2.RandomErasing(p=random_erasing))  # Zhong et al., 2017; on the normalised tensor
    return steps


def split_off(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded (rest, held-out) split of ``range(n)`` with ``fraction`` (``data.val_fraction``)
    held out for validation; a split left empty is refused (:class:`ConfigError`)."""
    if not 0 <= fraction <= 1:
        raise ConfigError(f"data.val_fraction must be a fraction in (0, 1), got {fraction}")
    n_held = int(round(n * fraction))
    check_split_sizes(
        {"train": n - n_held, "val": n_held}, dict.fromkeys(("train", "val"), f"data.val_fraction={fraction}"),
        f"the {n:,} training images",
    )  # fmt: skip
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_held:]), sorted(perm[:n_held])


class TorchvisionDataModule(ImageDataModule):
    """MNIST, Fashion-MNIST, CIFAR-10/100 from their official files."""

    def __init__(
        self,
        spec: VisionSpec,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 2,
        image_size: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        augment: bool = True,
        drop_last: bool = False,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        auto_augment: str | None = None,
        random_erasing: float = 0.0,
    ):
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, drop_last=drop_last,
            pin_memory=pin_memory, persistent_workers=persistent_workers,
        )  # fmt: skip
        self.auto_augment, self.random_erasing = auto_augment, random_erasing
        self.spec, self.root, self.download = spec, Path(root), download
        self.num_classes, self.in_channels = spec.num_classes, spec.in_channels
        self.image_size = image_size or spec.image_size
        self.mean, self.std = spec.mean, spec.std
        self.val_fraction, self.split_seed, self.augment = val_fraction, split_seed, augment

    def _transform(self, train: bool) -> v2.Compose:
        size = self.image_size
        resize = [v2.Resize(size, antialias=True)] if size != self.spec.image_size else []
        if train and self.augment:
            crop = [v2.RandomCrop(size, padding=size // 8)] + ([v2.RandomHorizontalFlip()] if self.spec.flip else [])
            normalize = v2.Normalize(self.mean, self.std)
            return v2.Compose(train_augmentation(resize + crop, self.auto_augment, self.random_erasing, normalize))
        return v2.Compose([*_to_tensor(), *resize, v2.Normalize(self.mean, self.std)])

    def _open(self, train: bool, transform: v2.Compose | None = None, download: bool = False) -> Dataset:
        try:
            return self.spec.dataset(str(self.root), train=train, transform=transform, download=download)
        except RuntimeError as err:
            if "download=True" not in str(err):
                raise
            where = (self.root / self.spec.folder).resolve()
            raise DataError(
                f"{self.spec.dataset.__name__} not found or corrupted at {where}. "
                f"Set data.download=true to fetch it, or data.root=<dir> to point at a copy."
            ) from None

    def prepare_data(self) -> None:
        if self.download:
            self._open(train=True, download=True)
            self._open(train=False, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_full = self._open(train=True, transform=self._transform(train=True))
        eval_full = self._open(train=True, transform=self._transform(train=False))
        train_idx, val_idx = split_off(len(train_full), self.val_fraction, self.split_seed)
        self.train_set = Subset(train_full, train_idx)
        self.val_set = Subset(eval_full, val_idx)
        self.test_set = self._open(train=False, transform=self._transform(train=False))
        self._class_names = list(getattr(self.test_set, "classes", [])) or None  # e.g. CIFAR-10's "airplane"


def load_image(path: str, channels: int = 3) -> Image.Image:
    """An image file as RGB (or grayscale, ``channels`` 1) by the rules of
    :mod:`zoo.data.images`; a broken or oversized file is a :class:`DataError` naming it."""
    return read_image(path, channels)


class ImageFolder(datasets.ImageFolder):
    """torchvision's ``ImageFolder``, its files listed by :func:`zoo.data.images.walk_files`:
    each file once, symbolic-link loops skipped with one warning that names them. Without
    links the samples are torchvision's, in torchvision's order."""

    @staticmethod
    def make_dataset(
        directory: str, class_to_idx: dict[str, int], extensions: tuple[str, ...] | None = None,
        is_valid_file: Callable[[str], bool] | None = None, allow_empty: bool = False,
    ) -> list[tuple[str, int]]:  # fmt: skip
        if is_valid_file is None:
            is_valid_file = partial(datasets.folder.has_file_allowed_extension, extensions=extensions)
        samples, loops, empty = [], [], []
        for name in sorted(class_to_idx):
            files, found_loops = walk_files(Path(directory, name), is_valid_file)
            samples += [(path, class_to_idx[name]) for path in files]
            loops += found_loops
            if not files:
                empty.append(name)
        if loops:
            log.warning("%s: skipped %d symbolic link loop(s), each a link to a folder that contains it: %s",
                        directory, len(loops), "; ".join(loops))  # fmt: skip
        if empty and not allow_empty:  # torchvision's message
            raise FileNotFoundError(
                f"Found no valid file for the classes {', '.join(empty)}. "
                f"Supported extensions are: {', '.join(extensions or ())}"
            )
        return samples

    def with_transform(self, transform: Callable) -> ImageFolder:
        """The same files (the folder is not walked again) with another transform."""
        view = copy.copy(self)
        view.transform, view.transforms = transform, StandardTransform(transform, self.target_transform)
        return view


class ImageFolderDataModule(ImageDataModule):
    """Your own images: ``<root>/{train,val,test}/<class name>/<image file>``."""

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        grayscale: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        augment: bool = True,
        drop_last: bool = False,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        resize_size: int | None = None,
        auto_augment: str | None = None,
        random_erasing: float = 0.0,
        interpolation: str | None = None,
    ):
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, drop_last=drop_last,
            pin_memory=pin_memory, persistent_workers=persistent_workers,
        )  # fmt: skip
        self.auto_augment, self.random_erasing = auto_augment, random_erasing
        # None: ImageNet's 224 px and statistics (fine-tuning fills them from the weights first)
        self.root, self.image_size = Path(root), IMAGEFOLDER_IMAGE_SIZE if image_size is None else image_size
        self.resize_size = resize_size or int(round(self.image_size / 0.875))  # 256 for 224, as torchvision evaluates
        self.interpolation = interpolation or "bilinear"  # of every resize, training's random crop included
        if self.interpolation not in INTERPOLATIONS:
            raise DataError(f"data.interpolation must be null or one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")
        self.in_channels = 1 if grayscale else 3
        self.mean = IMAGENET_MEAN if mean is None else tuple(mean)
        self.std = IMAGENET_STD if std is None else tuple(std)
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise DataError(f"data.mean and data.std need {self.in_channels} values for {self.in_channels}-channel images")
        self.grayscale = grayscale
        self.val_fraction, self.split_seed, self.augment = val_fraction, split_seed, augment
        self._class_names: list[str] | None = None  # found in train/, or restored from a checkpoint

    @property
    def classes(self) -> list[str]:
        if self._class_names is None:
            train_dir = self.root / "train"
            if not train_dir.is_dir():
                raise DataError(f"image folder not found: {train_dir.resolve()} (expected <root>/train/<class>/<image>)")
            try:
                self._class_names, _ = datasets.folder.find_classes(str(train_dir))
            except FileNotFoundError:
                raise DataError(f"no class folders in {train_dir.resolve()} (expected <root>/train/<class>/<image>)") from None
            if len(self._class_names) < 2:  # one class would train to a meaningless 100%
                found, self._class_names = self._class_names, None
                raise DataError(
                    f"{train_dir.resolve()} has {len(found)} class folder ({', '.join(found)}); "
                    f"classification needs at least 2 (<root>/train/<class>/<image>)"
                )
        return self._class_names

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    def _transform(self, train: bool) -> v2.Compose:
        steps = []  # the loader gives the model's channels (grayscale or RGB)
        if train and self.augment:
            mode = InterpolationMode(self.interpolation)
            crop = [v2.RandomResizedCrop(self.image_size, interpolation=mode, antialias=True), v2.RandomHorizontalFlip()]
            normalize = v2.Normalize(self.mean, self.std)
            steps += train_augmentation(crop, self.auto_augment, self.random_erasing, normalize)
        else:
            steps += self.eval_steps()
        return v2.Compose(steps)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def _folder(self, split: str, train: bool) -> ImageFolder:
        path = self.root / split
        loader = partial(load_image, channels=self.in_channels)
        try:
            folder = ImageFolder(str(path), transform=self._transform(train), loader=loader)
        except FileNotFoundError as err:
            raise DataError(f"{path.resolve()}: {err}") from None
        if folder.classes != self.classes:
            raise DataError(
                f"{path.resolve()} has classes {folder.classes}, but train/ has {self.classes}"
            )
        return folder

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.classes  # noqa: B018  (refuses a missing folder or fewer than 2 classes, naming the path)
        train = self._folder("train", train=True)
        if (self.root / "val").is_dir():
            self.train_set, self.val_set = train, self._folder("val", train=False)
        else:
            train_idx, val_idx = split_off(len(train), self.val_fraction, self.split_seed)
            self.train_set = Subset(train, train_idx)
            self.val_set = Subset(train.with_transform(self._transform(train=False)), val_idx)
        if (self.root / "test").is_dir():
            self.test_set = self._folder("test", train=False)
        else:
            log.warning("no %s: testing on the validation set", (self.root / "test").resolve())
            self.test_set = self.val_set


def _register(name: str, spec: VisionSpec) -> None:
    @DATASETS.register(name)
    def build(**kwargs: Any) -> TorchvisionDataModule:
        return TorchvisionDataModule(spec, **kwargs)


for _name, _spec in SPECS.items():
    _register(_name, _spec)


@DATASETS.register("imagefolder")
def imagefolder(**kwargs: Any) -> ImageFolderDataModule:
    return ImageFolderDataModule(**kwargs)
