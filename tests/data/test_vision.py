"""The torchvision-backed data modules, on tiny files written in each dataset's real format."""

import hashlib
import logging
import os
import pickle
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets
from torchvision.transforms import v2

from tests.helpers import write_image_folder

from zoo.data import build_datamodule
from zoo.errors import ConfigError, DataError


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (LeCun's MNIST format): magic 0x0000 08 <ndim>, big-endian dims, ubyte data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, n_train: int = 30, n_test: int = 10) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_reads_idx_files(tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    dm = build_datamodule(name, root=str(tmp_path), batch_size=4, num_workers=0)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (27, 3, 10)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.float32
    test_images, test_labels = next(iter(dm.test_dataloader()))
    assert test_labels.tolist() == [0, 1, 2, 3]
    # Normalisation with the dataset's published mean/std: a 0 pixel maps to -mean/std.
    assert test_images.min().item() == pytest.approx(-dm.mean[0] / dm.std[0], abs=1e-5)


def write_cifar(root: Path, cls, monkeypatch, n_per_file: int = 6) -> None:
    """CIFAR python batches: pickled dicts of uint8 rows (3x32x32, channel-major) and labels."""
    base = root / cls.base_folder
    base.mkdir(parents=True)
    fine = cls is datasets.CIFAR100
    label_key = "fine_labels" if fine else "labels"
    n_classes = 100 if fine else 10
    rng = np.random.default_rng(0)

    def dump(name: str, obj) -> list:
        (base / name).write_bytes(pickle.dumps(obj))
        return [name, hashlib.md5((base / name).read_bytes()).hexdigest()]

    def batch(n: int) -> dict:
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: list(range(n))}

    # torchvision checks each file against its published MD5: point it at ours.
    train_list = [dump(name, batch(n_per_file)) for name, _ in cls.train_list]
    test_list = [dump(name, batch(n_per_file)) for name, _ in cls.test_list]
    meta_name = cls.meta["filename"]
    meta_md5 = dump(meta_name, {cls.meta["key"]: [f"class{i}" for i in range(n_classes)]})[1]
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})


@pytest.mark.parametrize("name, cls", [("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)])
def test_cifar_reads_python_batches(tmp_path, monkeypatch, name, cls):
    write_cifar(tmp_path, cls, monkeypatch)
    n_train = 6 * len(cls.train_list)
    dm = build_datamodule(name, root=str(tmp_path), batch_size=4, num_workers=0, image_size=40)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == n_train and len(dm.test_set) == 6
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 40, 40)
    assert dm.num_classes == (100 if name == "cifar100" else 10) and dm.in_channels == 3


def test_cifar_with_a_corrupted_file_names_the_path(tmp_path, monkeypatch):
    write_cifar(tmp_path, datasets.CIFAR10, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    dm = build_datamodule("cifar10", root=str(tmp_path), num_workers=0)
    with pytest.raises(DataError, match="cifar-10-batches-py.*data.download=true"):
        dm.setup("fit")


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_missing_dataset_names_the_path_and_the_download_option(tmp_path, name, folder):
    dm = build_datamodule(name, root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    assert str(tmp_path / "nowhere" / folder) in str(info.value)
    assert "data.download=true" in str(info.value)


def test_image_folder_reads_class_folders_and_splits_off_validation(tmp_path):
    write_image_folder(tmp_path)
    dm = build_datamodule("imagefolder", root=str(tmp_path), batch_size=3, num_workers=0, image_size=16, val_fraction=0.25)
    assert dm.num_classes == 2 and dm.classes == ["cat", "dog"]
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 2, 8)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (3, 3, 16, 16)
    test_images, test_labels = next(iter(dm.test_dataloader()))
    assert test_images.shape == (3, 3, 16, 16) and test_labels.tolist() == [0, 0, 0]


def test_image_folder_grayscale_and_explicit_val(tmp_path):
    write_image_folder(tmp_path, splits=("train", "val", "test"))
    dm = build_datamodule(
        "imagefolder", root=str(tmp_path), num_workers=0, image_size=16, grayscale=True, mean=[0.5], std=[0.5]
    )
    dm.setup("fit")
    assert dm.in_channels == 1 and len(dm.val_set) == 8
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 1, 16, 16)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "train")):
        build_datamodule("imagefolder", root=str(tmp_path)).num_classes
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        build_datamodule("imagefolder", root=str(tmp_path)).num_classes
    write_image_folder(tmp_path / "other", splits=("train",), classes=("a", "b"))
    (tmp_path / "other" / "test" / "c").mkdir(parents=True)
    dm = build_datamodule("imagefolder", root=str(tmp_path / "other"), num_workers=0)
    with pytest.raises(DataError, match="test"):
        dm.setup("fit")


def test_image_folder_refuses_a_val_fraction_that_leaves_a_split_empty(tmp_path):
    write_image_folder(tmp_path)  # 8 training images, no val/
    for fraction, message in ((0, "leaves the val split empty"), (0.01, "leaves the val split empty"),
                              (1.0, "leaves the train split empty")):  # fmt: skip
        dm = build_datamodule("imagefolder", root=str(tmp_path), num_workers=0, image_size=16, val_fraction=fraction)
        with pytest.raises(ConfigError) as err:
            dm.setup("fit")
        expected = f"data.val_fraction={fraction} {message}: the 8 training images would split into train "
        assert expected in str(err.value)
    with pytest.raises(ConfigError, match=r"data.val_fraction must be a fraction in \(0, 1\), got -0.5"):
        build_datamodule("imagefolder", root=str(tmp_path), num_workers=0, val_fraction=-0.5).setup("fit")
    write_mnist(tmp_path / "mnist", "MNIST")
    with pytest.raises(ConfigError, match="data.val_fraction=0 leaves the val split empty: the 30 training images "
                                          "would split into train 30, val 0"):  # fmt: skip
        build_datamodule("mnist", root=str(tmp_path / "mnist"), val_fraction=0).setup("fit")


def test_image_folder_link_loops_are_skipped_with_one_warning(tmp_path, caplog):
    write_image_folder(tmp_path, splits=("train",), per_class=4)
    train = tmp_path / "train"
    (tmp_path / "outside").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "outside" / "far.png")
    os.symlink(tmp_path / "outside" / "far.png", train / "cat" / "far.png")  # a file outside: read
    os.symlink(".", train / "cat" / "again")  # one loop: each image 25 times
    os.symlink("..", train / "dog" / "up")  # two loops: exponential
    os.symlink(".", train / "dog" / "same")
    dm = build_datamodule("imagefolder", root=str(tmp_path), num_workers=0, image_size=16, val_fraction=0.25)
    # In a thread, so that a walk that follows the loops (torchvision's: 25 copies of cat/,
    # and 2 ** 40 paths through dog/) fails the test instead of hanging it.
    walk = threading.Thread(target=dm.setup, args=("fit",), daemon=True)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        walk.start()
        walk.join(timeout=1.0)
    assert not walk.is_alive(), "the folder walk did not end within a second"
    folder = dm.train_set.dataset
    assert len(folder) == 9 and len(dm.train_set) + len(dm.val_set) == 9
    assert sorted(Path(p).relative_to(train).as_posix() for p, _ in folder.samples) == [
        "cat/0.png", "cat/1.png", "cat/2.png", "cat/3.png", "cat/far.png",
        "dog/0.png", "dog/1.png", "dog/2.png", "dog/3.png",
    ]  # fmt: skip
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING and "symbolic link" in r.getMessage()]
    for link, target in (("cat/again", "cat"), ("dog/same", "dog"), ("dog/up", "")):
        assert f"{train / link} -> {(train / target) if target else train}" in warning.getMessage()
    assert "skipped 3 symbolic link loop(s)" in warning.getMessage()


def write_uniform(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_16_bit_and_palette_images_read_the_same_for_training_and_prediction(tmp_path):
    """The loader of training and the transform of zoo-predict convert by one function:
    a 16-bit pixel 32896 is 128 (not clipped to 255), a palette entry its colour."""
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30])
    images = {
        "deep": (Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)), (128, 128, 128)),
        "palette": (palette, (10, 20, 30)),
    }
    for split in ("train", "val"):
        for name, (image, _) in images.items():
            for i in range(2):
                write_uniform(tmp_path / split / name / f"{i}.png", image)
    dm = build_datamodule("imagefolder", root=str(tmp_path), num_workers=0, image_size=8, resize_size=8, augment=False,
                          mean=[0.0] * 3, std=[1.0] * 3, batch_size=4)  # fmt: skip
    dm.setup("fit")
    expected = torch.tensor([rgb for _, rgb in images.values()], dtype=torch.float32) / 255  # (classes, 3)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        x, y = next(iter(loader))
        torch.testing.assert_close(x, expected[y][:, :, None, None].expand(-1, -1, 8, 8), rtol=0, atol=1e-6)
    predict = dm.inputs().transform()
    for name, (image, _) in images.items():
        from_file = predict(Image.open(tmp_path / "val" / name / "0.png"))
        torch.testing.assert_close(from_file, expected[dm.classes.index(name)][:, None, None].expand(-1, 8, 8),
                                   rtol=0, atol=1e-6)  # fmt: skip


def test_an_oversized_image_in_a_folder_names_the_file(tmp_path, monkeypatch):
    write_image_folder(tmp_path, splits=("train", "val"), per_class=1)
    big = tmp_path / "val" / "dog" / "big.png"
    Image.new("RGB", (30, 20)).save(big)  # over a limit of 500 pixels (the images are 24 x 20 = 480)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    dm = build_datamodule("imagefolder", root=str(tmp_path), num_workers=0, image_size=16, batch_size=8)
    dm.setup("fit")
    next(iter(dm.train_dataloader()))  # the others are read
    with pytest.raises(DataError, match=f"image {big} is 30 x 20 = 600 pixels, over the limit of 500"):
        next(iter(dm.val_dataloader()))


def test_the_image_folder_resizes_with_its_interpolation_as_the_weights_transform_does(tmp_path):
    """``data.interpolation=bicubic`` (filled from bicubic weights) feeds a folder's images as
    the weights' own transform does, up to the uint8 rounding of torchvision's presets; the
    default, bilinear, does not."""
    from zoo.models.weights import Preprocessing

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (260, 300, 3), dtype=np.uint8))
    reference = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 256, "bicubic").transforms()(image)
    gaps = {}
    for mode in ("bicubic", "bilinear", None):
        dm = build_datamodule(name="imagefolder", root=str(tmp_path), interpolation=mode)
        gaps[mode] = (v2.Compose(dm.eval_steps())(image) - reference).abs().mean().item()
    assert gaps["bicubic"] < 0.01 and gaps["bilinear"] > 0.1 and gaps[None] == gaps["bilinear"]
    with pytest.raises(DataError, match="data.interpolation must be null or one of nearest, bilinear, bicubic; got 'area'"):
        build_datamodule(name="imagefolder", root=str(tmp_path), interpolation="area")
