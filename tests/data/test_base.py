"""What every data module shares (src/zoo/data/base.py): loaders and split checks."""

from __future__ import annotations

import pytest
import torch

from zoo.cli.train import train
from zoo.data import build_datamodule
from zoo.data.base import ImageDataModule, TensorBatches, check_split_sizes
from zoo.errors import ConfigError, DataError

from tests.helpers import QUIET, compose_config


def batch_sizes(loader) -> list[int]:
    return [len(batch) for batch in loader.batch_sampler]


@pytest.fixture(scope="module")
def digits():
    dm = build_datamodule("digits", batch_size=8)
    dm.setup("fit")
    assert len(dm.train_set) == 1257
    return dm


def test_a_final_training_batch_of_one_is_dropped(digits):
    loader = digits.train_dataloader()
    assert batch_sizes(loader) == [8] * 157 and len(loader) == 157  # 1257 = 157 * 8 + 1


def test_larger_remainders_are_kept(digits):
    digits.batch_size = 5
    try:
        assert batch_sizes(digits.train_dataloader()) == [5] * 251 + [2]  # 1257 = 251 * 5 + 2
        digits.batch_size = 256  # the default run's batches: unchanged
        assert batch_sizes(digits.train_dataloader()) == [256] * 4 + [233]
    finally:
        digits.batch_size = 8


class Tiny(ImageDataModule):
    """Nine examples in every split, for the loaders alone."""

    def __init__(self, batch_size: int, drop_last: bool = False, n: int = 9):
        super().__init__(batch_size=batch_size, drop_last=drop_last)
        self.train_set, self.val_set, self.test_set = (TensorBatches(torch.arange(n)) for _ in range(3))


def test_only_training_drops_a_batch_of_one():
    dm = Tiny(batch_size=8)
    assert batch_sizes(dm.train_dataloader()) == [8]
    assert batch_sizes(dm.val_dataloader()) == batch_sizes(dm.test_dataloader()) == [8, 1]
    assert batch_sizes(Tiny(batch_size=1).train_dataloader()) == [1] * 9  # every batch is full
    assert batch_sizes(Tiny(batch_size=4, drop_last=True).train_dataloader()) == [4, 4]


def test_a_training_split_of_one_example_is_refused():
    with pytest.raises(DataError, match="the training split holds 1 example"):
        Tiny(batch_size=8, n=1).train_dataloader()
    assert batch_sizes(Tiny(batch_size=1, n=1).train_dataloader()) == [1]


def test_the_shuffled_order_resumes_mid_epoch_with_the_batch_dropped(digits):
    loader = digits.train_dataloader()
    loader.sampler.set_epoch(3)
    whole = [batch[0] for batch in loader]
    resumed = digits.train_dataloader()
    resumed.sampler.set_epoch(3)
    resumed.load_state_dict({"epoch": 3, "batches": 150})
    rest = [batch[0] for batch in resumed]
    assert len(whole) == 157 and len(rest) == 7
    assert all(torch.equal(a, b) for a, b in zip(rest, whole[150:]))
    assert resumed.state_dict() == {"epoch": 3, "batches": 157}


def test_a_run_whose_last_batch_would_hold_one_image_finishes(tmp_path):
    """BatchNorm refuses a training batch of one: the MLP (norm: batch) on the 1,257
    training digits in batches of 8 died after the first epoch, before any checkpoint.
    Batches of 157 leave the same remainder of one (1257 = 8 * 157 + 1) in 8 steps, not 157."""
    train(compose_config("train", tmp_path, [
        "model=mlp", "data.batch_size=157", "trainer.max_epochs=1", "trainer.limit_val_batches=1", *QUIET,
    ]))  # fmt: skip
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "metrics.json").is_file()


def test_check_split_sizes_names_the_setting_and_the_sizes():
    settings = {"train": "t", "val": "data.val_fraction=0", "test": "data.test_fraction=0.2"}
    with pytest.raises(ConfigError) as err:
        check_split_sizes({"train": 1437, "val": 0, "test": 360}, settings, "the 1,797 images")
    assert str(err.value) == (
        "data.val_fraction=0 leaves the val split empty: the 1,797 images would split into train 1,437, val 0, test 360"
    )
    with pytest.raises(ConfigError, match=r"leaves the test split with 9, fewer than 10 \(why\)"):
        check_split_sizes({"train": 100, "val": 10, "test": 9}, settings, "x", at_least=10, why=" (why)")
    check_split_sizes({"train": 10, "val": 10, "test": 10}, settings, "x", at_least=10)  # at the bound: accepted
