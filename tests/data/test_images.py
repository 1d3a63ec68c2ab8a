"""Reading image files (src/zoo/data/images.py): modes, size limit, folder walks."""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision import datasets

from zoo.data.images import read_image, to_mode, walk_files
from zoo.errors import DataError


def pixels(image: Image.Image) -> list:
    return np.asarray(image).tolist()


# -- modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_values_are_scaled_not_clipped(mode):
    values = np.array([[0, 128, 257, 32896, 65535]], dtype=np.uint16)  # v / 257 rounded: 0, 0, 1, 128, 255
    image = Image.fromarray(values)
    image = image.convert("I") if mode == "I" else Image.frombytes(mode, image.size, values.astype(
        ">u2" if mode == "I;16B" else "<u2").tobytes())  # fmt: skip
    assert image.mode == mode
    assert pixels(to_mode(image, channels=1)) == [[0, 0, 1, 128, 255]]
    assert pixels(to_mode(image, channels=3)) == [[[v] * 3 for v in (0, 0, 1, 128, 255)]]


def test_32_bit_integers_outside_16_bits_are_clipped():
    image = Image.fromarray(np.array([[-5, 70000, 514]], dtype=np.int32))
    assert image.mode == "I" and pixels(to_mode(image, channels=1)) == [[0, 255, 2]]


def test_float_pixels_are_read_as_0_to_1():
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]], dtype=np.float32))
    assert image.mode == "F"
    assert pixels(to_mode(image, channels=1)) == [[0, 128, 255, 255, 0, 0]]  # round(255 * 0.5) = 128


def test_a_16_bit_png_file_reads_scaled(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((2, 3), 32896, dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"  # what Pillow makes of a 16-bit grayscale PNG
    assert pixels(read_image(path, channels=1)) == [[128] * 3] * 2
    assert read_image(path).mode == "I;16"  # without channels: as stored


def test_palette_images_with_and_without_transparency():
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((1, 0), 1)
    assert pixels(to_mode(palette, channels=3)) == [[[255, 0, 0], [0, 0, 255]]]
    assert pixels(to_mode(palette, channels=1)) == [[76, 29]]  # ITU-R 601-2 luma of red, blue
    palette.info["transparency"] = 0  # red is transparent: white
    assert pixels(to_mode(palette, channels=3)) == [[[255, 255, 255], [0, 0, 255]]]


@pytest.mark.parametrize("mode, pixel, gray, rgb", [
    ("LA", (100, 0), 255, (255, 255, 255)),  # fully transparent: white
    ("LA", (100, 255), 100, (100, 100, 100)),  # opaque: the gray
    ("LA", (0, 128), 127, (127, 127, 127)),  # half transparent black on white
    ("RGBA", (255, 0, 0, 0), 255, (255, 255, 255)),
    ("CMYK", (0, 0, 0, 0), 255, (255, 255, 255)),
    ("CMYK", (255, 0, 0, 0), 179, (0, 255, 255)),  # cyan; gray: 0.587 G + 0.114 B
    ("CMYK", (128, 0, 0, 128), 108, (63, 127, 127)),  # (255 - C)(255 - K) / 255; luma of that
    ("1", 1, 255, (255, 255, 255)),
])  # fmt: skip
def test_other_modes_convert_to_gray_and_rgb(mode, pixel, gray, rgb):
    image = Image.new(mode, (1, 1), pixel)
    assert pixels(to_mode(image, channels=1)) == [[gray]]
    assert pixels(to_mode(image, channels=3)) == [[list(rgb)]]


# -- size limit ----------------------------------------------------------------------


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A small valid 1x1 PNG whose header is rewritten to declare ``width`` x ``height``."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])  # type, size, depth...
    data[16:24] = ihdr[4:12]
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_is_refused_naming_the_file_and_its_size(tmp_path):
    bomb = png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 100
    with pytest.raises(DataError) as err:
        read_image(bomb, channels=3)
    assert str(bomb) in str(err.value)
    assert "10,000,000,000 pixels, over the limit of 89,478,485 (PIL.Image.MAX_IMAGE_PIXELS" in str(err.value)


def test_an_image_just_over_the_limit_is_refused_and_one_at_it_is_read(tmp_path, monkeypatch, recwarn):
    """Pillow only warns between 1x and 2x its limit: zoo refuses from 1x."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    over = tmp_path / "over.png"
    Image.new("RGB", (11, 10)).save(over)  # 110 pixels: Pillow's warning zone
    with pytest.raises(DataError, match=f"image {over} is 11 x 10 = 110 pixels, over the limit of 100"):
        read_image(over)
    at = tmp_path / "at.png"
    Image.new("RGB", (10, 10)).save(at)
    assert read_image(at, channels=3).size == (10, 10)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_broken_file_names_itself(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not an image")
    with pytest.raises(DataError, match=f"cannot read image {broken}: "):
        read_image(broken)


# -- folder walks --------------------------------------------------------------------


def write_files(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def test_a_tree_without_links_gives_torchvisions_list(tmp_path):
    write_files(tmp_path, ["b.png", "a.png", "sub/z.png", "sub/deeper/y.png", "sub a/x.png", "notes.txt"])
    keep = lambda p: p.endswith(".png")  # noqa: E731
    files, loops = walk_files(tmp_path, keep)
    listed = datasets.folder.make_dataset(str(tmp_path.parent), {tmp_path.name: 0}, is_valid_file=keep)
    expected = [path for path, _ in listed]
    assert files == expected and len(files) == 5 and loops == []


def test_link_loops_are_skipped_each_file_once_in_bounded_time(tmp_path):
    cat = tmp_path / "train" / "cat"
    write_files(cat, ["a.png", "b.png", "sub/c.png"])
    os.symlink("..", cat / "sub" / "back")  # sub/back -> cat: one loop (25x the images, followed)
    os.symlink(".", cat / "sub" / "self")  # and a second into the same folders: exponential
    os.symlink("../..", cat / "up")  # -> train/..: a folder above the walked one
    started = time.perf_counter()
    files, loops = walk_files(cat)
    assert time.perf_counter() - started < 0.5
    assert sorted(Path(f).relative_to(cat).as_posix() for f in files) == ["a.png", "b.png", "sub/c.png"]
    assert sorted(loops) == sorted([f"{cat / 'sub' / 'back'} -> {cat}", f"{cat / 'sub' / 'self'} -> {cat / 'sub'}",
                                    f"{cat / 'up'} -> {tmp_path}"])  # fmt: skip


def test_links_out_of_the_tree_are_followed_and_two_paths_to_a_file_count_once(tmp_path):
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    write_files(tree, ["a.png"])
    write_files(outside, ["far.png", "folder/f1.png", "folder/f2.png"])
    os.symlink(outside / "far.png", tree / "far-link.png")  # a file outside
    os.symlink(outside / "folder", tree / "folder-link")  # a folder outside
    os.symlink(tree / "a.png", tree / "a-again.png")  # a second name for a.png
    os.symlink(outside / "folder", tree / "z-second-folder-link")  # a second path to the folder
    os.symlink(tmp_path / "missing.png", tree / "broken.png")  # listed: reading it names it
    files, loops = walk_files(tree)
    names = sorted(Path(f).relative_to(tree).as_posix() for f in files)
    assert names == ["a-again.png", "broken.png", "far-link.png", "folder-link/f1.png", "folder-link/f2.png"]
    assert loops == []


def test_a_folder_that_is_itself_a_link_to_a_folder_above_is_a_loop(tmp_path):
    write_files(tmp_path / "train" / "cat", ["a.png"])
    os.symlink(".", tmp_path / "train" / "everything")  # a "class" that is the train folder
    files, loops = walk_files(tmp_path / "train" / "everything")
    assert files == [] and loops == [f"{tmp_path / 'train' / 'everything'} -> {tmp_path / 'train'}"]
