import pytest
import torch
import torchvision.transforms.v2.functional as TF

from zoo.data import build_datamodule
from zoo.data.digits import random_rotate_scale, random_shift, rotate_scale
from zoo.errors import ConfigError


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


def test_rotate_scale_equals_torchvision_affine_image_by_image():
    x = torch.zeros(3, 1, 12, 12)
    x[..., 3:9, 3:9] = torch.rand(3, 1, 6, 6)  # a zero border: torchvision fills with 0, we repeat the edge
    degrees, scale = torch.tensor([30.0, -20.0, 90.0]), torch.tensor([1.2, 0.85, 1.0])
    out = rotate_scale(x, degrees, scale)
    for image, d, s, got in zip(x, degrees.tolist(), scale.tolist(), out):
        # torchvision's affine turns clockwise for positive angles, rotate() counter-clockwise
        expected = TF.affine(image, angle=-d, translate=[0, 0], scale=s, shear=[0.0, 0.0],
                             interpolation=TF.InterpolationMode.BILINEAR)  # fmt: skip
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2], TF.rotate(x[2], 90.0))


def test_random_rotate_scale_draws_one_transform_per_image_and_is_off_by_default():
    x = torch.rand(1, 1, 8, 8).expand(16, -1, -1, -1)
    out = random_rotate_scale(x, max_rotation=20, max_scale=0.15)
    assert len({round(v, 4) for v in out.flatten(1).sum(1).tolist()}) == 16  # 16 different results
    assert random_rotate_scale(x, 0, 0) is x
    assert build_datamodule("digits").max_rotation == 0.0
    with pytest.raises(ConfigError, match="max_rotation must be >= 0 degrees and data.max_scale in"):
        build_datamodule("digits", max_scale=1.5)


def test_training_batches_are_rotated_and_scaled_only_while_training():
    from types import SimpleNamespace

    dm = build_datamodule("digits", image_size=8, max_shift=0, max_rotation=30, max_scale=0.2)
    dm.setup()
    batch = dm.train_set.batch(torch.arange(8))
    dm.trainer = SimpleNamespace(training=True)
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert images.shape == batch[0].shape and torch.equal(labels, batch[1])
    assert not torch.allclose(images, batch[0])
    dm.trainer = SimpleNamespace(training=False)  # validation, test, prediction: untouched
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], batch[0])


@pytest.mark.parametrize("options, message", [
    ({"test_fraction": 0}, "data.test_fraction=0 leaves the test split empty: the 1,797 images would split into "
                           "train 1,617, val 180, test 0"),
    ({"val_fraction": 0}, "data.val_fraction=0 leaves the val split empty: the 1,797 images would split into "
                          "train 1,437, val 0, test 360"),
    ({"val_fraction": 0.003}, "data.val_fraction=0.003 leaves the val split with 6, fewer than 10 (one per class"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be fractions in (0, 1) with a sum below 1, got 0.5 and 0.5"),
    ({"test_fraction": -0.1}, "must be fractions in (0, 1) with a sum below 1, got 0.1 and -0.1"),
])  # fmt: skip
def test_fractions_that_leave_a_split_too_small_are_refused_before_training(options, message):
    dm = build_datamodule("digits", **options)
    with pytest.raises(ConfigError) as err:
        dm.setup("fit")
    assert message in str(err.value)


def test_the_smallest_stratified_splits_are_accepted():
    dm = build_datamodule("digits", val_fraction=0.0055, test_fraction=0.0055)  # rounded up: 10 images each
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1777, 10, 10)
    assert sorted(dm.val_set.tensors[1].tolist()) == list(range(10))  # one of each digit
