"""The digits options transfer learning needs: a class subset, a per-class limit, channels, statistics."""

from __future__ import annotations

import pytest
import torch

from zoo.data import build_datamodule
from zoo.errors import ConfigError


@pytest.fixture(scope="module")
def full():
    dm = build_datamodule("digits", max_shift=0)
    dm.setup()
    return dm


def _images(dataset) -> torch.Tensor:
    return dataset.tensors[0].flatten(1)


def test_a_class_subset_is_relabelled_in_order_and_keeps_the_fixed_split(full):
    dm = build_datamodule("digits", classes=[7, 5], mean=list(full.mean), std=list(full.std))
    dm.setup()
    assert dm.num_classes == 2 and dm.model_facts()["num_classes"] == 2
    for subset, whole in ((dm.train_set, full.train_set), (dm.val_set, full.val_set), (dm.test_set, full.test_set)):
        x, y = subset.tensors
        wx, wy = whole.tensors
        kept = (wy == 7) | (wy == 5)
        assert torch.equal(x, wx[kept])  # the same images, in the same order
        assert torch.equal(y, (wy[kept] == 5).long())  # 7 -> 0, 5 -> 1


def test_train_per_class_limits_only_the_training_set(full):
    dm = build_datamodule("digits", classes=[5, 6, 7, 8, 9], train_per_class=10)
    dm.setup()
    assert torch.bincount(dm.train_set.tensors[1]).tolist() == [10] * 5
    assert len(dm.val_set) == int((full.val_set.tensors[1] >= 5).sum()) and len(dm.test_set) == 180
    again = build_datamodule("digits", classes=[5, 6, 7, 8, 9], train_per_class=10, batch_size=3)
    again.setup()
    assert torch.equal(dm.train_set.tensors[0], again.train_set.tensors[0])  # a fixed, seeded draw
    other = build_datamodule("digits", classes=[5, 6, 7, 8, 9], train_per_class=10, split_seed=1)
    other.setup()
    assert not torch.equal(dm.train_set.tensors[0], other.train_set.tensors[0])
    # Training images come from the training split only.
    whole_train = _images(full.train_set)
    mine = (dm.train_set.tensors[0] * torch.tensor(dm.std) + torch.tensor(dm.mean) - full.mean[0]) / full.std[0]
    assert torch.cdist(mine.flatten(1), whole_train).amin(1).max() < 0.1  # (distinct images: > 1 apart)


def test_channels_replicate_the_gray_image_and_given_statistics_are_used():
    dm = build_datamodule("digits", channels=3, mean=[0.5], std=[0.25], image_size=8)
    dm.setup()
    x = dm.test_set.tensors[0]
    assert x.shape[1:] == (3, 8, 8) and dm.in_channels == 3 and dm.mean == (0.5,) * 3
    assert torch.equal(x[:, 0], x[:, 2])
    gray = build_datamodule("digits", image_size=8, mean=[0.5], std=[0.25])
    gray.setup()
    assert torch.equal(gray.test_set.tensors[0][:, 0], x[:, 1])
    # Stored in checkpoints: the preprocessing and the names of the classes.
    assert dm.state_dict() == {
        "image_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": [str(d) for d in range(10)],
    }  # fmt: skip
    subset = build_datamodule("digits", classes=[7, 3])
    assert subset.class_names == ["7", "3"]  # label 0 is digit 7


def test_orient_is_each_symmetry_of_the_square_as_torchvision_does_it():
    from torchvision.transforms.v2 import functional as TF

    from zoo.data.digits import ORIENTATIONS, orient

    image = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)  # no symmetry of its own
    for o, name in enumerate(ORIENTATIONS):
        expected = TF.horizontal_flip(image) if "mirror" in name else image
        expected = TF.rotate(expected, 90.0 * (o % 4))  # counter-clockwise, as torchvision's angle
        assert torch.equal(orient(image, o), expected), name
    assert len({orient(image, o).flatten().tolist().__repr__() for o in range(8)}) == 8


@pytest.mark.parametrize("n", [4, 8])
def test_orientations_make_each_orientation_of_each_digit_its_own_class(full, n):
    from zoo.data.digits import ORIENTATIONS, orient

    plain = build_datamodule("digits", classes=[3, 7], max_shift=0)
    dm = build_datamodule("digits", classes=[3, 7], max_shift=0, orientations=n)
    plain.setup()
    dm.setup()
    assert dm.num_classes == 2 * n and dm.model_facts()["num_classes"] == 2 * n
    assert dm.class_names[:n] == ["3", *(f"3 {o}" for o in ORIENTATIONS[1:n])] and dm.class_names[n] == "7"
    assert (dm.mean, dm.std) == (plain.mean, plain.std)  # a pixel permutation: the same statistics
    for subset, whole in ((dm.train_set, plain.train_set), (dm.val_set, plain.val_set), (dm.test_set, plain.test_set)):
        x, y = subset.tensors
        wx, wy = whole.tensors
        assert len(x) == n * len(wx)
        for o in range(n):  # block o: every image of the split in orientation o, labelled digit * n + o
            block = slice(o * len(wx), (o + 1) * len(wx))
            assert torch.equal(x[block], orient(wx, o)) and torch.equal(y[block], wy * n + o)


@pytest.mark.parametrize(
    "options, message",
    [({"classes": [1, 1]}, "distinct digits"), ({"classes": [10]}, "distinct digits"),
     ({"classes": []}, "distinct digits"),
     ({"train_per_class": 0}, "train_per_class must be >= 1"), ({"channels": 3, "mean": [0.1, 0.2]}, "1 or 3 values"),
     ({"orientations": 2}, "orientations must be 1, 4 or 8")],
)  # fmt: skip
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        build_datamodule("digits", **options)
