"""A zoo data module as Lightning's Trainer takes it: :func:`for_lightning`.

The data modules (:mod:`zoo.data.base`) are plain objects, so that using and testing a
trained network imports no Lightning. The Trainer accepts only a ``LightningDataModule``;
:func:`for_lightning` gives it one that passes each hook on to the data module, and the
data module sees the running Trainer as its ``trainer``. Anything else asked of it (a
callback reading ``trainer.datamodule.image_size``, the task module reading the
vocabularies or ``inputs()``) is answered by the data module.

Lightning files the data module's :meth:`~zoo.data.base.DataModule.state_dict` in every
checkpoint under the class's qualified name, and looks it up there on resume: the class
:func:`for_lightning` makes for a data class carries that class's name
(``DigitsDataModule``, not this module's), so checkpoints read the same whichever side
wrote them.
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from zoo.data.base import DataModule


class LightningData(L.LightningDataModule):
    """Lightning's view of the zoo data module ``data`` (made by :func:`for_lightning`)."""

    def __init__(self, data: DataModule):
        self.__dict__["data"] = data  # first: the Trainer property below forwards to it
        super().__init__()
        self.save_hyperparameters(dict(data.hparams), logger=False)  # the loggers get the run config

    @property
    def trainer(self) -> Any:
        return self.data.trainer

    @trainer.setter
    def trainer(self, trainer: Any) -> None:
        self.data.trainer = trainer

    def __getattr__(self, name: str) -> Any:  # only for names the adapter itself lacks
        if name == "data":
            raise AttributeError(name)
        return getattr(self.data, name)

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: str) -> None:
        self.data.setup(stage)

    def train_dataloader(self) -> DataLoader:
        return self.data.train_dataloader()

    def val_dataloader(self) -> DataLoader:
        return self.data.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.data.test_dataloader()

    def state_dict(self) -> dict[str, Any]:
        return self.data.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data.load_state_dict(state)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.data.on_after_batch_transfer(batch, dataloader_idx)


@functools.cache
def _adapter_class(data_class: type[DataModule]) -> type[LightningData]:
    """:class:`LightningData` under ``data_class``'s names, the key of its state in checkpoints."""
    return type(data_class.__name__, (LightningData,), {"__qualname__": data_class.__qualname__, "__module__": __name__})


def for_lightning(data: DataModule) -> LightningData:
    """``data`` as a ``LightningDataModule``, for ``Trainer.fit``/``test(datamodule=...)``."""
    return _adapter_class(type(data))(data)
