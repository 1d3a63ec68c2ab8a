"""The torchvision-backed data modules, on tiny files written in each dataset's real format."""

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from helpers import write_image_folder

from zoo.data import build_datamodule
from zoo.errors import DataError


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
