import torch

from zoo.data import build_datamodule
from zoo.data.digits import random_shift


def test_digits_split_is_fixed_stratified_and_disjoint():
    dm = build_datamodule("digits")
    dm.setup()
    sizes = len(dm.train_set), len(dm.val_set), len(dm.test_set)
    assert sizes == (1257, 180, 360)
    test_labels = dm.test_set.tensors[1]
    assert torch.bincount(test_labels, minlength=10).min() >= 35  # every class ~36 times
    again = build_datamodule("digits", batch_size=7)
    again.setup()
    assert torch.equal(dm.test_set.tensors[0], again.test_set.tensors[0])
    train, test = dm.train_set.tensors[0], dm.test_set.tensors[0]
    assert not (train.flatten(1)[:, None, :] == test.flatten(1)[None, :, :]).all(-1).any()


def test_digits_images_are_resized_and_normalised_with_train_statistics():
    dm = build_datamodule("digits", image_size=28)
    dm.setup()
    x = dm.train_set.tensors[0]
    assert x.shape[1:] == (1, 28, 28)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-4
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 1, 28, 28) and labels.dtype == torch.long


def test_random_shift_moves_each_image_within_bounds():
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    shifted = random_shift(x, max_shift=2)
    positions = shifted[:, 0].flatten(1).argmax(1)
    rows, cols = positions // 9, positions % 9
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(set(positions.tolist())) > 5  # not all the same offset
    assert torch.equal(random_shift(x, 0), x)
