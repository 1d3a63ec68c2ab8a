"""A trained model back from its checkpoint alone, for prediction, translation and export.

A ``zoo-train`` checkpoint holds everything needed to use the model without its data:
the task's hyper-parameters (network name and options), the weights, and what the
network's inputs need (:mod:`zoo.data.inputs`: the preprocessing and class names of image
data, the vocabularies of text data). :func:`load_trained` rebuilds the network and that
record, reading the file through :mod:`zoo.checkpoint` (``weights_only=True``, no import
targets) with torch and torchvision only: no data, no data module and no Lightning, whose
import alone costs seconds (checkpoints written before the record are read through their
data module, which imports it). The network is first built on the ``meta`` device and its
names and shapes compared with the file's weights (:func:`zoo.checkpoint.check_fits`), and
the recorded image size with what it takes: hyperparameters edited to describe a huge
network, or images far larger than it takes, are refused before anything is allocated.

What the commands write (``zoo-predict csv=``, ``zoo-translate heatmap=``, ``zoo-export
out=``) goes through :func:`output_writer`: whole or not at all, and a destination that
cannot be written is an :class:`OutputError` naming it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from PIL import ImageOps
from torch.utils.data import DataLoader, Dataset

from zoo.checkpoint import INPUTS_KEY, CheckpointError, check_fits, load_lightning_checkpoint
from zoo.data.images import read_image, to_mode
from zoo.data.inputs import ImageInputs, TextInputs, inputs_from_state
from zoo.data.vocab import EOS, EOS_IDX, Vocab, tokenize
from zoo.errors import ConfigError, DataError, ZooError, config_errors
from zoo.files import atomic_writer
from zoo.models import get_model
from zoo.models.base import Seq2SeqModel
from zoo.models.decoding import check_nbest
from zoo.models.factory import build_on_meta
from zoo.perf import choose_precision, require_cuda, use_channels_last

if TYPE_CHECKING:
    from zoo.data.base import DataModule

NET = "net."  # the task modules hold the network as .net: its weights are net.* in the checkpoint

log = logging.getLogger("zoo")


# -- output files ------------------------------------------------------------------------


class OutputError(ZooError):
    """An output file cannot be written where it was asked for; the message names it."""


def cannot_write(path: str | Path, err: OSError) -> OutputError:
    """``cannot write <path>: <the OS's reason>``, e.g. ``Permission denied``, ``File too large``."""
    return OutputError(f"cannot write {path}: {err.strerror or err}")


def check_output(path: str | Path) -> Path:
    """``path`` if a file could be written there, else :class:`OutputError` naming it:
    checked before the work whose result it receives, so a typo costs nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    ancestor = next((p for p in path.parents if p.exists()), None)  # the folder that the file or its folders go in
    if ancestor is not None and not ancestor.is_dir():
        raise OutputError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if ancestor is not None and not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: Permission denied ({ancestor})")
    return path


@contextlib.contextmanager
def output_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` whole when the block ends (:func:`zoo.files.atomic_writer`:
    a temporary file beside it, renamed): a full disk or a file-size limit leaves the previous
    file or none, never a part. Any OS error is an :class:`OutputError` naming ``path``."""
    path = check_output(path)
    try:
        with atomic_writer(path) as file:
            yield file
    except OSError as err:
        raise cannot_write(path, err) from None


@dataclass
class Trained:
    """A trained model back from its checkpoint (``zoo.load(path)``): the network in eval
    mode and what its inputs need (:mod:`zoo.data.inputs`: ``transform`` and ``classes`` for
    images, the vocabularies for text), rebuilt with torch and torchvision only."""

    net: torch.nn.Module
    inputs: ImageInputs | TextInputs
    path: Path
    hparams: dict[str, Any]  # the task's hyperparameters: hparams["model"] builds the network

    @property
    def model_name(self) -> str:
        """The network's registry name (``zoo.list_models()``)."""
        return self.hparams["model"]["name"]

    @property
    def transform(self) -> Any:
        """Image checkpoints: the evaluation transform of their data, PIL image -> (C, H, W)
        tensor (resize, crop, gray/colour, normalisation as in training); else ``None``."""
        return self.inputs.transform() if isinstance(self.inputs, ImageInputs) else None

    @property
    def classes(self) -> list[str] | None:
        """Image checkpoints: the class names in the order of the logits; else ``None``."""
        return list(self.inputs.class_names) if isinstance(self.inputs, ImageInputs) else None

    @property
    def vocabs(self) -> tuple[Vocab, Vocab] | None:
        """Sequence checkpoints: the source and target vocabularies; else ``None``."""
        return (self.inputs.src_vocab, self.inputs.tgt_vocab) if isinstance(self.inputs, TextInputs) else None


def restore_datamodule(ckpt: dict[str, Any], path: str | Path, **overrides: Any) -> DataModule:
    """The data module of a training checkpoint with its recorded state, without reading data.

    It imports the data modules, and so Lightning: ``zoo-eval`` tests a checkpoint on its own
    data with it, and checkpoints written before the :mod:`zoo.data.inputs` record are used
    through it.
    """
    from zoo.data.modules import build_datamodule  # Lightning, for these two uses only

    data_hparams = ckpt.get("datamodule_hyper_parameters")
    if not data_hparams:
        raise CheckpointError(f"{Path(path).resolve()} records no data settings; it was not written by zoo-train")
    settings = {**data_hparams, **overrides}
    with config_errors(f"data '{settings.get('name')}' of {path}"):
        datamodule = build_datamodule(**settings)
    state = ckpt.get(type(datamodule).__qualname__)
    if state:
        datamodule.load_state_dict(state)
    return datamodule


def checkpoint_inputs(ckpt: dict[str, Any], path: str | Path) -> ImageInputs | TextInputs:
    """What the network of a training checkpoint needs of its inputs: the record training
    wrote (:data:`zoo.checkpoint.INPUTS_KEY`), else, in checkpoints older than the record,
    what the data module rebuilt from its settings and state says."""
    if INPUTS_KEY in ckpt:
        return inputs_from_state(ckpt[INPUTS_KEY], path)
    inputs = restore_datamodule(ckpt, path).inputs()
    if inputs is None:
        raise CheckpointError(f"{Path(path).resolve()} holds no text vocabularies (was it trained on text pairs?)")
    return inputs


def check_network(net: torch.nn.Module, inputs: ImageInputs | TextInputs, name: str, path: str | Path) -> None:
    """Refuse a network that cannot take the inputs the checkpoint records: the wrong kind
    of model, or images of a size it cannot take (checked on the ``meta`` device)."""
    where = Path(path).resolve()
    if isinstance(inputs, TextInputs):
        if not isinstance(net, Seq2SeqModel):
            raise CheckpointError(f"{where}: model '{name}' is not a sequence-to-sequence model, but its data is text")
        return
    check_input = getattr(net, "check_input", None)
    if check_input is None:
        raise CheckpointError(f"{where}: model '{name}' is not an image model, but its data is images")
    c, s = inputs.in_channels, inputs.image_size
    try:
        check_input(torch.empty(1, c, s, s, device="meta"))
    except ValueError as err:
        raise CheckpointError(f"{where}: its data settings do not fit its network: {err} ({c}x{s}x{s} images)") from None


def check_checkpoint(ckpt: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], ImageInputs | TextInputs]:
    """The model options of a training checkpoint (``{"name": ..., **options}``) and what its
    inputs need, once its weights are known to fit the network they describe, and its inputs
    that network: refused otherwise, in one line naming ``path``, before anything is allocated."""
    inputs = checkpoint_inputs(ckpt, path)
    hparams = ckpt["hyper_parameters"]
    model = hparams.get("model") if isinstance(hparams, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise CheckpointError(f"{Path(path).resolve()} names no model in its hyperparameters")
    with config_errors(f"checkpoint {path}"):
        # The sizes come from the file: its weights must fit them before anything is allocated,
        # and its data must fit the network (an image size the network cannot take is refused
        # before images are resized to it).
        skeleton = build_on_meta(get_model, **model)
    check_fits(ckpt["state_dict"], {f"{NET}{k}": v for k, v in skeleton.state_dict().items()}, path)
    check_network(skeleton, inputs, model["name"], path)
    return dict(model), inputs


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> Trained:
    """Rebuild the network of a ``zoo-train`` checkpoint (weights loaded strictly, eval mode,
    on ``device``) and what its inputs need, with torch and torchvision only."""
    if str(device).startswith("cuda"):
        require_cuda(f"device={device}")
    ckpt = load_lightning_checkpoint(path)
    model, inputs = check_checkpoint(ckpt, path)
    with config_errors(f"checkpoint {path}"):
        net = get_model(**model)
    net.load_state_dict({k[len(NET) :]: v for k, v in ckpt["state_dict"].items()})
    return Trained(net.to(device).eval(), inputs, Path(path), dict(ckpt["hyper_parameters"]))


# -- images --------------------------------------------------------------------------


@dataclass
class Prediction:
    """The ``top_k`` classes of one image, most probable first."""

    path: Path
    classes: list[int]
    names: list[str]
    probabilities: list[float]


def image_files(inputs: str | Path | list) -> list[Path]:
    """The files to classify: each input file as given, every file under each folder (sorted)."""
    paths = []
    for entry in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
        entry = Path(entry)
        if entry.is_dir():
            paths += sorted(p for p in entry.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif entry.is_file():
            paths.append(entry)
        else:
            raise DataError(f"input not found: {entry.resolve()}")
    return paths


# The numbers zoo-predict and classify() run the network in (``precision=``).
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class Runner:
    """The logits of a batch of preprocessed images (``forward``), and how they are computed."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    description: str


def torch_runner(trained: Trained, precision: str = "fp32", channels_last: bool | str = False) -> Runner:
    """The checkpoint's network run eagerly by torch, as training runs it (:mod:`zoo.perf`).

    ``precision``: ``fp32``, ``bf16`` (bfloat16 autocast: matrix products and convolutions in
    bfloat16, depthwise ones included: training keeps them in float32 on a CPU for the sake of
    their backward pass, which inference has not) or ``auto``, training's rule:
    bf16 for the families measured faster so (``ImageModel.fast_path``) on hardware with native
    bfloat16, else fp32. ``channels_last``: true, false or ``auto`` (with bf16 on those families).
    Changes the network's memory format in place.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if channels_last not in (True, False, "auto"):
        raise ConfigError(f"channels_last must be true, false or auto; got {channels_last!r}")
    net = trained.net
    device = next(net.parameters()).device
    if precision == "auto":
        chosen, why = choose_precision("auto", device.type, net)
        bf16 = str(chosen).startswith("bf16")
    else:
        bf16, why = precision == "bf16", f"precision={precision}, as set"
    last = use_channels_last(channels_last, "bf16-mixed" if bf16 else "32-true", net)
    layout = torch.channels_last if last else torch.contiguous_format
    net.to(memory_format=layout)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return net(x.to(device, memory_format=layout)).float()

    shown = f"torch eager, {'bf16 autocast' if bf16 else 'fp32'} ({why}), {'channels_last' if last else 'NCHW'}"
    return Runner(forward, shown)


class ImageFiles(Dataset):
    """Image files preprocessed for the network; a file that cannot be read gives its message instead."""

    def __init__(self, paths: list[Path], transform: Callable, invert: bool = False):
        self.paths, self.transform, self.invert = paths, transform, invert

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = read_image(self.paths[i])
        except DataError as err:
            return i, None, str(err)
        if self.invert:
            image = ImageOps.invert(to_mode(image, channels=3))
        return i, self.transform(image), None


def _as_read(items: list) -> list:
    return items  # the batch's (index, tensor or None, message or None), as ImageFiles gave them


@torch.no_grad()
def classify(
    trained: Trained, paths: list[Path], top_k: int = 5, batch_size: int = 32, invert: bool = False,
    runner: Runner | None = None, num_workers: int = 0,
) -> tuple[list[Prediction], list[str]]:  # fmt: skip
    """Classify image files with the checkpoint's own preprocessing.

    Returns the predictions, in the order of ``paths``, and one message per file that could
    not be read (those files are skipped). ``invert`` turns dark-on-light images into the
    light-on-dark digits of ``digits`` and MNIST checkpoints. Files are read and preprocessed
    in ``num_workers`` DataLoader processes (0: in this one) and run ``batch_size`` at a time
    by ``runner`` (:func:`torch_runner`'s fp32 eager network unless given; ONNX Runtime:
    :func:`zoo.export.onnx_runner`).
    """
    if not isinstance(trained.inputs, ImageInputs):
        raise ConfigError(f"{trained.path} was not trained on images; it cannot classify image files")
    for key, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{key} must be a whole number of at least {least}, got {value!r}")
    runner = runner or torch_runner(trained)
    names = trained.classes
    k = min(top_k, len(names))
    files = ImageFiles(paths, trained.transform, invert)
    loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=_as_read)
    predictions, failures = [], []
    for items in loader:
        failures += [message for _, x, message in items if x is None]
        read = [(i, x) for i, x, _ in items if x is not None]
        if not read:
            continue
        top = runner.forward(torch.stack([x for _, x in read])).softmax(dim=1).topk(k, dim=1)
        for (i, _), p, j in zip(read, top.values.tolist(), top.indices.tolist()):
            predictions.append(Prediction(paths[i], j, [names[c] for c in j], p))
    return predictions, failures


# -- text ----------------------------------------------------------------------------


@dataclass
class Translation:
    """One decoded text with the tokens and attention weights behind it."""

    text: str
    output: str
    source_tokens: list[str]
    output_tokens: list[str]
    attention: torch.Tensor | None  # (len(output_tokens), len(source_tokens)), or None
    unknown: list[str]  # source tokens outside the vocabulary (read as <unk>)
    # With nbest > 1: the nbest outputs, best first (``output`` is the first), each with the
    # score beam search ranked it by, log p / len ** length_penalty; empty otherwise.
    hypotheses: list[tuple[str, float]] = field(default_factory=list)


# A source may be this many times the longest training source: room for somewhat longer
# inputs than training saw, while a runaway input (a pasted file) stays bounded in time and memory.
SOURCE_LIMIT_FACTOR = 2
# The limit for checkpoints written before the longest training source was recorded.
FALLBACK_MAX_SOURCE_LEN = 512


def _positive_or_none(key: str, value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{key} must be a positive integer or null, got {value!r}")
    return value


def source_limit(inputs: TextInputs, max_source_len: int | None = None) -> tuple[int, str]:
    """The most source tokens (``<eos>`` included) to decode, and where that number comes from.

    ``max_source_len`` if given, else :data:`SOURCE_LIMIT_FACTOR` times the longest training
    source the checkpoint records, else :data:`FALLBACK_MAX_SOURCE_LEN`.
    """
    if _positive_or_none("max_source_len", max_source_len) is not None:
        return max_source_len, "max_source_len"
    if inputs.longest_source is None:
        return FALLBACK_MAX_SOURCE_LEN, "the default for checkpoints that record no training lengths"
    return (
        SOURCE_LIMIT_FACTOR * inputs.longest_source,
        f"{SOURCE_LIMIT_FACTOR} x the longest training source, {inputs.longest_source} tokens",
    )


@torch.no_grad()
def translate(
    trained: Trained, texts: list[str], beam_size: int = 1, length_penalty: float = 1.0, max_len: int | None = None,
    max_source_len: int | None = None, truncate: bool = False, nbest: int = 1,
) -> list[Translation]:  # fmt: skip
    """Decode each text with a seq2seq checkpoint (greedy for ``beam_size`` 1, else beam search).

    ``nbest`` > 1 (at most ``beam_size``) also lists the ``nbest`` best hypotheses of each
    text with their scores (:attr:`Translation.hypotheses`).

    Sources longer than :func:`source_limit` tokens are refused, or with ``truncate`` cut
    to it (their ``<eos>`` kept) with a warning. Outputs are at most ``max_len`` tokens
    (default 2 * source length + 10), and never more than the source limit, so the time and
    memory of decoding stay bounded whatever the input.
    """
    inputs, net = trained.inputs, trained.net
    if not isinstance(inputs, TextInputs):
        raise DataError(f"{trained.path} holds no text vocabularies (was it trained on text pairs?)")
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ConfigError(f"beam_size must be a whole number of at least 1, got {beam_size!r}")
    check_nbest(nbest, beam_size)
    _positive_or_none("max_len", max_len)
    if not isinstance(truncate, bool):
        raise ConfigError(f"truncate must be true or false, got {truncate!r}")
    limit, origin = source_limit(inputs, max_source_len)
    if max_len is not None and max_len > limit:
        log.warning("max_len=%d is over the source limit (%s); decoding at most %d tokens", max_len, origin, limit)
    src_vocab, tgt_vocab = inputs.src_vocab, inputs.tgt_vocab
    sources = []  # every text checked before any is decoded
    for text in texts:
        ids = src_vocab.encode(text, eos=True)
        if len(ids) > limit:
            shown = repr(text[:20]) + ("..." if len(text) > 20 else "")
            if not truncate:
                raise DataError(
                    f"the text {shown} is {len(ids)} tokens long (with <eos>), over the limit of {limit} "
                    f"({origin}): raise it with max_source_len=N or cut the text with truncate=true"
                )
            log.warning("the text %s is %d tokens long; truncated to the limit of %d (%s)",
                        shown, len(ids), limit, origin)  # fmt: skip
            ids = ids[: limit - 1] + [EOS_IDX]
        sources.append((text, ids))
    device = next(net.parameters()).device
    results = []
    for text, ids in sources:
        kept = tokenize(text, src_vocab.level)[: len(ids) - 1]
        unknown = sorted({t for t in kept if t not in src_vocab.stoi})
        src = torch.tensor([ids], device=device)
        out_limit = min(max_len or 2 * src.shape[1] + 10, limit)
        result = net.generate(src, torch.ones_like(src, dtype=torch.bool), out_limit, beam_size, length_penalty, nbest)
        rows = result.tokens.reshape(nbest, -1).tolist()  # best first; (1, L) and (1, nbest, L) alike
        tokens = rows[0]
        steps = tokens.index(net.eos_idx) + 1 if net.eos_idx in tokens else len(tokens)
        out_tokens = tgt_vocab.tokens(tokens) + ([EOS] if net.eos_idx in tokens else [])
        attention = None
        if result.attention is not None:
            attention = result.attention.reshape(nbest, len(tokens), -1)[0, :steps].cpu()
        hypotheses = []
        if nbest > 1:
            scores = result.normalized_scores[0].tolist()
            hypotheses = [(tgt_vocab.decode(row), score) for row, score in zip(rows, scores)]
        results.append(Translation(text, tgt_vocab.decode(tokens), [src_vocab.itos[j] for j in ids], out_tokens,
                                   attention, unknown, hypotheses))  # fmt: skip
    return results
