"""What every data module provides to the task and the command line."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.errors import ConfigError
from zoo.registry import Registry

DATASETS = Registry("dataset")


class DataModule(L.LightningDataModule):
    """A LightningDataModule that knows its task and what a model needs to fit it.

    Subclasses set ``task`` (a name in :data:`zoo.tasks.TASKS`), fill
    ``train_set``/``val_set``/``test_set`` in :meth:`setup`, and implement
    :meth:`model_facts`.
    """

    task: str

    def __init__(self, batch_size: int, num_workers: int = 0, drop_last: bool = False):
        super().__init__()
        self.batch_size, self.num_workers, self.drop_last = batch_size, num_workers, drop_last
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def model_facts(self) -> dict[str, Any]:
        """Model constructor arguments fixed by the data (``num_classes``, vocabulary sizes, ...)."""
        raise NotImplementedError

    def check_model(self, net: nn.Module, model_cfg: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` before training if ``net`` cannot take this data."""

    def collate_fn(self, batch: list) -> Any:
        return torch.utils.data.default_collate(batch)

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been run")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.num_workers > 0,
            collate_fn=self.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


class ImageDataModule(DataModule):
    """Images and class labels for the ``classification`` task.

    Subclasses set ``num_classes``, ``in_channels``, ``image_size`` (square side after
    the eval transform) and ``mean``/``std`` (per channel, used for normalisation).
    """

    task = "classification"
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def model_facts(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "image_size": self.image_size}

    def check_model(self, net: nn.Module, model_cfg: dict[str, Any]) -> None:
        c, s = self.in_channels, self.image_size
        check_input = getattr(net, "check_input", None)
        if check_input is None:
            raise ConfigError(f"model '{model_cfg.get('name')}' is not an image model; it cannot train on images")
        try:
            check_input(torch.empty(1, c, s, s, device="meta"))
        except ValueError as err:
            hint = " or model.small_input=true" if "small_input" in model_cfg else ""
            raise ConfigError(f"{err}. The data gives {c}x{s}x{s} images: set data.image_size=<size>{hint}") from None
