"""zoo-predict on real image files with the checkpoint's own preprocessing and class names."""

import csv
import io
import json
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


@pytest.mark.parametrize("use", ["zoo.load", "zoo-predict", "zoo-translate", "zoo-export", "zoo-eval"])
def test_using_a_trained_model_imports_no_lightning(use, digits_ckpt, seq2seq_ckpt, tmp_path):
    """Each way of using a checkpoint, in a fresh interpreter: torch and torchvision, no Lightning."""
    Image.fromarray(_digit_png_pixels(0), mode="L").save(tmp_path / "a.png")
    scripts = Path(sys.executable).parent
    command = {
        "zoo.load": [sys.executable, "-c", f"import zoo; print(zoo.load({str(digits_ckpt)!r}).classes)"],
        "zoo-predict": [scripts / "zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={tmp_path / 'a.png'}"],
        "zoo-translate": [scripts / "zoo-translate", f"ckpt_path={seq2seq_ckpt}", "text=abc"],
        "zoo-export": [scripts / "zoo-export", f"ckpt_path={digits_ckpt}", "format=onnx", f"out={tmp_path / 'm.onnx'}"],
        "zoo-eval": [scripts / "zoo-eval", f"ckpt_path={digits_ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"],
    }[use]
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = _imported(result.stderr)
    assert {"zoo", "torch"} <= imported  # the report was read
    assert not imported & {"lightning", "pytorch_lightning"}, sorted(imported)
    if use == "zoo-eval":  # the test ran: its metrics were written
        assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]["test/acc"] > 0.5
    if use == "zoo-translate":  # text needs no image transforms: torchvision's second is saved too
        assert "torchvision" not in imported


@pytest.mark.parametrize("mode", ["-m", "hydra.mode=MULTIRUN"])
def test_a_multirun_of_zoo_predict_runs_each_job(digits_ckpt, tmp_path, monkeypatch, mode):
    """The mode comes from the command line (zoo.cli.launch composes the config once): both
    of Hydra's ways of asking for a sweep still launch one job per value."""
    Image.fromarray(_digit_png_pixels(0), mode="L").save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)  # Hydra's sweep folder
    result = run_main("zoo-predict", mode, f"ckpt_path={digits_ckpt}", f"inputs={tmp_path / 'a.png'}", "top_k=1,2")
    assert result.returncode == 0, result.stderr
    answers = [line for line in result.stdout.splitlines() if line.startswith(f"{tmp_path / 'a.png'}: ")]
    assert [line.count(",") for line in answers] == [0, 1]  # top 1, then top 2


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


# -- how the network runs: batches, workers, precision, memory format, ONNX Runtime ---------


@pytest.fixture(scope="module")
def digits_test_images(tmp_path_factory) -> Path:
    """The 360 images of the digits test split (zoo-train's default split), as 8-bit PNG
    files named ``<index>_<label>.png``."""
    from zoo.data.digits import split_indices

    digits = load_digits()
    _, _, test = split_indices(torch.tensor(digits.target), 0.1, 0.2, 0)
    folder = tmp_path_factory.mktemp("digits_test")
    for i in test:
        Image.fromarray(_digit_png_pixels(i), mode="L").save(folder / f"{i:04d}_{digits.target[i]}.png")
    return folder


def _predicted(ckpt: Path, folder: Path, tmp_path: Path, *args: str) -> tuple[dict[str, list[tuple[str, float]]], str]:
    """zoo-predict's top-5 of each file, by file name (from its CSV), and its stderr."""
    out = tmp_path / f"p{len(list(tmp_path.glob('p*.csv')))}.csv"
    result = run_main("zoo-predict", f"ckpt_path={ckpt}", f"inputs={folder}", f"csv={out}", *args)
    assert result.returncode == 0, result.stderr
    rows: dict[str, list[tuple[str, float]]] = {}
    for row in _read_csv(out):
        rows.setdefault(Path(row["path"]).name, []).append((row["class_name"], float(row["probability"])))
    return rows, result.stderr


def _accuracy(rows: dict[str, list[tuple[str, float]]]) -> float:
    return 100 * sum(top[0][0] == name.split("_")[1].split(".")[0] for name, top in rows.items()) / len(rows)


def test_bf16_keeps_top1_within_half_a_point_and_channels_last_and_workers_change_nothing(
    digits_ckpt, digits_test_images, tmp_path, one_thread
):
    fp32, said = _predicted(digits_ckpt, digits_test_images, tmp_path, "precision=auto", "batch_size=64")
    # LeNet-5 was not measured faster in bf16: auto is fp32, and says why
    assert "running: torch eager, fp32 (auto: bf16-mixed was not measured faster for LeNet5), NCHW" in said
    assert len(fp32) == 360 and _accuracy(fp32) > 80  # a trained network, or equal answers prove nothing
    bf16, said = _predicted(digits_ckpt, digits_test_images, tmp_path, "precision=bf16", "batch_size=64")
    assert "bf16 autocast (precision=bf16, as set)" in said
    assert abs(_accuracy(bf16) - _accuracy(fp32)) <= 0.5
    gaps = [abs(bf16[n][0][1] - fp32[n][0][1]) for n in fp32]
    assert max(gaps) > 1e-4  # it did run in bfloat16
    assert max(gaps) < 0.05
    # channels_last, DataLoader workers and another batch size: the same numbers, the same order
    other, said = _predicted(digits_ckpt, digits_test_images, tmp_path, "precision=fp32", "channels_last=true",
                             "num_workers=2", "batch_size=7")  # fmt: skip
    assert "fp32 (precision=fp32, as set), channels_last" in said
    assert list(other) == list(fp32) == sorted(fp32)
    for name, top in fp32.items():
        assert [c for c, _ in other[name]] == [c for c, _ in top]
        assert [p for _, p in other[name]] == pytest.approx([p for _, p in top], abs=2e-6)


def test_onnxruntime_gives_the_same_top5_as_torch_on_the_digits_test_images(digits_ckpt, digits_test_images, tmp_path):
    onnx_file = tmp_path / "lenet.onnx"
    assert run_main("zoo-export", f"ckpt_path={digits_ckpt}", f"out={onnx_file}").returncode == 0
    torch_rows, _ = _predicted(digits_ckpt, digits_test_images, tmp_path, "precision=fp32")
    ort_rows, said = _predicted(digits_ckpt, digits_test_images, tmp_path, "backend=onnxruntime", f"onnx={onnx_file}")
    assert "running: onnxruntime " in said and str(onnx_file) in said
    assert list(ort_rows) == list(torch_rows) and len(ort_rows) == 360
    for name, top in torch_rows.items():
        assert [c for c, _ in ort_rows[name]] == [c for c, _ in top], name
        assert [p for _, p in ort_rows[name]] == pytest.approx([p for _, p in top], abs=1e-5)


def test_an_onnx_file_that_is_not_the_checkpoints_export_is_refused(digits_ckpt, tmp_path):
    from zoo.checkpoint import INPUTS_KEY

    Image.fromarray(_digit_png_pixels(0), mode="L").save(tmp_path / "a.png")
    ckpt = f"ckpt_path={digits_ckpt}"

    def refusal(*args: str) -> str:
        result = run_main("zoo-predict", *args, f"inputs={tmp_path / 'a.png'}", "backend=onnxruntime")
        assert result.returncode == 1 and result.stdout == ""
        return _error_line(result)

    missing = digits_ckpt.with_suffix(".onnx")
    assert refusal(ckpt) == (f"Error: backend=onnxruntime runs {missing}, which is not a file: write it with "
                             f"zoo-export ckpt_path={digits_ckpt} (or give onnx=<file>)")  # fmt: skip
    assert run_main("zoo-export", ckpt, f"out={tmp_path / 'm.onnx'}").returncode == 0
    other = torch.load(digits_ckpt, weights_only=True)
    other["state_dict"]["net.classifier.1.bias"] += 0.5  # other weights, the same everything else
    torch.save(other, tmp_path / "other.ckpt")
    line = refusal(f"ckpt_path={tmp_path / 'other.ckpt'}", f"onnx={tmp_path / 'm.onnx'}")
    assert line.startswith(f"Error: {tmp_path / 'm.onnx'} is not the export of {tmp_path / 'other.ckpt'}: its logits differ")
    assert line.endswith(f"up to 0.5; export it again with zoo-export ckpt_path={tmp_path / 'other.ckpt'}")
    other = torch.load(digits_ckpt, weights_only=True)
    other[INPUTS_KEY]["class_names"][3] = "three"
    torch.save(other, tmp_path / "renamed.ckpt")
    assert refusal(f"ckpt_path={tmp_path / 'renamed.ckpt'}", f"onnx={tmp_path / 'm.onnx'}") == (
        f"Error: {tmp_path / 'm.onnx'} is not the export of {tmp_path / 'renamed.ckpt'}: its class_names differ; "
        f"export it again with zoo-export ckpt_path={tmp_path / 'renamed.ckpt'}"
    )
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a model")
    assert refusal(ckpt, f"onnx={tmp_path / 'broken.onnx'}").startswith(f"Error: cannot read {tmp_path / 'broken.onnx'} as an ONNX model: ")
    assert refusal(ckpt, f"onnx={tmp_path / 'm.onnx'}", "precision=bf16").startswith("Error: precision= and channels_last= choose")


def test_backend_auto_follows_the_inference_pages_rule(digits_ckpt, tmp_path, monkeypatch):
    """bf16 torch where training's rule picks bf16; else ONNX Runtime on a CPU where the
    export exists and onnxruntime is installed; else torch. Each branch with its reason."""
    import importlib.util

    from zoo import perf
    from zoo.export import choose_backend
    from zoo.inference import Trained
    from zoo.models import get_model

    lenet = load_trained(digits_ckpt)  # not a fast-path family: never bf16
    lenet.path = tmp_path / "lenet.ckpt"
    assert choose_backend(lenet) == ("torch", f"auto: no ONNX export at {tmp_path / 'lenet.onnx'} (zoo-export writes it)")
    (tmp_path / "lenet.onnx").write_bytes(b"")  # only its presence counts here; onnx_runner checks it
    assert choose_backend(lenet) == (
        "onnxruntime", "auto: torch would run fp32 (bf16-mixed was not measured faster for LeNet5) and lenet.onnx is exported"
    )  # fmt: skip
    assert choose_backend(lenet, tmp_path / "elsewhere.onnx")[0] == "torch"  # onnx= names the file
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    assert choose_backend(lenet) == ("torch", 'auto: onnxruntime is not installed (pip install -e ".[export]")')
    monkeypatch.undo()

    resnet = Trained(get_model("resnet18", num_classes=3), lenet.inputs, tmp_path / "lenet.ckpt", {"model": {"name": "resnet18"}})
    for native in (True, False):
        monkeypatch.setattr(perf, "fast_bf16", lambda device_type, native=native: native)
        chosen = choose_backend(resnet)
        assert chosen == (("torch", "auto: resnet18 runs bf16 + channels_last on this CPU") if native else
                          ("onnxruntime", "auto: torch would run fp32 (this CPU has no native bf16) and lenet.onnx is exported"))  # fmt: skip
    resnet.net.to("meta")  # another device than the CPU ONNX Runtime runs on
    assert choose_backend(resnet) == ("torch", "auto: ONNX Runtime runs on the CPU, the network on meta")


def test_zoo_predict_backend_auto_says_what_it_chose_and_runs_it(digits_ckpt, digits_test_images, tmp_path, one_thread):
    ckpt = tmp_path / "lenet.ckpt"
    ckpt.write_bytes(digits_ckpt.read_bytes())
    torch_rows, said = _predicted(ckpt, digits_test_images, tmp_path, "backend=auto")
    assert f"backend torch (auto: no ONNX export at {tmp_path / 'lenet.onnx'}" in said and "running: torch eager" in said
    assert run_main("zoo-export", f"ckpt_path={ckpt}").returncode == 0  # beside the checkpoint, where auto looks
    ort_rows, said = _predicted(ckpt, digits_test_images, tmp_path, "backend=auto")
    assert "backend onnxruntime (auto: " in said and "running: onnxruntime" in said
    assert [top[0][0] for top in ort_rows.values()] == [top[0][0] for top in torch_rows.values()]
    _, said = _predicted(ckpt, digits_test_images, tmp_path, "backend=auto", "precision=bf16")
    assert "backend torch (auto: precision= and channels_last= are torch's settings)" in said and "bf16 autocast" in said


@pytest.mark.parametrize(("args", "line"), [
    (("precision=fp16",), "precision must be one of auto, fp32, bf16; got 'fp16'"),
    (("channels_last=maybe",), "channels_last must be true, false or auto; got 'maybe'"),
    (("backend=tensorrt",), "backend must be one of torch, onnxruntime, auto; got 'tensorrt'"),
    (("num_workers=-1",), "num_workers must be a whole number of at least 0, got -1"),
    (("batch_size=0",), "batch_size must be a whole number of at least 1, got 0"),
])  # fmt: skip
def test_how_to_run_is_checked_in_one_line(digits_ckpt, tmp_path, args, line):
    Image.fromarray(_digit_png_pixels(0), mode="L").save(tmp_path / "a.png")
    result = run_main("zoo-predict", f"ckpt_path={digits_ckpt}", f"inputs={tmp_path / 'a.png'}", *args)
    assert _error_line(result) == f"Error: {line}" and result.stdout == ""


def test_a_record_of_the_wrong_kind_or_no_model_is_one_line_naming_the_file(digits_ckpt, seq2seq_ckpt, tmp_path):
    from zoo.checkpoint import CheckpointError

    image, text = (torch.load(path, weights_only=True) for path in (digits_ckpt, seq2seq_ckpt))
    cases = {
        "text data": ({**image, "zoo_inputs": text["zoo_inputs"]}, "model 'lenet5' is not a sequence-to-sequence model, but its data is text"),
        "image data": ({**text, "zoo_inputs": image["zoo_inputs"]}, "model 'seq2seq_gru' is not an image model, but its data is images"),
        "no model": ({**image, "hyper_parameters": {"optim": {}}}, "names no model in its hyperparameters"),
    }  # fmt: skip
    for name, (ckpt, message) in cases.items():
        torch.save(ckpt, tmp_path / f"{name}.ckpt")
        with pytest.raises(CheckpointError) as err:
            load_trained(tmp_path / f"{name}.ckpt")
        assert str(err.value).startswith(f"{(tmp_path / f'{name}.ckpt').resolve()}") and str(err.value).endswith(message), name


def test_a_text_checkpoint_refuses_another_backend(seq2seq_ckpt):
    result = run_main("zoo-predict", f"ckpt_path={seq2seq_ckpt}", "text=abc", "backend=onnxruntime")
    assert _error_line(result) == f"Error: backend=onnxruntime runs image classifiers; {seq2seq_ckpt} decodes text, which torch runs"
    assert result.stdout == ""


def test_torch_runner_applies_the_precision_and_memory_format_it_names():
    """On a family with the bf16 fast path: auto follows training's rule on this hardware,
    and each explicit setting changes the numbers and the layouts it says it does."""
    import copy

    from zoo.data.inputs import ImageInputs
    from zoo.inference import Trained, torch_runner
    from zoo.models import get_model
    from zoo.perf import fast_bf16

    torch.manual_seed(0)
    net = get_model("resnet18", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fp32 = net(x)
    inputs = ImageInputs(3, 32, (0.5,) * 3, (0.5,) * 3, tuple("abcde"))

    def run(precision, channels_last):
        trained = Trained(copy.deepcopy(net), inputs, Path("r.ckpt"), {"model": {"name": "resnet18"}})
        seen = []
        trained.net.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        runner = torch_runner(trained, precision, channels_last)
        with torch.no_grad():
            out = runner.forward(x)
        return out, seen[0], trained.net.conv1.weight.is_contiguous(memory_format=torch.channels_last), runner.description

    out, input_last, weight_last, said = run("fp32", True)
    assert out.dtype == torch.float32 and input_last and weight_last and said.endswith("fp32 (precision=fp32, as set), channels_last")
    torch.testing.assert_close(out, fp32, rtol=1e-4, atol=1e-4)
    out, input_last, weight_last, said = run("bf16", False)
    assert not input_last and not weight_last and "bf16 autocast (precision=bf16, as set), NCHW" in said
    assert out.dtype == torch.float32 and not torch.allclose(out, fp32, rtol=0, atol=1e-4)
    torch.testing.assert_close(out, fp32, rtol=0.1, atol=0.1)
    out, input_last, weight_last, said = run("auto", "auto")
    bf16 = fast_bf16("cpu")  # training's rule: bf16 + channels_last for this family where the CPU has native bf16
    assert (input_last, weight_last) == (bf16, bf16) and ("bf16 autocast" in said) == bf16
    assert said.startswith("torch eager, ")
