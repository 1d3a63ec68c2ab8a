"""zoo-export and zoo.export: ONNX files and torch.export programs that match the eager models.

Every artifact is run here at batch sizes other than the traced one, by onnxruntime or by
the loaded program, and compared with the eager network on inputs the library never saw.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torchvision.transforms import v2

from tests.helpers import QUIET, compose_config, informative_weights, randomize_batch_norms, run_main, write_image_folder

import zoo
from zoo.cli.export import export as export_cli
from zoo.cli.train import train
from zoo.data import build_datamodule
from zoo.data.inputs import ImageInputs
from zoo.errors import ConfigError, ZooError
from zoo.export import ExportError, export_model, export_onnx, export_program, image_metadata, program_metadata
from zoo.inference import classify, load_trained
from zoo.models import get_model

ATOL = 1e-4

# One model per image family: options and input size, the smallest that keeps the check
# meaningful (small_input stems; EfficientNet's last stages would see 1x1 maps below 32 px,
# whose batch statistics from a few images are too noisy to give outputs of a sane size).
FAMILIES = {
    "lenet5": ({"norm": "batch"}, 32),
    "mlp": ({"image_size": 8}, 8),
    "alexnet": ({"small_input": True}, 8),
    "vgg11_bn": ({}, 32),
    "googlenet": ({"small_input": True}, 8),
    "resnet18": ({"small_input": True}, 8),
    "densenet121": ({"small_input": True}, 8),
    "efficientnet_b0": ({"small_input": True}, 32),
    "vit_tiny": ({"small_input": True, "image_size": 8, "depth": 2}, 8),
}


def _nontrivial(name: str) -> tuple[nn.Module, int]:
    """An eval-mode network whose outputs are of order one and depend on the input, and its size."""
    options, size = FAMILIES[name]
    net = get_model(name, num_classes=10, **options)
    return informative_weights(net, _input(net, size, batch=32, seed=2)), size


def _input(net: nn.Module, size: int, batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, net.in_channels, size, size, generator=torch.Generator().manual_seed(seed))


def _onnx_runner(path: Path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a symbolic, dynamic batch dimension
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _program_runner(path: Path):
    module = torch.export.load(path).module()
    return torch.no_grad()(module)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("fmt", ["onnx", "torch_export"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_image_family_exports_with_a_dynamic_batch(name, fmt, tmp_path, one_thread):
    net, size = _nontrivial(name)
    example = _input(net, size, batch=1, seed=0)  # the CLI's default: traced as two images
    x = _input(net, size, batch=5)
    with torch.no_grad():
        expected = net(x)
    # Outputs that vary with the input by far more than the tolerance, and are not huge.
    assert (expected - expected.mean(dim=0)).abs().max() > 1000 * ATOL and expected.abs().max() < 100

    export, suffix, runner = {
        "onnx": (export_onnx, "onnx", _onnx_runner),
        "torch_export": (export_program, "pt2", _program_runner),
    }[fmt]
    result = export(net, example, tmp_path / f"{name}.{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.{suffix}"]  # no temporary files left
    assert 0.0 <= result.max_abs_diff <= ATOL and 5 not in result.batch_sizes
    traced = (2, *example.shape[1:])  # a batch of one is traced as two: batch 1 would be specialised
    assert (result.path, result.format, result.input_shape) == (tmp_path / f"{name}.{suffix}", fmt, traced)

    run = runner(result.path)
    assert _max_diff(run(x), expected) <= ATOL
    assert _max_diff(run(x[:1]), expected[:1]) <= ATOL  # the batch was not specialised to the traced 2
    assert not net.training
    for file in tmp_path.iterdir():  # VGG's files are 0.5 GB each: not kept in pytest's temp folders
        file.unlink()


# -- the command line -------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path_factory.mktemp("digits_run")
        # Two whole epochs (about a second): answers confident enough to tell images apart,
        # which the docs' onnxruntime example must reproduce.
        train(compose_config("train", run_dir, [
            "trainer.max_epochs=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "sched=none",
            "~logger", *QUIET,
        ]))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def cli_runs(digits_ckpt, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """zoo-export as a user runs it, three times at once: each process mostly imports."""
    out = tmp_path_factory.mktemp("exports")
    commands = {
        "onnx": [f"ckpt_path={digits_ckpt}", "format=onnx"],  # defaults: beside the checkpoint, batch 1
        "torch_export": [
            f"ckpt_path={digits_ckpt}", "format=torch_export", f"out={out / 'shipped' / 'digits.pt2'}", "batch_size=3",
        ],
        "tflite": [f"ckpt_path={digits_ckpt}", "format=tflite", f"out={out / 'unknown' / 'digits.tflite'}"],
    }  # fmt: skip
    script = str(Path(sys.executable).parent / "zoo-export")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {
        k: subprocess.Popen([script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for k, args in commands.items()
    }
    results = {}
    for k, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        results[k] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return results


def _reported(stdout: str) -> tuple[Path, float]:
    """The written path and the checked difference from zoo-export's output."""
    path = re.search(r"^wrote (\S+) ", stdout, re.M)
    diff = re.search(r"max abs difference to the eager network (\S+)$", stdout, re.M)
    assert path and diff, stdout
    return Path(path.group(1)), float(diff.group(1))


def test_zoo_export_writes_files_that_match_the_checkpoint(cli_runs, digits_ckpt, one_thread):
    to_onnx, program = cli_runs["onnx"], cli_runs["torch_export"]
    assert to_onnx.returncode == 0, to_onnx.stderr
    onnx_path, onnx_diff = _reported(to_onnx.stdout)
    assert onnx_path == digits_ckpt.with_suffix(".onnx") and onnx_path.is_file() and 0 <= onnx_diff <= ATOL
    assert "ONNX opset" in to_onnx.stdout and "input (batch, 1, 32, 32)" in to_onnx.stdout
    assert "with the preprocessing and 10 class names in its metadata_props" in to_onnx.stdout

    assert program.returncode == 0, program.stderr
    program_path, program_diff = _reported(program.stdout)
    assert program_path.name == "digits.pt2" and program_path.parent.name == "shipped"  # a folder made for it
    assert sorted(p.name for p in program_path.parent.iterdir()) == ["digits.pt2"] and 0 <= program_diff <= ATOL
    # The program describes itself as the ONNX file does, less the ONNX graph's input and output names.
    assert "with the preprocessing and 10 class names in its extra file zoo_metadata.json" in program.stdout
    onnx_props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert {"image_mode", "mean", "class_names"} <= onnx_props.keys()
    del onnx_props["input_name"], onnx_props["output_name"]
    assert program_metadata(program_path) == onnx_props

    net = load_trained(digits_ckpt).net  # the checkpoint's weights, as the CLI read them
    other = load_trained(digits_ckpt).net
    randomize_batch_norms(other)
    x = torch.randn(4, 1, 32, 32)  # digits: 1 channel, 32 px
    with torch.no_grad():
        expected = net(x)
        assert _max_diff(other(x), expected) > 1e-2  # another network is told apart: the check can fail
    for run in (_onnx_runner(onnx_path), _program_runner(program_path)):
        assert _max_diff(run(x), expected) <= ATOL
        assert _max_diff(run(x[:1]), expected[:1]) <= ATOL


def test_unknown_format_lists_the_choices_and_exits_with_1(cli_runs):
    result = cli_runs["tflite"]
    assert result.returncode == 1 and result.stdout == ""
    assert "Unknown export format 'tflite'" in result.stderr and "onnx, torch_export" in result.stderr
    assert "Traceback" not in result.stderr
    out = Path(result.args[-1].removeprefix("out="))
    assert not out.parent.exists()  # refused before anything was made


def test_missing_checkpoint_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "best.ckpt"
    with pytest.raises(ZooError, match=re.escape(str(missing))):
        export_cli(compose_config("export", tmp_path, [f"ckpt_path={missing}"]))
    with pytest.raises(ConfigError, match="batch_size"):
        export_cli(compose_config("export", tmp_path, [f"ckpt_path={missing}", "batch_size=0"]))
    assert list(tmp_path.iterdir()) == []


def test_seq2seq_checkpoints_are_refused_before_anything_is_written(tmp_path, one_thread):
    run_dir = tmp_path / "run"
    train(compose_config("train", run_dir, [
        "model=seq2seq_gru", "data=reverse", "data.train_size=32", "data.val_size=8", "data.test_size=8",
        "data.max_len=5", "model.hidden=16", "model.emb_dim=8", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "sched=none", "~logger", *QUIET,
    ]))  # fmt: skip
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    before = sorted(ckpt.parent.iterdir())
    for fmt in ("onnx", "torch_export"):
        with pytest.raises(ExportError, match="seq2seq_gru is a sequence-to-sequence model") as err:
            export_cli(compose_config("export", tmp_path, [f"ckpt_path={ckpt}", f"format={fmt}"]))
        assert "zoo-translate" in str(err.value) and f"format={fmt}" in str(err.value)
    assert sorted(ckpt.parent.iterdir()) == before

    net = load_trained(ckpt).net
    with pytest.raises(ExportError, match="zoo-predict or zoo-translate"):
        export_model(net, net.example_inputs()[0], tmp_path / "s.onnx", "onnx")
    assert not (tmp_path / "s.onnx").exists()


# -- metadata: the preprocessing and class names, and the docs' onnxruntime example ------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "inference.md"
# What the docs' example may import: it runs with torch and zoo made unimportable.
SNIPPET_IMPORTS = {"json", "sys", "numpy", "onnxruntime", "PIL"}


@pytest.fixture(scope="module")
def folder_onnx(tmp_path_factory) -> tuple[Path, Path]:
    """An RGB checkpoint with named classes whose evaluation resizes (to 20 px) before it
    crops (16 px), and its zoo-export ONNX file."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("folder_run")
        write_image_folder(root / "pets", classes=("cat", "dog", "owl"), per_class=3)
        train(compose_config("train", root / "run", [
            "data=imagefolder", f"data.root={root / 'pets'}", "data.image_size=16", "data.resize_size=20",
            "data.num_workers=0", "data.batch_size=4", "model=mlp", "trainer.max_epochs=1", "sched=none", "~logger",
            *QUIET,
        ]))  # fmt: skip
        ckpt = root / "run" / "checkpoints" / "best.ckpt"
        export_cli(compose_config("export", root, [f"ckpt_path={ckpt}"]))
    finally:
        torch.set_num_threads(threads)
    return ckpt, ckpt.with_suffix(".onnx")


@pytest.fixture(params=["digits", "folder"])
def exported(request) -> tuple[Path, Path]:
    """(checkpoint, its zoo-export ONNX file): the digits one written by the zoo-export process."""
    if request.param == "folder":
        return request.getfixturevalue("folder_onnx")
    run, ckpt = request.getfixturevalue("cli_runs")["onnx"], request.getfixturevalue("digits_ckpt")
    assert run.returncode == 0, run.stderr
    return ckpt, ckpt.with_suffix(".onnx")


def test_onnx_metadata_is_what_the_checkpoints_datamodule_says(exported):
    ckpt, path = exported
    trained = load_trained(ckpt)
    dm, name = trained.inputs, trained.model_name
    c, s = dm.in_channels, dm.image_size
    resize = dm.resize_size or s  # ImageFolder resizes to more than it keeps
    assert (name, c, resize, s) in {("lenet5", 1, 32, 32), ("mlp", 3, 20, 16)}
    assert dm.mean != dm.std and len(set(dm.class_names)) == len(dm.class_names) > 2  # a swap or a shuffle shows
    model = onnx.load(str(path))
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata == {
        "model": name, "zoo_version": zoo.__version__, "input_name": "images", "output_name": "logits",
        "input_shape": json.dumps(["batch", c, s, s]), "input_layout": "NCHW", "input_channels": str(c),
        "image_mode": {1: "L", 3: "RGB"}[c], "resize_size": str(resize), "resize_interpolation": "bilinear",
        "resize_antialias": "true", "center_crop_size": str(s), "scale": repr(1 / 255),
        "mean": json.dumps(list(dm.mean)), "std": json.dumps(list(dm.std)), "class_names": json.dumps(dm.class_names),
    }  # fmt: skip
    assert json.loads(metadata["mean"]) == list(dm.mean) and json.loads(metadata["class_names"]) == list(dm.class_names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == metadata  # as onnxruntime reads them
    assert [i.name for i in session.get_inputs()] == [metadata["input_name"]]
    assert [o.name for o in session.get_outputs()] == [metadata["output_name"]]
    assert model.doc_string.startswith(f"{name} exported by zoo {zoo.__version__}")
    assert f"resize the shorter side to {resize}" in model.doc_string and "class_names[i]" in model.doc_string


def _docs_snippet() -> str:
    """The Python block of docs/inference.md that classifies with the .onnx file alone."""
    blocks = re.findall(r"^```python\n(# classify\.py:.*?)^```$", DOCS.read_text(), re.M | re.S)
    assert len(blocks) == 1, f"expected one ```python block starting '# classify.py:' in {DOCS}"
    return blocks[0]


def _write_images(folder: Path) -> list[Path]:
    """PNGs in several modes and sizes (enlarged, shrunk, not square: cropped) that a
    digits network answers differently: digits in red and green, noise in blue."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    digits = (load_digits().images * (255 / 16)).astype(np.uint8)  # (N, 8, 8)
    # Crops at x.5 offsets, which round to even (as torchvision rounds) rather than down:
    # (32, 35) for digits (32 px, not resized), (46, 40) for the folder (resized to 23 x 20, kept 16).
    sizes = [(8, 8), (40, 48), (97, 31), (300, 250), (32, 35), (46, 40), (20, 60)]
    paths = []
    for i, (size, mode) in enumerate(zip(sizes, ["L", "RGB", "P", "RGB", "L", "RGB", "L"])):
        digit = np.asarray(Image.fromarray(digits[37 * i]).resize(size, Image.Resampling.BICUBIC))
        noise = rng.integers(0, 256, digit.shape, dtype=np.uint8)
        image = Image.fromarray(np.stack([digit, digit, noise], axis=-1)).convert(mode)
        paths.append(folder / f"{i}_{mode}_{size[0]}x{size[1]}.png")
        image.save(paths[-1])
    return paths


def test_the_docs_onnxruntime_example_gives_the_checkpoints_predictions(exported, tmp_path):
    ckpt, path = exported
    snippet = _docs_snippet()
    imported = set()
    for node in ast.walk(ast.parse(snippet)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= SNIPPET_IMPORTS, imported
    assert len([line for line in snippet.splitlines() if line.strip() and not line.startswith("#")]) <= 20

    script, images = tmp_path / "classify.py", _write_images(tmp_path / "images")
    script.write_text(snippet)
    without_torch = (  # the example as a user without PyTorch or zoo runs it
        "import runpy, sys; sys.modules.update(dict.fromkeys(['torch', 'torchvision', 'zoo'])); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_torch, str(script), str(path), *map(str, images)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(images), result.stdout

    predictions, failures = classify(load_trained(ckpt), images, top_k=1)  # zoo-predict's answers
    assert not failures
    for line, expected in zip(lines, predictions):
        shown, answer = line.split(": ", 1)
        name, probability = answer.rsplit(" ", 1)
        assert (Path(shown), name) == (expected.path, expected.names[0]), line
        assert abs(float(probability) - expected.probabilities[0]) <= 1e-4, (line, expected.probabilities[0])
    # Answers that differ between the images by far more than the tolerance: a wrong
    # preprocessing would move them.
    probabilities = [p.probabilities[0] for p in predictions]
    assert max(probabilities) - min(probabilities) > 1e-2


def test_image_metadata_reads_the_predict_transform_and_refuses_what_it_cannot_say(tmp_path):
    write_image_folder(tmp_path / "pets", classes=("owl", "cat"))
    dm = build_datamodule(name="imagefolder", root=str(tmp_path / "pets"), image_size=24, num_workers=0, grayscale=True,
                          mean=[0.25], std=[0.5])  # fmt: skip
    metadata = image_metadata(dm.inputs())
    assert [metadata[k] for k in ("image_mode", "input_channels", "mean", "std")] == ["L", "1", "[0.25]", "[0.5]"]
    assert (metadata["resize_size"], metadata["center_crop_size"]) == ("27", "24")  # round(24 / 0.875)
    assert json.loads(metadata["class_names"]) == ["cat", "owl"]  # the folders, sorted: the training's indices

    class Stretched(ImageInputs):  # a transform the keys cannot describe: no crop
        def eval_steps(self) -> list:
            return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize((24, 24))]

    with pytest.raises(ExportError, match=r"to_mode -> ToImage -> ToDtype -> Resize -> CenterCrop -> Normalize.*"
                                          r"to_mode -> ToImage -> ToDtype -> Resize\(size=\[24, 24\]"):
        image_metadata(Stretched(**{k: v for k, v in vars(dm.inputs()).items()}))


# -- the library's refusals ---------------------------------------------------------------


class DataDependent(nn.Module):
    """Python control flow on tensor values: neither exporter can capture it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


class Drifting(nn.Module):
    """Eager outputs that the traced graph cannot follow (a Python counter becomes a constant)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x) + self.calls


@pytest.mark.parametrize("fmt", ["onnx", "torch_export"])
def test_export_failures_name_the_model_and_format_and_leave_no_file(fmt, tmp_path, one_thread):
    path = tmp_path / "m.out"
    with pytest.raises(ExportError, match=rf"^Branchy cannot be exported to {fmt}: \w+: .*data-dependent"):
        export_model(DataDependent(), torch.randn(2, 4), path, fmt, name="Branchy")
    assert list(tmp_path.iterdir()) == []

    path.write_text("the previous export")
    what = {"onnx": "the ONNX export of Drifting (onnxruntime)", "torch_export": "the torch.export program of Drifting"}[fmt]
    with pytest.raises(ExportError, match=rf"^{re.escape(what)} differs from the eager model by up to [0-9.]+ \(allowed: 0.0001\)"):
        export_model(Drifting(), torch.randn(3, 4), path, fmt)
    assert [p.name for p in tmp_path.iterdir()] == ["m.out"] and path.read_text() == "the previous export"


def test_unknown_format_opset_and_missing_onnx_are_refused(tmp_path, monkeypatch):
    net = nn.Linear(4, 2)
    with pytest.raises(ConfigError, match="Unknown export format 'tflite'.*onnx, torch_export"):
        export_model(net, torch.randn(2, 4), tmp_path / "m", "tflite")
    with pytest.raises(ExportError, match="opset applies to format=onnx only"):
        export_model(net, torch.randn(2, 4), tmp_path / "m.pt2", "torch_export", opset=18)
    for fmt, suffix in (("onnx", "onnx"), ("torch_export", "pt2")):
        with pytest.raises(ExportError, match="metadata keys and values are strings"):
            export_model(net, torch.randn(2, 4), tmp_path / f"m.{suffix}", fmt, metadata={"mean": [0.5]})
    programs = tmp_path / "programs"
    result = export_model(net, torch.randn(2, 4), programs / "m.pt2", "torch_export", metadata={"a": "b"})
    assert program_metadata(result.path) == {
        "model": "Linear", "zoo_version": zoo.__version__, "input_shape": '["batch", 4]', "a": "b"}  # fmt: skip
    torch.export.save(torch.export.export(net, (torch.randn(2, 4),)), programs / "bare.pt2")
    assert program_metadata(programs / "bare.pt2") == {}  # a program written elsewhere
    shutil.rmtree(programs)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ExportError, match=re.escape('pip install -e ".[export]"')):
        export_onnx(net, torch.randn(2, 4), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_older_opset_is_written_as_asked_and_the_training_mode_comes_back(tmp_path, one_thread):
    net, size = _nontrivial("lenet5")
    net.train()  # exported (and compared) in eval mode all the same
    result = export_onnx(net, _input(net, size, batch=2), tmp_path / "m.onnx", opset=18)
    assert net.training and result.opset == 18 and result.batch_sizes == (1, 3)
    model = onnx.load(str(result.path))
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    assert {p.key: p.value for p in model.metadata_props} == {  # every ONNX file says what it is
        "model": "LeNet5", "zoo_version": zoo.__version__, "input_name": "images", "output_name": "logits",
        "input_shape": '["batch", 1, 32, 32]',
    }  # fmt: skip
    x = _input(net, size, batch=4)
    with torch.no_grad():
        assert _max_diff(_onnx_runner(result.path)(x), net.eval()(x)) <= ATOL
        assert _max_diff(net.train()(x), net.eval()(x)) > 1e-2  # batch statistics would have shown


# -- destinations: refused in one line before any work, written whole or not at all ---------


@pytest.mark.parametrize("case", ["under a regular file", "a folder"])
def test_an_out_that_cannot_be_written_is_one_line_before_the_checkpoint_is_read(digits_ckpt, tmp_path, monkeypatch,
                                                                                 case):  # fmt: skip
    from zoo import inference

    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    out, reason = {
        "under a regular file": (tmp_path / "file" / "m.pt2", f"{tmp_path / 'file'} is a file, not a folder"),
        "a folder": (tmp_path / "folder", "it is a folder; give a file name"),
    }[case]

    def not_now(*args, **kwargs):
        raise AssertionError("the checkpoint was read before the destination was checked")

    monkeypatch.setattr(inference, "load_trained", not_now)
    result = run_main("zoo-export", f"ckpt_path={digits_ckpt}", "format=torch_export", f"out={out}")
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert line == f"Error: cannot write {out}: {reason}"
    assert (tmp_path / "file").read_text() == "x" and not any((tmp_path / "folder").iterdir())


# The child: exports over existing files with writes past 4 KiB failing (EFBIG, SIGXFSZ ignored).
_LIMITED_EXPORT = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from zoo.errors import ZooError
    from zoo.export import export_model

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 300))  # 78 KB of weights
    for path, fmt in ((sys.argv[1], "torch_export"), (sys.argv[2], "onnx")):
        try:
            export_model(net, torch.randn(2, 1, 8, 8), path, fmt)
        except ZooError as err:
            print(type(err).__name__, err)
""")


def test_an_export_over_the_file_size_limit_leaves_the_old_file_whole_and_no_part(tmp_path):
    import resource
    import signal

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    old = {tmp_path / "m.pt2": b"the previous program", tmp_path / "m.onnx": b"the previous model"}
    for path, data in old.items():
        path.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-c", _LIMITED_EXPORT, str(tmp_path / "m.pt2"), str(tmp_path / "m.onnx")],
        capture_output=True, text=True, preexec_fn=limited, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]  # PyTorch's zip writer would have aborted the process
    assert result.stdout.splitlines() == [
        f"OutputError cannot write {tmp_path / 'm.pt2'}: File too large",
        f"OutputError cannot write {tmp_path / 'm.onnx'}: File too large",
    ]
    assert {path: path.read_bytes() for path in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt2"]  # no temporary folder left


def test_an_exporters_error_is_the_first_line_of_its_innermost_cause_without_colours():
    from zoo.export import _first_line

    inner = ValueError("\n  \x1b[31mshape [2, 3]\x1b[0m does not match\nsecond line\n")
    try:
        try:
            raise inner
        except ValueError as err:
            raise RuntimeError("advice about reporting a bug") from err
    except RuntimeError as outer:
        assert _first_line(outer) == "ValueError: shape [2, 3] does not match"
    assert _first_line(KeyError()) == "KeyError"  # no message: the type alone
    assert _first_line(OSError("   \n")) == "OSError"


def test_export_program_itself_refuses_a_sequence_to_sequence_model_by_the_name_given(tmp_path):
    net = get_model("seq2seq_gru", src_vocab_size=8, tgt_vocab_size=8, emb_dim=4, hidden=4)
    with pytest.raises(ExportError, match=r"^my-translator is a sequence-to-sequence model: .* format=torch_export cannot hold"):
        export_program(net, net.example_inputs()[0], tmp_path / "s.pt2", name="my-translator")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lost", ["the extra file", "the reader"])
def test_a_program_whose_metadata_does_not_read_back_is_refused_and_not_written(lost, tmp_path, monkeypatch):
    if lost == "the extra file":  # torch.export.load leaves the extra file as it was given: empty
        load = torch.export.load
        monkeypatch.setattr(torch.export, "load", lambda f, extra_files=None: load(f))
    else:
        monkeypatch.setattr("zoo.export.program_metadata", lambda path: {})
    with pytest.raises(ExportError) as raised:
        export_program(nn.Linear(4, 2), torch.randn(2, 4), tmp_path / "m.pt2", name="Tiny")
    assert str(raised.value) == "the torch.export program of Tiny does not read back the metadata written into it"
    assert list(tmp_path.iterdir()) == []


def test_a_program_that_cannot_be_written_names_the_file_and_the_reason(tmp_path, monkeypatch):
    import errno
    import io

    class FullDisk(io.BytesIO):
        def getbuffer(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("zoo.export.io.BytesIO", FullDisk)
    from zoo.inference import OutputError

    with pytest.raises(OutputError) as raised:
        export_program(nn.Linear(4, 2), torch.randn(2, 4), tmp_path / "m.pt2")
    assert str(raised.value) == f"cannot write {tmp_path / 'm.pt2'}: No space left on device"
    assert list(tmp_path.iterdir()) == []
