"""In-memory datasets serve whole batches by tensor indexing, with the same contents,
order and resume behaviour as a per-example DataLoader."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate

from zoo.data import build_datamodule
from zoo.data.base import TensorBatches, already_batched
from zoo.data.text import collate_pairs


def test_digits_batches_equal_per_example_collation():
    dm = build_datamodule(name="digits", batch_size=64)
    dm.setup("fit")
    assert isinstance(dm.train_set, TensorBatches)
    loader = dm.train_dataloader()
    assert loader.collate_fn is already_batched and loader.num_workers == 0
    indices = list(loader.batch_sampler)[0]
    batch = next(iter(loader))
    expected = default_collate([dm.train_set[i] for i in indices])
    assert torch.equal(batch[0], expected[0]) and torch.equal(batch[1], expected[1])
    assert batch[0].shape == (64, 1, 32, 32) and len(set(batch[1].tolist())) > 1


def test_text_batches_equal_collate_pairs():
    dm = build_datamodule(name="dates", train_size=200, val_size=20, test_size=20, batch_size=16)
    dm.setup("fit")
    loader = dm.train_dataloader()
    indices = list(loader.batch_sampler)[1]
    batch = list(loader)[1]
    expected = collate_pairs([dm.train_set[i] for i in indices])
    assert batch.keys() == expected.keys()
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key
    # Each batch is cut to its own longest sequence, not the data set's.
    src_lengths = [len(dm.train_set[i][0]) for i in indices]
    assert batch["src"].shape[1] == max(src_lengths)


def test_batches_are_made_on_the_datasets_device():
    data = TensorBatches(torch.arange(10.0).view(10, 1), torch.arange(10))
    data.to("meta")
    x, y = data.__getitems__([3, 1])
    assert x.device.type == "meta" and y.shape == (2,)
    cpu = TensorBatches(torch.arange(10.0).view(10, 1), torch.arange(10))
    loader = DataLoader(cpu, batch_size=4, collate_fn=already_batched)
    assert [b[1].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_disk_datasets_take_their_loader_settings_from_config(tmp_path):
    from tests.helpers import write_image_folder

    write_image_folder(tmp_path, splits=("train",), classes=("a", "b"), per_class=2)
    kept = build_datamodule(name="imagefolder", root=str(tmp_path), image_size=16, num_workers=1, val_fraction=0.5)
    fresh = build_datamodule(name="imagefolder", root=str(tmp_path), image_size=16, num_workers=1, val_fraction=0.5,
                             persistent_workers=False)  # fmt: skip
    for dm in (kept, fresh):
        dm.setup("fit")
    assert kept.train_dataloader().persistent_workers and not fresh.train_dataloader().persistent_workers
    assert kept.train_dataloader().num_workers == 1
    # Page-locked memory helps copies to a GPU only; without one it is left off.
    assert kept.train_dataloader().pin_memory == torch.cuda.is_available()
