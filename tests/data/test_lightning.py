"""Lightning's Trainer takes a zoo data module through zoo.data.lightning.for_lightning."""

import types

import lightning as L

from zoo.data import build_datamodule
from zoo.data.lightning import for_lightning


def test_the_adapter_is_the_data_module_to_lightning():
    data = build_datamodule("digits", batch_size=32, image_size=8)
    adapted = for_lightning(data)
    assert isinstance(adapted, L.LightningDataModule) and not isinstance(data, L.LightningDataModule)
    # Lightning files the data's state in checkpoints under this name; resume looks it up there
    assert type(adapted).__qualname__ == type(data).__qualname__ == "DigitsDataModule"
    assert type(for_lightning(data)) is type(adapted)  # one class per data class
    assert dict(adapted.hparams) == data.hparams == {"name": "digits", "batch_size": 32, "image_size": 8}
    adapted.setup("fit")
    assert data.train_set is not None and adapted.image_size == data.image_size == 8  # hooks and attributes reach it
    assert adapted.state_dict() == data.state_dict() and adapted.state_dict()["mean"]

    assert data.trainer is None and not data.training
    adapted.trainer = types.SimpleNamespace(training=True)  # what Lightning sets while it runs
    assert data.trainer is adapted.trainer and data.training
    adapted.trainer.training = False  # validating
    assert not data.training
