"""Files from elsewhere are read without running anything in them, and output is safe to print.

A ``.pt2`` program can mark a weight as pickled, and ``torch.export.load`` then unpickles it
with no restriction: these tests craft such a file for real (one of zoo's own exports, with
its first weight rewritten as a pickle that creates a file), show that ``torch.export.load``
runs it, and that zoo's readers never do.
"""

from __future__ import annotations

import ast
import errno
import io
import json
import operator
import os
import pathlib
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from tests.helpers import QUIET, compose_config, run_main

from zoo import export as exporting
from zoo.checkpoint import CheckpointError, load_file
from zoo.cli.train import train
from zoo.export import ExportError, export_program, program_metadata
from zoo.models.pretrained import load_pretrained
from zoo.models.weights import WeightsError
from zoo.inference import OutputError, output_writer
from zoo.sanitize import printable

SRC = Path(__file__).resolve().parents[1] / "src" / "zoo"
METADATA = {"class_names": json.dumps(["cat", "dog", "owl"])}


class _Touch:
    """Unpickled: ``pathlib.Path(path).touch()``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


class _TouchThenTensor:
    """Unpickled: creates ``path``, then is ``tensor``: the program still loads and runs."""

    def __init__(self, path: Path, tensor: torch.Tensor):
        self.path, self.tensor = path, tensor

    def __reduce__(self):
        return operator.getitem, ((_Touch(self.path), self.tensor), 1)


def poison_program(src: Path, dst: Path, sentinel: Path) -> None:
    """``src`` (a ``.pt2`` zoo-export wrote) as ``dst``, its first weight flagged ``use_pickle``
    (as torch.export.save flags the tensors it cannot write raw) with a payload that creates ``sentinel``."""
    with zipfile.ZipFile(src) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    (config_name,) = [n for n in members if n.endswith("/data/weights/model_weights_config.json")]
    config = json.loads(members[config_name])
    fqn, meta = next(iter(config["config"].items()))
    meta["use_pickle"] = True
    shape = [size["as_int"] for size in meta["tensor_meta"]["sizes"]]
    payload = io.BytesIO()
    torch.save(_TouchThenTensor(sentinel, nn.Parameter(torch.zeros(shape))), payload)
    members[config_name] = json.dumps(config).encode()
    members[f"{config_name.rsplit('/', 1)[0]}/{meta['path_name']}"] = payload.getvalue()
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    """A zoo export of a tiny network, and the same file made hostile."""
    folder = tmp_path_factory.mktemp("programs")
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    export_program(net, torch.randn(2, 1, 8, 8), folder / "good.pt2", name="tiny", metadata=METADATA)
    poison_program(folder / "good.pt2", folder / "hostile.pt2", folder / "sentinel")
    return {"good": folder / "good.pt2", "hostile": folder / "hostile.pt2", "sentinel": folder / "sentinel"}


def _expected_metadata() -> dict[str, str]:
    return {"model": "tiny", "zoo_version": exporting.__version__, "input_shape": '["batch", 1, 8, 8]', **METADATA}


# -- the crafted .pt2 ----------------------------------------------------------------------


def test_the_crafted_program_runs_its_code_in_torch_export_load(programs, tmp_path):
    """The test file is live: the unrestricted reader runs the payload and still loads normally."""
    sentinel = tmp_path / "ran"
    poison_program(programs["good"], tmp_path / "live.pt2", sentinel)
    extra = {exporting.PROGRAM_METADATA: ""}
    program = torch.export.load(tmp_path / "live.pt2", extra_files=extra)
    assert sentinel.exists()
    assert json.loads(extra[exporting.PROGRAM_METADATA]) == _expected_metadata()
    assert program.module()(torch.randn(3, 1, 8, 8)).shape == (3, 3)


def test_program_metadata_reads_the_crafted_program_without_running_it(programs):
    assert program_metadata(programs["good"]) == _expected_metadata()
    assert program_metadata(programs["hostile"]) == _expected_metadata()
    assert not programs["sentinel"].exists()


def _rewritten(src: Path, dst: Path, change: dict[str, bytes | None]) -> Path:
    with zipfile.ZipFile(src) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    top = next(iter(members)).partition("/")[0]
    for name, data in change.items():
        members.pop(f"{top}/{name}", None)
        if data is not None:
            members[f"{top}/{name}"] = data
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return dst


def test_metadata_over_the_limit_is_refused_in_one_line_and_the_limit_itself_is_read(programs, tmp_path):
    limit = exporting.MAX_METADATA_BYTES
    padding = limit - len(json.dumps({"x": ""}))
    at_limit = json.dumps({"x": "a" * padding}).encode()
    assert len(at_limit) == limit
    path = _rewritten(programs["good"], tmp_path / "at_limit.pt2", {"extra/zoo_metadata.json": at_limit})
    assert program_metadata(path) == {"x": "a" * padding}

    over = json.dumps({"x": "a" * (padding + 1)}).encode()  # deflated: a few KiB on disk
    path = _rewritten(programs["good"], tmp_path / "over.pt2", {"extra/zoo_metadata.json": over})
    assert path.stat().st_size < 100_000
    with pytest.raises(ExportError) as err:
        program_metadata(path)
    assert str(err.value) == f"{path} is refused: its zoo_metadata.json is {limit + 1} bytes, over the limit of {limit}"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[1, 2]", "is not a JSON object of strings"),
        (b'{"a": 1}', "is not a JSON object of strings"),
        (b"{not json", "is not JSON (JSONDecodeError)"),
        (b"[" * 100_000, "is not JSON (RecursionError)"),
        (b"\xff\xfe", "is not JSON (UnicodeDecodeError)"),
    ],
)
def test_metadata_that_is_not_a_json_object_of_strings_is_one_line(programs, tmp_path, content, message):
    path = _rewritten(programs["good"], tmp_path / "odd.pt2", {"extra/zoo_metadata.json": content})
    with pytest.raises(ExportError) as err:
        program_metadata(path)
    assert str(err.value) == f"{path}: its zoo_metadata.json {message}"


def test_a_program_without_metadata_reads_as_empty_and_other_files_are_refused(programs, tmp_path):
    bare = _rewritten(programs["good"], tmp_path / "bare.pt2", {"extra/zoo_metadata.json": None})
    assert program_metadata(bare) == {}
    not_pt2 = _rewritten(programs["good"], tmp_path / "other.zip", {"archive_format": None})
    with pytest.raises(ExportError) as err:
        program_metadata(not_pt2)
    assert str(err.value) == f"{not_pt2} is not a torch.export program (.pt2): a zip without archive_format"
    (tmp_path / "text.pt2").write_text("hello")
    with pytest.raises(ExportError) as err:
        program_metadata(tmp_path / "text.pt2")
    assert str(err.value) == f"{tmp_path / 'text.pt2'} is not a readable torch.export program (.pt2): File is not a zip file"
    with pytest.raises(ExportError, match=f"cannot read {tmp_path}: Is a directory"):
        program_metadata(tmp_path)


def test_an_archive_with_too_many_members_is_refused_before_zipfile_reads_its_directory(programs, monkeypatch):
    with zipfile.ZipFile(programs["good"]) as archive:
        members = len(archive.infolist())
    monkeypatch.setattr(exporting, "MAX_ARCHIVE_MEMBERS", members)
    assert program_metadata(programs["good"]) == _expected_metadata()
    monkeypatch.setattr(exporting, "MAX_ARCHIVE_MEMBERS", members - 1)
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda self: opened.append(self))
    with pytest.raises(ExportError, match=f"is refused: its zip directory lists {members} members"):
        program_metadata(programs["good"])
    assert not opened


def test_the_member_count_of_a_zip64_archive_is_read_from_its_zip64_end_record(tmp_path, monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)  # zipfile writes the zip64 records for 3 members
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as archive:
        for name in "abc":
            archive.writestr(f"top/{name}", name)
    data = bytearray((tmp_path / "z.zip").read_bytes())
    at = data.rfind(b"PK\x05\x06")
    assert data[at - 20 : at - 16] == b"PK\x06\x07"  # the zip64 locator is there
    data[at + 8 : at + 12] = struct.pack("<2H", 0xFFFF, 0xFFFF)  # as when there are over 65,535 members
    with io.BytesIO(bytes(data)) as file:
        assert exporting._central_directory(file)[0] == 3


# -- exported models are not weights ----------------------------------------------------------


def _onnx_bytes() -> bytes:
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in "xy")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph).SerializeToString()


@pytest.mark.parametrize(
    "name, source, message",
    [
        ("hostile.pt2", "hostile", r"is a torch.export program \(.pt2\), not a checkpoint or weights file"),
        ("model.onnx", "onnx", r"is an ONNX model \(.onnx\), not a checkpoint or weights file"),
        ("renamed.pth", "hostile", "is not a readable checkpoint: a zip archive without torch.save's data.pkl"),
        ("renamed.ckpt", "hostile", "is not a readable checkpoint: a zip archive without torch.save's data.pkl"),
        ("onnx.pth", "onnx", "is not a readable checkpoint: not the tensors and plain containers"),
    ],
)
def test_exported_models_given_as_checkpoints_or_weights_are_refused_in_one_line(programs, tmp_path, name, source,
                                                                                 message):  # fmt: skip
    path = tmp_path / name
    path.write_bytes(programs["hostile"].read_bytes() if source == "hostile" else _onnx_bytes())
    with pytest.raises(CheckpointError, match=message):
        load_file(path)
    with pytest.raises(WeightsError, match=message):
        load_pretrained(str(path))
    for command, args in {
        "zoo-predict": [f"ckpt_path={path}", f"inputs={tmp_path}"],
        "zoo-eval": [f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'eval'}"],
    }.items():
        result = run_main(command, *args)
        assert result.returncode == 1
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert str(path.resolve()) in line and "Traceback" not in result.stderr
    assert not programs["sentinel"].exists()


# -- no reader that unpickles or follows ONNX external data ever sees a user's file -----------

# A call that reads back a file this process just wrote says so on its line; nothing else may
# reach these readers (the export's read-back of its own temporary file is the one use).
OWN_FILE = "# own file"
# ONNX Runtime given the bytes of a file checked to name no external data (zoo.export.onnx_session).
CHECKED_BYTES = "# checked bytes"
_UNSAFE = {
    "torch.export.load", "pickle.load", "pickle.loads", "pickle.Unpickler", "torch.jit.load",
    "torch.package.PackageImporter", "onnx.load", "onnx.load_model", "onnx.load_external_data_for_model", "ort.InferenceSession",
    "onnxruntime.InferenceSession", "dill.load", "joblib.load", "yaml.load", "yaml.unsafe_load",
}  # fmt: skip


def _dotted(node: ast.AST) -> str:
    return f"{_dotted(node.value)}.{node.attr}" if isinstance(node, ast.Attribute) else getattr(node, "id", "?")


def _calls(tree: ast.AST, function: str = "") -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.iter_child_nodes(tree):
        inner = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        if isinstance(node, ast.Call):
            found.append((function, node))
        found += _calls(node, inner)
    return found


def _calls_in_src() -> list[tuple[Path, str, ast.Call, bool]]:
    """Every call in ``src/zoo``: its file, function, node and the marker its line ends with (or "")."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for function, call in _calls(ast.parse(source, str(path))):
            line = lines[call.end_lineno - 1].rstrip()
            found.append((path, function, call, next((m for m in (OWN_FILE, CHECKED_BYTES) if line.endswith(m)), "")))
    return found


def test_no_module_gives_a_file_to_a_reader_that_unpickles_or_follows_external_data():
    offences = []
    for path, function, call, marker in _calls_in_src():
        name = _dotted(call.func)
        where = f"{path.relative_to(SRC)}:{call.lineno} {function}"
        if name in _UNSAFE and not marker:
            offences.append(f"{where}: {name}")
        if name in ("torch.load", "np.load", "numpy.load"):
            keywords = {k.arg: getattr(k.value, "value", None) for k in call.keywords}
            if name == "torch.load" and keywords.get("weights_only") is not True:
                offences.append(f"{where}: torch.load without weights_only=True")
            if name != "torch.load" and keywords.get("allow_pickle") is True:
                offences.append(f"{where}: {name}(allow_pickle=True)")
    assert not offences, offences


def test_the_own_file_readers_read_the_exports_own_temporary_file():
    calls = [(path, function, call, marker) for path, function, call, marker in _calls_in_src() if _dotted(call.func) in _UNSAFE]
    own = [(path, function, call) for path, function, call, marker in calls if marker == OWN_FILE]
    assert all("tmp" in ast.unparse(call.args[0]) for _, _, call in own)  # the path inside the export's mkdtemp folder
    assert sorted((path.name, function, _dotted(call.func)) for path, function, call in own) == [
        ("export.py", "export_onnx", "ort.InferenceSession"), ("export.py", "export_program", "torch.export.load"),
    ]  # fmt: skip
    # ... and the one door for any other ONNX file: the bytes it read and checked, not a path
    checked = [(path.name, function, _dotted(call.func), ast.unparse(call.args[0])) for path, function, call, marker in calls
               if marker == CHECKED_BYTES]  # fmt: skip
    assert checked == [("export.py", "onnx_session", "ort.InferenceSession", "data")]


def test_an_onnx_file_that_names_external_data_is_refused_before_onnxruntime_sees_it(tmp_path):
    from onnx import numpy_helper
    from onnx.external_data_helper import set_external_data

    from zoo.export import ExportError, onnx_session

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 16)
    weight = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "w")
    set_external_data(weight, location=str(secret))  # an absolute path: any file the user can read
    weight.ClearField("raw_data")
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [4]) for name in "xy")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], initializer=[weight])
    hostile = tmp_path / "hostile.onnx"
    hostile.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ExportError) as err:
        onnx_session(hostile)
    assert str(err.value) == (f"{hostile} is refused: its tensors w keep their data in other files (ONNX external data), "
                              f"which zoo does not follow; export the model as one file")  # fmt: skip
    (tmp_path / "plain.onnx").write_bytes(_onnx_bytes())
    assert onnx_session(tmp_path / "plain.onnx").run(None, {"x": np.ones(1, dtype=np.float32)})[0].tolist() == [1.0]
    (tmp_path / "noise.onnx").write_bytes(b"\xff\xfe not protobuf")
    with pytest.raises(ExportError, match=f"^cannot read {tmp_path / 'noise.onnx'} as an ONNX model: "):
        onnx_session(tmp_path / "noise.onnx")


# -- printing what files say ------------------------------------------------------------------


def test_printable_escapes_c0_del_and_c1_and_keeps_text():
    assert printable("\x1b[2J\x1b[31mcat") == "\\x1b[2J\\x1b[31mcat"
    assert printable("a\tb\nc\rd\x00") == "a\\x09b\\x0ac\\x0dd\\x00"
    assert printable("\x1f \x7e\x7f\x80\x9b\x9f\xa0") == "\\x1f ~\\x7f\\x80\\x9b\\x9f\xa0"  # boundaries; NBSP stays
    assert printable("кіт 猫 café") == "кіт 猫 café"


# -- whole-or-absent outputs ------------------------------------------------------------------


def test_an_output_that_fails_midway_leaves_the_old_file_and_no_part(tmp_path):
    path = tmp_path / "out.csv"
    path.write_bytes(b"old")
    with pytest.raises(OutputError) as err, output_writer(path) as file:
        file.write(b"new, half written")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(err.value) == f"cannot write {path}: No space left on device"
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    with output_writer(path) as file:
        file.write(b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


@pytest.mark.parametrize("case", ["a folder", "under a regular file", "deep under a regular file"])
def test_a_destination_that_cannot_be_a_file_is_refused_naming_it(tmp_path, case):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    path, reason = {
        "a folder": (tmp_path / "folder", "it is a folder; give a file name"),
        "under a regular file": (tmp_path / "file" / "out.csv", f"{tmp_path / 'file'} is a file, not a folder"),
        "deep under a regular file": (tmp_path / "file" / "a" / "out.csv", f"{tmp_path / 'file'} is a file, not a folder"),
    }[case]
    with pytest.raises(OutputError) as err, output_writer(path) as file:
        file.write(b"never")
    assert str(err.value) == f"cannot write {path}: {reason}"
    assert (tmp_path / "file").read_text() == "x" and not any((tmp_path / "folder").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_naming_it(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=f"cannot write {folder / 'out.csv'}: Permission denied"):
            with output_writer(folder / "out.csv") as file:
                file.write(b"never")
    finally:
        folder.chmod(0o755)


# -- zoo-translate: a checkpoint's vocabulary is printed escaped; heat maps whole or refused ---


@pytest.fixture(scope="module")
def hostile_vocab_checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("seq2seq")
    train(compose_config("train", run, [
        "model=seq2seq_gru", "data=reverse", "sched=none", "data.train_size=32", "data.val_size=8",
        "data.test_size=8", "model.hidden=16", "model.emb_dim=8", "trainer.max_epochs=1", "~logger", *QUIET,
    ]))  # fmt: skip
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["zoo_inputs"]  # what using the checkpoint reads
    tokens = state["tgt_vocab"]["tokens"]
    state["tgt_vocab"]["tokens"] = tokens[:4] + [f"\x1b[2J\x1b[31m{t}" for t in tokens[4:]]  # every output token
    torch.save(ckpt, run / "hostile.ckpt")
    return run / "hostile.ckpt"


def test_zoo_translate_prints_the_checkpoints_tokens_escaped(hostile_vocab_checkpoint, tmp_path):
    result = run_main("zoo-translate", f"ckpt_path={hostile_vocab_checkpoint}", "text=abc", "nbest=2")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\\x1b[2J\\x1b[31m" in result.stdout
    result = run_main("zoo-predict", f"ckpt_path={hostile_vocab_checkpoint}", "text=abc", f"csv={tmp_path / 'p.csv'}")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\\x1b[2J\\x1b[31m" in result.stdout
    assert "\x1b" not in (tmp_path / "p.csv").read_text() and "\\x1b[2J" in (tmp_path / "p.csv").read_text()


def test_zoo_translate_heatmaps_are_whole_and_a_bad_destination_is_one_line(hostile_vocab_checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    ckpt = f"ckpt_path={hostile_vocab_checkpoint}"
    result = run_main("zoo-translate", ckpt, "text=abc", f"heatmap={tmp_path / 'file' / 'a.png'}")
    assert result.returncode == 1 and result.stdout == ""  # refused before decoding
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert line == f"Error: cannot write {tmp_path / 'file' / 'a.png'}: {tmp_path / 'file'} is a file, not a folder"

    result = run_main("zoo-translate", ckpt, "text=abc", f"heatmap={tmp_path / 'a.png'}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "file"]  # no temporary file left
