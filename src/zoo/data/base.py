"""What every image data module provides to the task and the command line."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from zoo.registry import Registry

DATASETS = Registry("dataset")


class ImageDataModule(L.LightningDataModule):
    """A LightningDataModule with the facts a model needs to be built for it.

    Subclasses set ``num_classes``, ``in_channels``, ``image_size`` (square side after
    the eval transform), ``mean``/``std`` (per channel, used for normalisation) and
    fill ``train_set``/``val_set``/``test_set`` in :meth:`setup`.
    """

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(self, batch_size: int, num_workers: int = 0, drop_last: bool = False):
        super().__init__()
        self.batch_size, self.num_workers, self.drop_last = batch_size, num_workers, drop_last
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

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
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
