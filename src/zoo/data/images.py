"""Image files, read one way wherever zoo reads them: training and evaluation on an image
folder (``data=imagefolder``, ``zoo-eval``) and ``zoo-predict``.

- **Size.** An image whose header declares more pixels than Pillow's
  ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default: about 9,459 x 9,459) is refused,
  before it is decoded, as a :class:`~zoo.errors.DataError` naming the file and its size:
  a few kilobytes of PNG can declare an image that would fill the memory (a
  "decompression bomb"). Pillow itself only warns between one and two times its limit,
  and raises an error that names no file above. Downscale such an image first (or raise
  ``PIL.Image.MAX_IMAGE_PIXELS`` in your own script).
- **Broken files.** A file Pillow cannot decode is a ``DataError``: ``cannot read image
  <path>: <reason>``.
- **Modes.** :func:`to_mode` converts every image to grayscale (``L``, 1 channel) or
  ``RGB`` (3):

  - 16-bit grayscale (``I;16``, ``I;16B``, ...) and 32-bit integer (``I``) pixels are
    read as 16-bit values: ``0..65535`` scaled to ``0..255`` as ``round(v / 257)``
    (``I`` values outside ``0..65535`` clipped). Pillow's own conversion clips at 255,
    which turns almost every 16-bit image white.
  - Float pixels (``F``) are read as ``[0, 1]`` (torchvision's convention for float
    images) and scaled to ``0..255`` as ``round(255 v)``, clipped.
  - Transparency (``RGBA``, ``LA``, ``PA``, a palette or grayscale/RGB image with a
    transparent colour) is composited on white.
  - ``CMYK``, palette (``P``), bilevel (``1``), ``YCbCr``: Pillow's conversion (CMYK:
    ``R = (255 - C)(255 - K) / 255``, and so on).

- **Folders.** :func:`walk_files` lists every file under a folder once, following
  symbolic links to files and folders, inside or outside the tree, but not a link back to
  a folder that contains it (a loop, which would list the same images again and again,
  and with two such links grow exponentially); the caller warns about the loops skipped.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.errors import DataError

# Modes whose pixels are not 8-bit: (lowest, highest) value read as black and white.
_WIDE_MODES = {"I": (0, 65535), "F": (0.0, 1.0)}


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image as ``L``, scaled (not clipped)."""
    low, high = (0, 65535) if image.mode.startswith("I;16") else _WIDE_MODES[image.mode]
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=low)
    scaled = (np.clip(values, low, high) - low) * (255 / (high - low))
    return Image.fromarray(np.rint(scaled).astype(np.uint8))  # 2-D uint8: mode L


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """``image`` as grayscale (``channels`` 1) or RGB (3), by the rules of this module:
    16-bit and float pixels scaled to 8 bits, transparent pixels composited on white."""
    if image.mode in _WIDE_MODES or image.mode.startswith("I;16"):
        image = _eight_bit(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("L" if channels == 1 else "RGB")


def _refuse_size(path: str | Path, pixels: int, size: str = "") -> DataError:
    """``image <path> is [W x H = ]N pixels, over the limit of M (...)``."""
    return DataError(
        f"image {path} is {size + ' = ' if size else ''}{pixels:,} pixels, over the limit of "
        f"{Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS; refused as a possible decompression bomb): "
        f"downscale it first"
    )


def read_image(path: str | Path, channels: int | None = None) -> Image.Image:
    """The image at ``path``, fully decoded: as stored, or with ``channels`` (1 or 3)
    converted by :func:`to_mode`.

    Raises:
        DataError: the file cannot be read, or declares more pixels than
            ``PIL.Image.MAX_IMAGE_PIXELS`` (the message names the file and its size).
    """
    try:
        with open(path, "rb") as file, warnings.catch_warnings():
            # Pillow warns between 1x and 2x its limit; such a file is refused below, by name.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
            (width, height), limit = image.size, Image.MAX_IMAGE_PIXELS
            if limit is not None and width * height > limit:
                raise _refuse_size(path, width * height, f"{width} x {height}")
            image.load()
            return to_mode(image, channels) if channels else image.copy()
    except Image.DecompressionBombError as err:  # over 2x the limit: Pillow refuses in Image.open
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise _refuse_size(path, int(found[1])) if found else DataError(f"image {path}: {err}") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for broken files
        raise DataError(f"cannot read image {path}: {err}") from None


def _with_parents(path: str) -> frozenset:
    """(device, inode) of the folder ``path`` (links resolved) and of every folder above it."""
    keys = set()
    for folder in (Path(os.path.realpath(path)), *Path(os.path.realpath(path)).parents):
        try:
            stat = folder.stat()
        except OSError:
            continue
        keys.add((stat.st_dev, stat.st_ino))
    return frozenset(keys)


def walk_files(top: str | Path, keep: Callable[[str], bool] | None = None) -> tuple[list[str], list[str]]:
    """Every file under ``top`` that ``keep`` accepts, once, and the symbolic-link loops skipped.

    Symbolic links are followed, to files and to folders, inside the tree or outside it,
    except a link to a folder that contains it (one of the folders above the link, as
    walked or as stored on disk), which is a loop: it is skipped and listed as
    ``"<link> -> <target>"``. A folder reached by two paths is read once (it is known by
    device and inode) and a file reached by two paths listed once (known by its path with
    every link resolved), under the path the walk meets first; a broken link is listed as
    it is (reading it names it). So the walk takes time in proportion to the files on
    disk, whatever the links, and makes no system call for a plain file.

    Returns:
        The paths, sorted as torchvision's ``ImageFolder`` sorts them (by folder, then by
        name), so a tree without links gives torchvision's list; and the loops.
    """
    top = os.fspath(top)
    # The folders above top: a link to one of them (top itself included) leads back to top.
    above = _with_parents(os.path.dirname(os.path.abspath(top)))
    found: list[tuple[str, list[str]]] = []
    loops: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    stack: list[tuple[str, frozenset]] = []

    def enter(path: str, chain: frozenset, linked: bool) -> None:
        try:
            stat = os.stat(path)
        except OSError:
            return
        key = (stat.st_dev, stat.st_ino)
        if key in chain:
            loops.append(f"{path} -> {os.path.realpath(path)}")
        elif key not in seen_dirs:
            seen_dirs.add(key)
            # Through a link, the folders above the target on disk contain it too.
            stack.append((path, chain | {key} | (_with_parents(os.path.realpath(path)) if linked else set())))

    enter(top, above, linked=os.path.islink(top))
    while stack:
        folder, chain = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:  # unreadable: skipped, as os.walk does
            continue
        names, subfolders, real_folder = [], [], os.path.realpath(folder)
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(entry)
                continue
            if keep is not None and not keep(entry.path):
                continue
            # The file's path with every link resolved, without a system call per plain file.
            real = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_folder, entry.name)
            if real not in seen_files:
                seen_files.add(real)
                names.append(entry.name)
        found.append((folder, names))
        stack_size = len(stack)
        for entry in subfolders:
            enter(entry.path, chain, entry.is_symlink())
        stack[stack_size:] = reversed(stack[stack_size:])  # sorted order, depth first
    return [os.path.join(folder, name) for folder, names in sorted(found) for name in sorted(names)], loops
