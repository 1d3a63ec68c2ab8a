"""zoo-predict on real image files with the checkpoint's own preprocessing and class names."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

from helpers import QUIET, compose_config, run_main, write_image_folder

from zoo.cli.train import train
from zoo.data.base import to_mode
from zoo.inference import load_trained


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("digits_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored: later tests compare runs across processes bit for bit
    try:
        train(compose_config("train", run_dir, ["trainer.max_epochs=3", "~logger", *QUIET]))
    finally:
        torch.set_num_threads(threads)
    return run_dir / "checkpoints" / "best.ckpt"


def _read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _digit_png_pixels(index: int) -> np.ndarray:
    """Digit ``index`` of scikit-learn's set as 8-bit gray pixels (light ink on dark, as trained)."""
    return np.round(load_digits().images[index] * 255 / 16).astype(np.uint8)


def test_digit_images_in_every_mode_match_the_network_on_the_dataset_pipeline(digits_ckpt, tmp_path, one_thread):
    trained = load_trained(digits_ckpt)
    indices = [0, 1, 2, 3, 5, 8, 13, 21]
    folder = tmp_path / "images"
    folder.mkdir()
    for i in indices:
        gray = Image.fromarray(_digit_png_pixels(i), mode="L")
        gray.save(folder / f"{i}_gray.png")
        gray.convert("RGB").save(folder / f"{i}_rgb.jpg", quality=100, subsampling=0)
        gray.convert("RGBA").save(folder / f"{i}_rgba.png")
        gray.convert("P").save(folder / f"{i}_palette.png")
    out = tmp_path / "predictions.csv"
    result = run_main("zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={folder}", "top_k=3", f"csv={out}")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4 * len(indices)
    rows = _read_csv(out)
    assert len(rows) == 3 * 4 * len(indices) and {r["rank"] for r in rows} == {"1", "2", "3"}
    top1 = {Path(r["path"]).name: (r["class_name"], float(r["probability"])) for r in rows if r["rank"] == "1"}

    # What the network gives on the same digits fed as the data module feeds them.
    dm = trained.datamodule
    images = torch.tensor(load_digits().images[indices], dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(dm.image_size, dm.image_size), mode="bilinear", align_corners=False)
    images = (images - dm.mean[0]) / dm.std[0]
    with torch.no_grad():
        probs = trained.net(images).softmax(dim=1)
    for row, i in enumerate(indices):
        expected_class = str(probs[row].argmax().item())
        for mode in ("gray.png", "rgb.jpg", "rgba.png", "palette.png"):
            name, p = top1[f"{i}_{mode}"]
            assert name == expected_class, (i, mode)
            assert p == pytest.approx(probs[row].max().item(), abs=0.02), (i, mode)  # 8-bit pixels


def test_any_size_and_transparency(digits_ckpt, tmp_path):
    big = Image.fromarray(_digit_png_pixels(4), mode="L").resize((120, 90), Image.Resampling.NEAREST)
    big.save(tmp_path / "big.png")
    result = run_main("zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={tmp_path / 'big.png'}", "top_k=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tmp_path / 'big.png'}: ") and result.stdout.count(" 0.") + result.stdout.count(" 1.") == 2

    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_mode(transparent, channels=1)).tolist() == [[255] * 4] * 4  # composited on white
    assert to_mode(Image.new("P", (2, 2)), channels=3).mode == "RGB"


def test_invert_turns_dark_on_light_drawings_into_the_training_look(digits_ckpt, tmp_path):
    pixels = _digit_png_pixels(7)
    Image.fromarray(pixels, mode="L").save(tmp_path / "light_on_dark.png")
    Image.fromarray(255 - pixels, mode="L").save(tmp_path / "dark_on_light.png")
    plain = run_main("zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={tmp_path / 'light_on_dark.png'}", "top_k=1")
    inverted = run_main(
        "zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={tmp_path / 'dark_on_light.png'}", "top_k=1", "invert=true"
    )
    assert plain.returncode == inverted.returncode == 0, plain.stderr + inverted.stderr
    assert plain.stdout.split(": ")[1] == inverted.stdout.split(": ")[1]


def test_unreadable_files_are_named_and_skipped_and_the_exit_code_says_so(digits_ckpt, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(_digit_png_pixels(0), mode="L").save(folder / "a.png")
    Image.fromarray(_digit_png_pixels(1), mode="L").save(folder / "c.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # truncated
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "p.csv"
    result = run_main("zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={folder}", "top_k=1", f"csv={out}")
    assert result.returncode == 1
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [str(folder / "a.png"), str(folder / "c.png")]
    assert str(folder / "b.png") in result.stderr and str(folder / "notes.txt") in result.stderr
    assert "2 of 4 files could not be read" in result.stderr
    assert [Path(r["path"]).name for r in _read_csv(out)] == ["a.png", "c.png"]


@pytest.mark.parametrize("case", ["missing input", "missing checkpoint", "no inputs"])
def test_bad_input_names_what_was_expected(digits_ckpt, tmp_path, case):
    ckpt, inputs, expected = {
        "missing input": (digits_ckpt, tmp_path / "nowhere.png", str(tmp_path / "nowhere.png")),
        "missing checkpoint": (tmp_path / "none.ckpt", tmp_path, str(tmp_path / "none.ckpt")),
        "no inputs": (digits_ckpt, None, "inputs="),
    }[case]
    result = run_main("zoo-predict", f"ckpt_path={ckpt}", *([f"inputs={inputs}"] if inputs else []))
    assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr


def test_image_folder_checkpoints_answer_with_the_folder_names(tmp_path, one_thread):
    write_image_folder(tmp_path / "pets", classes=("cat", "dog", "owl"), per_class=3)
    run_dir = tmp_path / "run"
    train(compose_config("train", run_dir, [
        "data=imagefolder", f"data.root={tmp_path / 'pets'}", "data.image_size=16", "data.num_workers=0",
        "data.batch_size=4", "model=mlp", "trainer.max_epochs=1", "sched=none", "~logger", *QUIET,
    ]))  # fmt: skip
    image = tmp_path / "pets" / "test" / "owl" / "0.png"
    result = run_main("zoo-predict", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"inputs={image}", "top_k=3")
    assert result.returncode == 0, result.stderr
    names = [part.split()[0] for part in result.stdout.split(": ", 1)[1].split(", ")]
    assert sorted(names) == ["cat", "dog", "owl"]
