"""The inputs record of a checkpoint: written by training, read back without the data modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from zoo.checkpoint import CheckpointError
from zoo.data.inputs import ImageInputs, TextInputs, eval_steps, inputs_from_state
from zoo.data.vocab import Vocab

IMAGE = ImageInputs(3, 24, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), ("owl", "cat", "dog"), 30, "bicubic")


def test_each_record_reads_back_as_it_was_written():
    assert inputs_from_state(IMAGE.state(), "x.ckpt") == IMAGE
    text = TextInputs(Vocab.build(["abc", "bd"]), Vocab.build(["one two", "two"], "word"), 7)
    assert inputs_from_state(text.state(), "x.ckpt") == text
    old = {**text.state(), "longest_source": None}  # a run resumed from a checkpoint older than the length record
    assert inputs_from_state(old, "x.ckpt").longest_source is None


def test_the_transform_converts_the_mode_resizes_with_the_interpolation_crops_and_normalises():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8), mode="L")
    expected = v2.Compose([
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize(30, InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(24), v2.Normalize(IMAGE.mean, IMAGE.std),
    ])(image.convert("RGB"))  # fmt: skip
    got = IMAGE.transform()(image)
    assert got.shape == (3, 24, 24)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    bilinear = ImageInputs(**{**vars(IMAGE), "interpolation": "bilinear"}).transform()(image)
    assert (bilinear - got).abs().max() > 1e-3  # the interpolation is used, not a default


def test_no_resize_size_resizes_to_the_crop():
    steps = eval_steps(16, (0.5,), (0.5,))
    assert [type(s).__name__ for s in steps] == ["ToImage", "ToDtype", "Resize", "CenterCrop", "Normalize"]
    assert steps[2].size == [16] and steps[2].interpolation == InterpolationMode.BILINEAR and steps[3].size == (16, 16)


@pytest.mark.parametrize(("edit", "detail"), [
    ({"kind": "audio"}, "its zoo_inputs record is not one of image, text"),
    ({"in_channels": 0}, "damaged (in_channels is 0, not a positive whole number)"),
    ({"image_size": True}, "damaged (image_size is True, not a positive whole number)"),
    ({"resize_size": 2.5}, "damaged (resize_size is 2.5, not a positive whole number)"),
    ({"mean": [0.1, 0.2]}, "damaged (mean and std hold 2 and 3 values for 3 channels)"),
    ({"class_names": ["owl", 3]}, "damaged (class_names is not a list of names)"),
    ({"class_names": []}, "damaged (class_names is not a list of names)"),
    ({"interpolation": "area"}, "damaged (interpolation is 'area', not one of nearest, bilinear, bicubic)"),
    ({"std": None}, "damaged ('NoneType' object is not iterable)"),
])  # fmt: skip
def test_a_damaged_image_record_is_one_line_naming_the_file(tmp_path, edit, detail):
    with pytest.raises(CheckpointError) as err:
        inputs_from_state({**IMAGE.state(), **edit}, tmp_path / "run.ckpt")
    assert str(err.value).startswith(f"{(tmp_path / 'run.ckpt').resolve()}: its zoo_inputs record is ")
    assert str(err.value).endswith(detail)


@pytest.mark.parametrize(("state", "detail"), [
    ("not a record", "is not one of image, text"),
    ({"kind": "text", "tgt_vocab": {"level": "char", "tokens": []}}, "damaged (src_vocab is missing)"),
    ({"kind": "image"}, "damaged (in_channels is missing)"),
    ({"kind": "text", "src_vocab": {"level": "byte", "tokens": []}, "tgt_vocab": {"level": "char", "tokens": []}},
     "damaged (vocabulary level must be one of char, word, got 'byte')"),
    ({"kind": "text", "src_vocab": {"level": "char", "tokens": ["a", "a"]}, "tgt_vocab": {"level": "char", "tokens": []}},
     "damaged (a vocabulary cannot hold the same token twice)"),
    ({**TextInputs(Vocab.build(["ab"]), Vocab.build(["ab"])).state(), "longest_source": -3},
     "damaged (longest_source is -3, not a positive whole number)"),
])  # fmt: skip
def test_a_missing_or_damaged_record_of_either_kind_is_one_line(state, detail):
    with pytest.raises(CheckpointError, match=r"run\.ckpt: its zoo_inputs record ") as err:
        inputs_from_state(state, "run.ckpt")
    assert str(err.value).endswith(detail)


def test_the_smallest_records_and_the_keys_older_records_lack_read_back():
    """Boundaries: one channel, a one-pixel crop, a longest source of one token; a record
    without resize_size and interpolation resizes to the crop, bilinearly."""
    state = ImageInputs(1, 1, (0.5,), (0.25,), ("a",)).state()
    del state["resize_size"], state["interpolation"]
    assert inputs_from_state(state, "x.ckpt") == ImageInputs(1, 1, (0.5,), (0.25,), ("a",), None, "bilinear")
    text = TextInputs(Vocab.build(["ab"]), Vocab.build(["ab"]), 1)
    assert inputs_from_state(text.state(), "x.ckpt").longest_source == 1
    for bad in ("7", 2.5, 0):
        with pytest.raises(CheckpointError, match=f"longest_source is {bad!r}, not a positive whole number"):
            inputs_from_state({**text.state(), "longest_source": bad}, "x.ckpt")


def test_a_grayscale_record_converts_colour_images_to_one_channel():
    colour = Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8), mode="RGB")
    gray = ImageInputs(1, 8, (0.5,), (0.5,), ("a", "b"))
    got = gray.transform()(colour)
    assert got.shape == (1, 8, 8)
    torch.testing.assert_close(got, v2.Compose(gray.eval_steps())(colour.convert("L")), rtol=0, atol=0)
