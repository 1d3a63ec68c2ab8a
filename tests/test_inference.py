"""zoo-predict on real image files with the checkpoint's own preprocessing and class names."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

from tests.helpers import QUIET, TINY_SEQ2SEQ, compose_config, run_main, write_image_folder

from zoo.cli.train import train
from zoo.data.images import to_mode
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


@pytest.fixture(scope="module")
def seq2seq_ckpt(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("seq2seq_run")
    train(compose_config("train", run_dir, TINY_SEQ2SEQ))
    return run_dir / "checkpoints" / "best.ckpt"


def _imported(importtime_report: str) -> set[str]:
    """The top-level packages a process imported, from the report ``python -X importtime`` writes."""
    rows = [line.rpartition("|")[2].strip() for line in importtime_report.splitlines() if line.startswith("import time:")]
    return {name.partition(".")[0] for name in rows[1:]}  # the first row is the report's header


@pytest.mark.parametrize("use", ["zoo.load", "zoo-predict", "zoo-translate", "zoo-export"])
def test_using_a_trained_model_imports_no_lightning(use, digits_ckpt, seq2seq_ckpt, tmp_path):
    """Each way of using a checkpoint, in a fresh interpreter: torch and torchvision, no Lightning."""
    Image.fromarray(_digit_png_pixels(0), mode="L").save(tmp_path / "a.png")
    scripts = Path(sys.executable).parent
    command = {
        "zoo.load": [sys.executable, "-c", f"import zoo; print(zoo.load({str(digits_ckpt)!r}).classes)"],
        "zoo-predict": [scripts / "zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={tmp_path / 'a.png'}"],
        "zoo-translate": [scripts / "zoo-translate", f"ckpt_path={seq2seq_ckpt}", "text=abc"],
        "zoo-export": [scripts / "zoo-export", f"ckpt_path={digits_ckpt}", "format=onnx", f"out={tmp_path / 'm.onnx'}"],
    }[use]
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = _imported(result.stderr)
    assert {"zoo", "torch", "torchvision"} <= imported  # the report was read
    assert not imported & {"lightning", "pytorch_lightning"}, sorted(imported)


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
    dm = trained.inputs
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


# -- hostile checkpoints and destinations -------------------------------------------------


def _error_line(result) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    return line


def test_class_names_with_terminal_escapes_are_printed_and_written_escaped(digits_ckpt, tmp_path):
    ckpt = torch.load(digits_ckpt, weights_only=True)
    ckpt["zoo_inputs"]["class_names"] = ["\x1b[2J\x1b[31mcat"] + [f"d\x9b{i}" for i in range(1, 10)]
    torch.save(ckpt, tmp_path / "escapes.ckpt")
    Image.fromarray(_digit_png_pixels(0), mode="L").save(tmp_path / "a.png")
    out = tmp_path / "p.csv"
    result = run_main("zoo-predict", f"ckpt_path={tmp_path / 'escapes.ckpt'}", f"inputs={tmp_path / 'a.png'}",
                      "top_k=10", f"csv={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\\x1b[2J\\x1b[31mcat" in result.stdout and "d\\x9b1" in result.stdout
    assert "\x1b" not in result.stdout + out.read_text() and "\x9b" not in result.stdout + out.read_text()
    assert {r["class_name"] for r in _read_csv(out)} == {"\\x1b[2J\\x1b[31mcat"} | {f"d\\x9b{i}" for i in range(1, 10)}


@pytest.mark.parametrize("case", ["a folder", "under a regular file"])
def test_a_csv_destination_that_cannot_be_written_is_one_line_before_any_work(digits_ckpt, tmp_path, case):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    Image.fromarray(_digit_png_pixels(0), mode="L").save(tmp_path / "a.png")
    csv_path, reason = {
        "a folder": (tmp_path / "folder", "it is a folder; give a file name"),
        "under a regular file": (tmp_path / "file" / "p.csv", f"{tmp_path / 'file'} is a file, not a folder"),
    }[case]
    result = run_main("zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={tmp_path / 'a.png'}", f"csv={csv_path}")
    assert _error_line(result) == f"Error: cannot write {csv_path}: {reason}"
    assert result.stdout == ""  # nothing was classified
    assert (tmp_path / "file").read_text() == "x" and not any((tmp_path / "folder").iterdir())


def test_a_csv_over_the_file_size_limit_leaves_the_old_file_whole_and_no_part(digits_ckpt, tmp_path):
    import resource
    import signal
    import subprocess
    import sys

    for i in range(8):
        Image.fromarray(_digit_png_pixels(i), mode="L").save(tmp_path / f"{i}.png")
    out = tmp_path / "p.csv"
    old = b"path,rank,class_index,class_name,probability\r\nold,1,0,0,1.0\r\n"
    out.write_bytes(old)
    limit = 2048  # the new table (8 images x 10 rows of ~150 bytes) is over it

    def limited() -> None:  # in the child: writes past `limit` bytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    script = str(Path(sys.executable).parent / "zoo-predict")
    result = subprocess.run(
        [script, f"ckpt_path={digits_ckpt}", f"inputs={tmp_path}", "top_k=10", f"csv={out}"],
        capture_output=True, text=True, preexec_fn=limited, timeout=300,
    )  # fmt: skip
    assert _error_line(result) == f"Error: cannot write {out}: File too large"
    assert result.stdout.count(".png: ") == 8  # the predictions were printed all the same
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(f"{i}.png" for i in range(8)), "p.csv"])


def test_hyperparameters_that_outgrow_the_weights_are_refused_before_the_network_is_built(
    digits_ckpt, tmp_path, monkeypatch
):
    from zoo import inference
    from zoo.models import get_model

    ckpt = torch.load(digits_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["model"]["num_classes"] = 100_000_000  # a 33.6 GB classifier, were it built
    edited = tmp_path / "edited.ckpt"
    torch.save(ckpt, edited)
    built_on = []

    def recording(name: str, **kwargs):
        built_on.append(torch.get_default_device().type)
        if built_on[-1] != "meta" and kwargs.get("num_classes") == 100_000_000:
            raise AssertionError("the network the file describes was built before its weights were checked")
        return get_model(name, **kwargs)

    monkeypatch.setattr(inference, "get_model", recording)
    result = run_main("zoo-predict", f"ckpt_path={edited}", f"inputs={tmp_path}")
    assert _error_line(result) == (
        f"Error: {edited.resolve()}: its weights do not fit the network its hyperparameters describe "
        f"(net.classifier.1.weight is (10, 84) in its weights, (100000000, 84) by its hyperparameters); "
        f"refusing to build it (a damaged or edited checkpoint?)"
    )
    assert built_on == ["meta"]

    built_on.clear()
    load_trained(digits_ckpt)  # a checkpoint that fits: checked on meta, then built for real
    assert built_on == ["meta", "cpu"]


def test_data_settings_the_network_cannot_take_are_refused_before_any_image_is_resized(digits_ckpt, tmp_path):
    ckpt = torch.load(digits_ckpt, weights_only=True)
    ckpt["zoo_inputs"]["image_size"] = 3000  # 36 MB per image, for a network that takes 32x32
    torch.save(ckpt, tmp_path / "edited.ckpt")
    Image.fromarray(_digit_png_pixels(0), mode="L").save(tmp_path / "a.png")
    result = run_main("zoo-predict", f"ckpt_path={tmp_path / 'edited.ckpt'}", f"inputs={tmp_path / 'a.png'}")
    line = _error_line(result)
    assert line.startswith(f"Error: {(tmp_path / 'edited.ckpt').resolve()}: its data settings do not fit its network: ")
    assert "LeNet5 expects 32x32 images" in line and "got 3000x3000" in line and result.stdout == ""


def test_image_files_are_each_file_given_then_each_folders_files_sorted_without_hidden_ones(tmp_path):
    from zoo.errors import DataError
    from zoo.inference import image_files

    for name in ("b/2.png", "b/1.png", "b/.hidden.png", "b/sub/0.png", "a/9.png", "z.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert image_files(tmp_path / "z.png") == [tmp_path / "z.png"]
    assert image_files([str(tmp_path / "b"), tmp_path / "z.png", tmp_path / "a"]) == [
        tmp_path / "b" / "1.png", tmp_path / "b" / "2.png", tmp_path / "b" / "sub" / "0.png", tmp_path / "z.png",
        tmp_path / "a" / "9.png",
    ]  # fmt: skip
    assert image_files((tmp_path / "a",)) == [tmp_path / "a" / "9.png"]
    with pytest.raises(DataError, match=f"^input not found: {tmp_path / 'nope.png'}$"):
        image_files([tmp_path / "z.png", tmp_path / "nope.png"])


def test_load_trained_gives_the_path_and_names_the_checkpoint_in_its_errors(digits_ckpt, tmp_path):
    from zoo.checkpoint import CheckpointError
    from zoo.errors import ConfigError
    from zoo.inference import cannot_write, restore_datamodule

    trained = load_trained(str(digits_ckpt))
    assert trained.path == digits_ckpt and next(trained.net.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():  # asked for a GPU this machine lacks: one line, before reading the file
        with pytest.raises(ConfigError, match="^device=cuda:1 needs a CUDA GPU, and torch finds none"):
            load_trained(tmp_path / "not-even-read.ckpt", device="cuda:1")
    ckpt = torch.load(digits_ckpt, weights_only=True)
    bare = tmp_path / "bare.ckpt"
    torch.save({k: v for k, v in ckpt.items() if k != "datamodule_hyper_parameters"}, bare)
    assert load_trained(bare).classes == trained.classes  # the inputs record is enough
    torch.save({k: v for k, v in ckpt.items() if k not in ("datamodule_hyper_parameters", "zoo_inputs")}, bare)
    with pytest.raises(CheckpointError) as err:
        load_trained(bare)
    assert str(err.value) == f"{bare.resolve()} records no data settings; it was not written by zoo-train"
    with pytest.raises(ConfigError) as err:
        restore_datamodule(ckpt, digits_ckpt, no_such_data_option=1)  # a data override the data module refuses (zoo-eval)
    assert str(err.value).startswith(f"data 'digits' of {digits_ckpt}: ")
    ckpt["hyper_parameters"]["model"]["no_such_option"] = 1
    edited = tmp_path / "edited.ckpt"
    torch.save(ckpt, edited)
    with pytest.raises(ConfigError) as err:
        load_trained(edited)
    assert str(err.value).startswith(f"checkpoint {edited}: ") and "no_such_option" in str(err.value)
    message = str(cannot_write(tmp_path / "x.csv", OSError(27, "File too large")))
    assert message == f"cannot write {tmp_path / 'x.csv'}: File too large"
    assert str(cannot_write(tmp_path / "x.csv", OSError("no reason given"))) == f"cannot write {tmp_path / 'x.csv'}: no reason given"
