"""Ship an image model as an ONNX file or a ``torch.export`` program, checked before it is kept.

Two formats (:data:`FORMATS`):

- ``onnx`` (``.onnx``): for onnxruntime, TensorRT, OpenVINO and the like. Written by
  PyTorch's torch.export-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``, the
  default since PyTorch 2.9): the graph is captured by ``torch.export`` as for the other
  format, translated op by op with onnxscript and optimised (constant folding, dead code).
  The TorchScript-based exporter (``dynamo=False``) is not used: it is deprecated, traces
  Python control flow into constants without saying so, and takes its dynamic axes in a
  different form. ``opset=None`` takes the exporter's default (opset 20 with PyTorch 2.14);
  the exporter implements opset 18 and newer, and asking for an older one converts the
  model afterwards, which fails for some operators. Weights over 2 GB go to a
  ``<file>.data`` file beside the model (ONNX's protobuf limit), which must travel with it.
  The input is named ``images``, the output ``logits``.
- ``torch_export`` (``.pt2``): ``torch.export.export`` + ``torch.export.save``, for
  PyTorch without the model's Python code (``torch.export.load(path).module()``), AOTInductor
  or ExecuTorch.

Both have a **dynamic batch dimension**; channels, height and width are fixed at the
example's. PyTorch specialises a dimension of size 1 to the constant 1, so an example with
one image is traced as two (the same image twice); the artifact still takes any batch size.

Every artifact is **validated before it is kept**: it is loaded back from the file and run
(onnxruntime's CPU provider for ONNX, the loaded program for ``torch_export``) on random
batches of a size other than the traced one, and compared with the eager model; a maximum
absolute difference above ``atol`` (``1e-4``) is an :class:`ExportError`. Files are written
into a temporary folder beside ``path`` and renamed into place only then, so a failure
leaves no file behind.

Every ONNX file also **describes itself** in its ``metadata_props`` (string keys and values;
onnxruntime reads them back as ``session.get_modelmeta().custom_metadata_map``), so that a
program with nothing but the file, numpy and PIL classifies an image as ``zoo-predict``
does (``docs/inference.md`` has such a program). Every file has :func:`onnx_metadata`'s
keys: ``model`` (the registry name; the class name unless ``name`` is given),
``zoo_version``, ``input_name``, ``output_name`` and ``input_shape`` (JSON,
``["batch", C, H, W]``). ``zoo-export`` adds :func:`image_metadata`'s, read off the very
transform ``zoo-predict`` applies (the checkpoint's ``ImageInputs.transform()``), in the order
they apply:

- ``input_layout`` (``NCHW``) and ``input_channels``;
- ``image_mode``: the PIL mode the image is converted to (``L`` or ``RGB``; ``zoo-predict``
  also composites transparent pixels on white);
- ``resize_size``, ``resize_interpolation`` (a torchvision ``InterpolationMode`` value, e.g.
  ``bilinear``), ``resize_antialias`` (JSON): the shorter side is resized to ``resize_size``,
  the longer to ``int(resize_size * long / short)``;
- ``center_crop_size``: then the central square of that side is kept (offsets rounded as
  Python's ``round`` does);
- ``scale``: the 8-bit pixel values are multiplied by it (``1/255``: values in [0, 1]);
- ``mean``, ``std`` (JSON lists, one per channel): then ``(x - mean) / std``;
- ``class_names`` (a JSON list): the name of each output index, in index order.

Inversion (``zoo-predict invert=true``, for dark-on-light drawings given to a digits or MNIST
checkpoint) is the caller's choice, not the checkpoint's, and is not in the metadata. The
file's ``doc_string`` says the same in a sentence. ``torch_export`` programs carry the same
keys but ``input_name`` and ``output_name`` (a program's input is its ``forward``'s argument),
as the JSON object of the extra file ``zoo_metadata.json`` (the archive member
``<archive>/extra/zoo_metadata.json``): :func:`program_metadata` reads it straight from the
zip archive. It never calls ``torch.export.load``, which unpickles, with no restriction, any
weight the archive marks as pickled: a ``.pt2`` from elsewhere can run code when loaded.
The only ``torch.export.load`` here reads back the file :func:`export_program` has just
written into its own temporary folder.

Files are written whole or not at all: an export is serialised, written into a private
temporary folder beside the destination and renamed into place only once it has passed its
check, so a full disk or a file-size limit leaves the previous file (or none) and no part. A
destination that cannot be written (a folder, a path under a regular file, a read-only
folder) is a :class:`zoo.inference.OutputError` naming it, given before anything is exported.

Not supported (an error before anything is written): sequence-to-sequence models, whose
greedy and beam-search decoding is a Python loop that stops on the data (``zoo-predict``
and ``zoo-translate`` decode checkpoints); ONNX without the ``export`` extra installed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import torch
from PIL import Image
from torch import nn
from torch.utils._pytree import tree_leaves
from torchvision.transforms import InterpolationMode, v2

from zoo import __version__
from zoo.data.images import to_mode
from zoo.data.inputs import ImageInputs
from zoo.errors import UnknownNameError, ZooError
from zoo.inference import Runner, Trained, cannot_write, check_output
from zoo.models.base import Seq2SeqModel
from zoo.perf import choose_precision

FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}  # format -> file suffix
DEFAULT_ATOL = 1e-4
INSTALL_HINT = 'pip install -e ".[export]"'


class ExportError(ZooError):
    """A model cannot be exported in the asked format, or its export does not match it."""


@dataclass
class Exported:
    """A written and validated artifact."""

    path: Path
    format: str
    input_shape: tuple[int, ...]  # the traced example's; dimension 0 (batch) is dynamic
    max_abs_diff: float  # largest |artifact - eager| over the validation batches
    batch_sizes: tuple[int, ...]  # the batch sizes it was validated at
    opset: int | None = None  # ONNX only: the file's opset version


# -- checks -----------------------------------------------------------------------------


def check_format(format: str) -> str:
    """``format`` if it is known and its packages are installed, else :class:`ZooError`."""
    if format not in FORMATS:
        raise UnknownNameError("export format", str(format), FORMATS)
    if format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as err:
            raise ExportError(
                f"format=onnx needs onnx, onnxscript and onnxruntime ({err}); install them with {INSTALL_HINT}"
            ) from None
    return format


def check_exportable(net: nn.Module, format: str, name: str | None = None) -> None:
    """Refuse what :func:`export_model` cannot export, before anything is written."""
    check_format(format)
    if isinstance(net, Seq2SeqModel):
        raise ExportError(
            f"{name or type(net).__name__} is a sequence-to-sequence model: its greedy and beam-search "
            f"decoding is a Python loop that stops on the data, which format={format} cannot hold. "
            f"Decode its checkpoints with zoo-predict or zoo-translate instead"
        )


def default_path(ckpt_path: str | Path, format: str) -> Path:
    """Where an export of ``ckpt_path`` goes by default: beside it, ``<stem>.onnx`` / ``<stem>.pt2``."""
    return Path(ckpt_path).with_suffix(FORMATS[check_format(format)])


# -- metadata ---------------------------------------------------------------------------

# The steps image_metadata describes, in the order a predict transform applies them.
_PREDICT_STEPS = ("to_mode", "ToImage", "ToDtype", "Resize", "CenterCrop", "Normalize")


def _describe_step(step: Any) -> tuple[str, dict[str, str]]:
    """The kind of one predict-transform step (a name in :data:`_PREDICT_STEPS`) and its keys."""
    if isinstance(step, v2.Lambda) and isinstance(step.lambd, partial) and step.lambd.func is to_mode:
        # Run rather than re-derived: the mode is whatever to_mode converts an image to.
        return "to_mode", {"image_mode": step.lambd(Image.new("RGB", (1, 1))).mode}
    if isinstance(step, v2.ToImage):
        return "ToImage", {}
    if isinstance(step, v2.ToDtype) and step.dtype == torch.float32:
        return "ToDtype", {"scale": repr(1 / 255 if step.scale else 1.0)}  # from PIL's 8-bit pixels
    if isinstance(step, v2.Resize) and isinstance(step.interpolation, (str, InterpolationMode)) and (
        step.size is not None and len(step.size) == 1 and step.max_size is None  # the shorter side to size[0]
    ):
        return "Resize", {
            "resize_size": str(step.size[0]), "resize_interpolation": InterpolationMode(step.interpolation).value,
            "resize_antialias": json.dumps(bool(step.antialias)),
        }  # fmt: skip
    if isinstance(step, v2.CenterCrop) and step.size[0] == step.size[1]:
        return "CenterCrop", {"center_crop_size": str(step.size[0])}
    if isinstance(step, v2.Normalize):
        return "Normalize", {key: json.dumps([float(v) for v in getattr(step, key)]) for key in ("mean", "std")}
    return repr(step), {}


def image_metadata(inputs: ImageInputs) -> dict[str, str]:
    """The preprocessing and class names of an image checkpoint, as ONNX metadata (see the module docs).

    Read off ``inputs.transform()`` and ``inputs.class_names`` (:mod:`zoo.data.inputs`), the
    objects ``zoo-predict`` classifies with, so the file says what the checkpoint does.

    Raises:
        ExportError: the predict transform is not ``to_mode -> ToImage -> ToDtype -> Resize
            (shorter side) -> CenterCrop (square) -> Normalize``, which the keys cannot describe.
    """
    transform = inputs.transform()
    steps = transform.transforms if isinstance(transform, v2.Compose) else [transform]
    described = [_describe_step(step) for step in steps]
    kinds = tuple(kind for kind, _ in described)
    if kinds != _PREDICT_STEPS:
        raise ExportError(
            f"the ONNX metadata describes predict transforms of the steps {' -> '.join(_PREDICT_STEPS)} "
            f"(one square crop, a resize of the shorter side); the checkpoint's is "
            f"{' -> '.join(kinds)}"
        )
    metadata = {"input_layout": "NCHW", "input_channels": str(inputs.in_channels)}
    for _, keys in described:
        metadata.update(keys)
    metadata["class_names"] = json.dumps(list(inputs.class_names))
    return metadata


def onnx_metadata(
    name: str, example: torch.Tensor, extra: dict[str, str] | None = None, io_names: bool = True
) -> dict[str, str]:
    """The ``metadata_props`` of every ONNX file :func:`export_onnx` writes: what it is and
    which zoo wrote it, its input's and output's names (unless not ``io_names``: a
    ``torch.export`` program's) and the input's shape, then ``extra``."""
    metadata = {"model": name, "zoo_version": __version__}
    if io_names:
        metadata.update(input_name="images", output_name="logits")
    metadata["input_shape"] = json.dumps(["batch", *example.shape[1:]])
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ExportError(f"metadata keys and values are strings, got {key!r}: {value!r}")
        metadata[key] = value
    return metadata


PROGRAM_METADATA = "zoo_metadata.json"  # the extra file of a .pt2 program that holds its metadata
# Limits of what program_metadata reads from a file it is given: far above what zoo-export
# writes (the metadata of 100,000 class names fits in 1 MiB; the largest model has ~1,000
# archive members), far below what would cost real memory to parse.
MAX_METADATA_BYTES = 1 << 20
MAX_ARCHIVE_MEMBERS = 100_000
MAX_CENTRAL_DIRECTORY_BYTES = 64 << 20


def _central_directory(file: IO[bytes]) -> tuple[int, int]:
    """The number of members and the size in bytes of a zip file's central directory, from
    its end record (zip64 too): read before :mod:`zipfile` parses the directory into memory."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - 22 - 0xFFFF))  # the end record: 22 bytes and a comment of up to 64 KiB
    tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise zipfile.BadZipFile("File is not a zip file")
    *_, members, directory_bytes, _, _ = struct.unpack("<4s4H2LH", tail[at : at + 22])
    if members == 0xFFFF or directory_bytes == 0xFFFFFFFF:  # zip64: the real counts are in its own end record
        locator = tail[at - 20 : at] if at >= 20 else b""
        if locator[:4] != b"PK\x06\x07":
            raise zipfile.BadZipFile("a zip64 archive without its end record locator")
        file.seek(struct.unpack("<Q", locator[8:16])[0])
        record = file.read(56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            raise zipfile.BadZipFile("a zip64 archive without its end record")
        members, directory_bytes = struct.unpack("<2Q", record[32:48])
    return members, directory_bytes


def program_metadata(path: str | Path) -> dict[str, str]:
    """The metadata :func:`export_program` wrote into a ``.pt2`` file (``{}`` if it has none).

    Read from the zip archive with :mod:`zipfile` alone (the member
    ``<archive>/extra/zoo_metadata.json``, ``<archive>`` being the folder of its first member,
    as PyTorch reads it), never with ``torch.export.load``, which unpickles any weight the
    file marks as pickled: nothing in the file runs, whoever wrote it.

    Raises:
        ExportError: not a ``.pt2`` archive, more than :data:`MAX_ARCHIVE_MEMBERS` members,
            metadata over :data:`MAX_METADATA_BYTES` or not a JSON object of strings.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            members, directory_bytes = _central_directory(file)
            if members > MAX_ARCHIVE_MEMBERS or directory_bytes > MAX_CENTRAL_DIRECTORY_BYTES:
                raise ExportError(
                    f"{path} is refused: its zip directory lists {members} members in {directory_bytes} bytes "
                    f"(a torch.export program has at most {MAX_ARCHIVE_MEMBERS} in {MAX_CENTRAL_DIRECTORY_BYTES})"
                )
            with zipfile.ZipFile(file) as archive:
                names = archive.namelist()
                top = names[0].partition("/")[0] if names else ""
                if f"{top}/archive_format" not in names:
                    raise ExportError(f"{path} is not a torch.export program (.pt2): a zip without archive_format")
                try:
                    info = archive.getinfo(f"{top}/extra/{PROGRAM_METADATA}")
                except KeyError:
                    return {}
                if info.file_size > MAX_METADATA_BYTES:
                    raise ExportError(
                        f"{path} is refused: its {PROGRAM_METADATA} is {info.file_size} bytes, over the limit of "
                        f"{MAX_METADATA_BYTES}"
                    )
                with archive.open(info) as member:
                    data = member.read(MAX_METADATA_BYTES + 1)  # the declared size may lie
            if len(data) > MAX_METADATA_BYTES:
                raise ExportError(f"{path} is refused: its {PROGRAM_METADATA} is over {MAX_METADATA_BYTES} bytes")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, RuntimeError, NotImplementedError, zlib.error) as err:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression
        raise ExportError(f"{path} is not a readable torch.export program (.pt2): {err}") from None
    except OSError as err:
        raise ExportError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        metadata = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ExportError(f"{path}: its {PROGRAM_METADATA} is not JSON ({type(err).__name__})") from None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ExportError(f"{path}: its {PROGRAM_METADATA} is not a JSON object of strings")
    return metadata


def _doc_string(metadata: dict[str, str]) -> str:
    """One sentence for viewers such as Netron, which show the model's ``doc_string``."""
    text = (
        f"{metadata['model']} exported by zoo {metadata['zoo_version']}: input {metadata['input_name']!r} "
        f"{metadata['input_shape']} float32, output {metadata['output_name']!r}."
    )
    if {"image_mode", "resize_size", "resize_interpolation", "center_crop_size", "scale"} <= metadata.keys():
        text += (
            f" Preprocessing (metadata_props): convert to PIL mode {metadata['image_mode']}, resize the shorter "
            f"side to {metadata['resize_size']} ({metadata['resize_interpolation']}), keep the central "
            f"{metadata['center_crop_size']} square, multiply by {metadata['scale']}, subtract mean, divide by std;"
            f" output i is class_names[i]."
        )
    return text


# -- helpers ----------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    """The first line of the innermost cause: the exporters wrap the real reason in advice."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # terminal colours
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


@contextlib.contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    """Export the inference graph (dropout off, batch-norm running statistics), then restore."""
    training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(training)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OS error in the block (a full disk, a file-size limit, a read-only folder) as the
    :class:`~zoo.inference.OutputError` ``cannot write <path>: <reason>``."""
    try:
        yield
    except OSError as err:
        raise cannot_write(path, err) from None


@contextlib.contextmanager
def _written_atomically(path: Path) -> Iterator[Path]:
    """A path with ``path``'s name in a private temporary folder beside it (``mkdtemp``: only
    this user can write there); everything written there is renamed next to ``path`` only
    if the block succeeds (ONNX may add ``<name>.data``)."""
    path = check_output(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp / path.name
        with _writing(path):
            for file in sorted(tmp.iterdir()):
                os.replace(file, path.parent / file.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _traced_example(net: nn.Module, example: torch.Tensor) -> torch.Tensor:
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or example.shape[0] < 1:
        raise ExportError(f"the example must be a batch tensor (B, ...), got {getattr(example, 'shape', example)!r}")
    weight = next(net.parameters(), None)
    example = example.to(weight.device) if weight is not None else example
    # A size-1 dimension would be specialised to the constant 1 (PyTorch's 0/1 rule).
    return example.repeat(2, *[1] * (example.dim() - 1)) if example.shape[0] == 1 else example


def _validate(
    run: Callable[[torch.Tensor], list[torch.Tensor]], net: nn.Module, example: torch.Tensor, atol: float, what: str,
) -> tuple[float, tuple[int, ...]]:  # fmt: skip
    """Max |run(x) - net(x)| over random batches of 1 and ``B + 1`` images (``B``: traced)."""
    generator = torch.Generator().manual_seed(0)
    batch_sizes = (1, example.shape[0] + 1)
    worst = 0.0
    for n in batch_sizes:
        x = torch.randn(n, *example.shape[1:], generator=generator).to(example.device)
        with torch.no_grad():
            expected = [t.detach().float().cpu() for t in tree_leaves(net(x))]
        got = [t.float().cpu() for t in run(x)]
        if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
            raise ExportError(
                f"{what} gives outputs of shapes {[tuple(g.shape) for g in got]} at batch size {n}, "
                f"the model {[tuple(e.shape) for e in expected]}"
            )
        for g, e in zip(got, expected):
            worst = max(worst, (g - e).abs().max().item())
    if not worst <= atol:  # also catches NaN
        raise ExportError(
            f"{what} differs from the eager model by up to {worst:.3g} (allowed: {atol:g}) "
            f"at batch sizes {batch_sizes}; nothing was written"
        )
    return worst, batch_sizes


# -- ONNX Runtime as an inference backend ---------------------------------------------


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every graph nested in its nodes' attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for inner in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _graphs(inner)


def _external_tensors(model: Any) -> list[str]:
    """The names of the tensors of an ONNX ``model`` whose data lives in another file."""
    from onnx import TensorProto

    names = []
    for graph in _graphs(model.graph):
        tensors = [*graph.initializer, *(s.values for s in graph.sparse_initializer)]
        for node in graph.node:
            tensors += [t for a in node.attribute for t in ([a.t] if a.HasField("t") else []) + list(a.tensors)]
        names += [t.name or "(unnamed)" for t in tensors if t.data_location == TensorProto.EXTERNAL]
    return names


def onnx_session(path: str | Path) -> Any:
    """An ONNX Runtime session (CPU provider, torch's thread count) of the ONNX file at ``path``,
    read the one safe way: the file is parsed as a protobuf message, refused if any of its
    tensors keeps its data in another file (ONNX's "external data" names a path, relative or
    not, that the runtime would read: a file from elsewhere could make it read any file), and
    given to ONNX Runtime as bytes, so that nothing else is opened.

    Raises:
        ExportError: the packages are missing, the file is not an ONNX model, it names
            external data, or ONNX Runtime refuses it; one line naming the file.
    """
    check_format("onnx")
    import onnx
    import onnxruntime as ort

    path = Path(path)
    try:
        data = path.read_bytes()
        model = onnx.ModelProto.FromString(data)
    except OSError as err:
        raise ExportError(f"cannot read {path}: {err.strerror or err}") from None
    except Exception as err:  # protobuf's DecodeError: not an ONNX model
        raise ExportError(f"cannot read {path} as an ONNX model: {_first_line(err)}") from None
    if external := _external_tensors(model):
        raise ExportError(
            f"{path} is refused: its tensors {', '.join(external[:3])}{' ...' if len(external) > 3 else ''} keep their "
            f"data in other files (ONNX external data), which zoo does not follow; export the model as one file"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])  # checked bytes
    except Exception as err:  # onnxruntime's own error types are not exported
        raise ExportError(f"cannot read {path} with onnxruntime: {_first_line(err)}") from None


def choose_backend(trained: Trained, onnx: str | Path | None = None) -> tuple[str, str]:
    """``zoo-predict backend=auto``: ``"torch"`` or ``"onnxruntime"`` for an image checkpoint,
    and why, by the rule docs/benchmarks/inference.md states from its measurements:

    1. torch, where training's precision rule picks bfloat16 for the network on its device (a
       fast-path CNN on hardware with native bfloat16; ``precision=auto`` then runs bf16 +
       channels-last, the fastest backend at batch 32 for most CNNs measured);
    2. else ONNX Runtime, on a CPU where the checkpoint's ONNX file exists (``onnx``, or
       ``<checkpoint>.onnx`` where ``zoo-export`` writes) and onnxruntime is installed (faster
       than eager fp32 at batch 32 for every CNN measured);
    3. else torch (fp32).
    """
    device = next(trained.net.parameters()).device
    chosen, why = choose_precision("auto", device.type, trained.net)
    if str(chosen).startswith("bf16"):
        return "torch", f"auto: {trained.model_name} runs bf16 + channels_last on this {device.type.upper()}"
    path = Path(onnx) if onnx else default_path(trained.path, "onnx")
    if device.type != "cpu":
        return "torch", f"auto: ONNX Runtime runs on the CPU, the network on {device}"
    if not path.is_file():
        return "torch", f"auto: no ONNX export at {path} (zoo-export writes it)"
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch", f"auto: onnxruntime is not installed ({INSTALL_HINT})"
    return "onnxruntime", f"auto: torch would run fp32 ({why.removeprefix('auto: ')}) and {path.name} is exported"


def onnx_runner(trained: Trained, path: str | Path | None = None) -> Runner:
    """The exported ONNX file of a checkpoint run by ONNX Runtime (CPU), for
    :func:`zoo.inference.classify` (``zoo-predict backend=onnxruntime``): the checkpoint gives
    the preprocessing and the class names, the file the logits.

    ``path`` defaults to where ``zoo-export`` writes (:func:`default_path`). The file must be
    this checkpoint's export, read by :func:`onnx_session`: its metadata must be what ``zoo-export`` would write now (model,
    input shape, preprocessing, class names) and its logits the checkpoint's network's on a
    random batch (within :data:`DEFAULT_ATOL`), else an :class:`ExportError` says to export
    again. ONNX Runtime uses torch's thread count (``torch.get_num_threads()``).
    """
    path = Path(path) if path else default_path(trained.path, "onnx")
    if not path.is_file():
        raise ExportError(
            f"backend=onnxruntime runs {path}, which is not a file: write it with zoo-export ckpt_path={trained.path} "
            f"(or give onnx=<file>)"
        )
    session = onnx_session(path)
    c, s = trained.inputs.in_channels, trained.inputs.image_size
    expected = onnx_metadata(trained.model_name, torch.empty(1, c, s, s), image_metadata(trained.inputs))
    written = session.get_modelmeta().custom_metadata_map
    differ = sorted(key for key, value in expected.items() if key != "zoo_version" and written.get(key) != value)
    if differ:
        raise ExportError(
            f"{path} is not the export of {trained.path}: its {', '.join(differ)} differ; "
            f"export it again with zoo-export ckpt_path={trained.path}"
        )

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["logits"], {"images": x.cpu().numpy()})[0])

    x = torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (forward(x) - trained.net(x.to(next(trained.net.parameters()).device)).float().cpu()).abs().max().item()
    if diff > DEFAULT_ATOL:
        raise ExportError(
            f"{path} is not the export of {trained.path}: its logits differ from the checkpoint's by up to {diff:.3g}; "
            f"export it again with zoo-export ckpt_path={trained.path}"
        )
    return Runner(forward, f"onnxruntime {importlib.metadata.version('onnxruntime')} (CPU, {torch.get_num_threads()} threads), {path}")


# -- exporters --------------------------------------------------------------------------


def export_onnx(
    net: nn.Module, example: torch.Tensor, path: str | Path, *, opset: int | None = None,
    atol: float = DEFAULT_ATOL, name: str | None = None, metadata: dict[str, str] | None = None,
) -> Exported:  # fmt: skip
    """Write ``net`` as an ONNX file with a dynamic batch dimension and check it with onnxruntime.

    The file's ``metadata_props`` are :func:`onnx_metadata`'s (with ``metadata``, e.g.
    :func:`image_metadata`'s), checked as onnxruntime reads them back.

    Args:
        net: An image model (any module taking one ``(B, C, H, W)`` tensor); exported in
            eval mode, its mode is restored afterwards.
        example: A batch of the input size to export, e.g. ``net.example_inputs()[0]``.
        path: The ``.onnx`` file to write (its folder is created).
        opset: ONNX opset version; ``None`` is the exporter's default (see the module docs).
        atol: Largest absolute difference to the eager model that passes validation.
        name: The model's name in error messages and the metadata (default: its class name).
        metadata: More ``metadata_props`` (string keys and values).

    Returns:
        The written file and the validation's maximum absolute difference.

    Raises:
        ExportError: seq2seq model, missing packages, an export failure (naming the model
            and the first line of the exporter's error) or a failed validation.
        zoo.inference.OutputError: ``path`` cannot be written (a folder, a path under a
            regular file, a read-only folder: before anything is exported; a full disk or a
            file-size limit). No file is left behind in any of these cases.
    """
    check_exportable(net, "onnx", name)
    import onnxruntime as ort

    name, path = name or type(net).__name__, Path(path)
    with _eval_mode(net):
        x = _traced_example(net, example)
        props = onnx_metadata(name, x, metadata)
        with _written_atomically(path) as tmp:
            try:
                program = torch.onnx.export(
                    net, (x,), None, dynamo=True, opset_version=opset, verbose=False,
                    dynamic_shapes=({0: torch.export.Dim("batch")},), input_names=["images"], output_names=["logits"],
                )  # fmt: skip
                program.model.metadata_props.update(props)
                program.model.doc_string = _doc_string(props)
            except Exception as err:
                raise ExportError(f"{name} cannot be exported to onnx: {_first_line(err)}") from err
            with _writing(path):
                program.save(tmp)
            # Read back: the file just written into this export's own temporary folder.
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: no notes about constant folding
            session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])  # own file
            input_name = session.get_inputs()[0].name
            if session.get_modelmeta().custom_metadata_map != props:
                raise ExportError(f"the ONNX export of {name} does not read back the metadata written into it")

            def run(batch: torch.Tensor) -> list[torch.Tensor]:
                return [torch.from_numpy(y) for y in session.run(None, {input_name: batch.cpu().numpy()})]

            diff, batch_sizes = _validate(run, net, x, atol, f"the ONNX export of {name} (onnxruntime)")
            del session  # let go of the file before it is renamed
    return Exported(path, "onnx", tuple(x.shape), diff, batch_sizes, program.model.opset_imports.get(""))


def export_program(
    net: nn.Module, example: torch.Tensor, path: str | Path, *, atol: float = DEFAULT_ATOL, name: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Exported:
    """Write ``net`` as a ``torch.export`` program (``.pt2``) with a dynamic batch dimension.

    The file is loaded back with ``torch.export.load(path).module()`` and compared with the
    eager model. Its extra file ``zoo_metadata.json`` holds :func:`onnx_metadata`'s keys but
    the input and output names, with ``metadata`` (:func:`program_metadata` reads it back).
    Arguments, return value and errors as in :func:`export_onnx`.
    """
    check_exportable(net, "torch_export", name)
    name, path = name or type(net).__name__, Path(path)
    with _eval_mode(net):
        x = _traced_example(net, example)
        props = onnx_metadata(name, x, metadata, io_names=False)
        with _written_atomically(path) as tmp:
            try:
                program = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
                # Into memory first: PyTorch's zip writer aborts the whole process (an error in
                # a destructor) when a file write fails, e.g. on a full disk.
                serialized = io.BytesIO()
                torch.export.save(program, serialized, extra_files={PROGRAM_METADATA: json.dumps(props)})
            except Exception as err:
                raise ExportError(f"{name} cannot be exported to torch_export: {_first_line(err)}") from err
            with _writing(path), tmp.open("wb") as file:
                file.write(serialized.getbuffer())
            del serialized
            # Read back: the file just written into this export's own temporary folder, never a
            # user's file (torch.export.load unpickles what a .pt2 marks as pickled).
            extra = {PROGRAM_METADATA: ""}
            module = torch.export.load(tmp, extra_files=extra).module()  # own file
            if json.loads(extra[PROGRAM_METADATA] or "{}") != props or program_metadata(tmp) != props:
                raise ExportError(f"the torch.export program of {name} does not read back the metadata written into it")

            def run(batch: torch.Tensor) -> list[torch.Tensor]:
                with torch.no_grad():
                    return tree_leaves(module(batch))

            diff, batch_sizes = _validate(run, net, x, atol, f"the torch.export program of {name}")
    return Exported(path, "torch_export", tuple(x.shape), diff, batch_sizes)


def export_model(
    net: nn.Module, example: torch.Tensor, path: str | Path, format: str, *, opset: int | None = None,
    atol: float = DEFAULT_ATOL, name: str | None = None, metadata: dict[str, str] | None = None,
) -> Exported:  # fmt: skip
    """:func:`export_onnx` or :func:`export_program`, by ``format`` (a key of :data:`FORMATS`)."""
    check_exportable(net, format, name)
    if format == "onnx":
        return export_onnx(net, example, path, opset=opset, atol=atol, name=name, metadata=metadata)
    if opset is not None:
        raise ExportError(f"opset applies to format=onnx only, not to format={format}")
    return export_program(net, example, path, atol=atol, name=name, metadata=metadata)
