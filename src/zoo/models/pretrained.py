"""Weights into a zoo model: reading them (a file, a zoo checkpoint, an entry of the weights
table of :mod:`zoo.models.weights`) through :mod:`zoo.checkpoint`, fitting them key by key
(a new head for another class count, first-conv channels adapted, a ViT's position
embeddings interpolated), and :func:`create_model`, the one door the command lines use too.

A zoo checkpoint's own model options (which :func:`create_model` builds from) are checked
against its weights on the ``meta`` device when it is read, and its data's image size
against its network's: a file whose options describe a far larger network than its
weights, or far larger images than its network takes, is refused before anything is built.
Exported models (``.pt2``, ``.onnx``) are refused by :func:`zoo.checkpoint.load_file`
without being opened.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.checkpoint import INPUTS_KEY, CheckpointError, check_fits, load_file, load_lightning_checkpoint
from zoo.errors import ZooError, config_errors
from zoo.models.base import ImageModel
from zoo.models.factory import MODELS, build_on_meta, get_model
from zoo.models.features import FeatureExtractor
from zoo.models.weights import TORCHVISION_NAME, Preprocessing, Weights, WeightsError, find_weights, unknown_weights

log = logging.getLogger(__name__)

#: What a weights argument may be, for messages.
EXPECTED = (
    "a state_dict (.pth/.pt), a .safetensors file, a zoo checkpoint (.ckpt) or the name of weights the model "
    "has (zoo.list_weights): ResNet50_Weights.IMAGENET1K_V2, IMAGENET1K_V2, DEFAULT, or your registered ones"
)


@dataclass
class Pretrained:
    """A state_dict ready to load, with what is known about where it came from."""

    source: str  # the file, or the weights' name and their file
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    model_name: str | None = None  # the zoo model a checkpoint was trained with
    model_options: dict[str, Any] = field(default_factory=dict)  # and its constructor options
    label: str | None = None  # a table entry's name

    @property
    def name(self) -> str:
        """How messages name the weights: a table entry's name, else the file."""
        return self.label or self.source


def _fetch(url: str, path: Path) -> None:
    """Download ``url`` to ``path`` (atomically, sha256-checked against the hash in its name)."""
    match = torch.hub.HASH_REGEX.search(path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, path)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=False)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a hash mismatch a RuntimeError
        raise WeightsError(
            f"could not download {url} ({err}). Without network access, download it elsewhere "
            f"and place it at {path}"
        ) from None


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        found = type(obj).__name__ if not isinstance(obj, Mapping) else f"a {type(obj).__name__} of other things"
        raise WeightsError(
            f"{path.resolve()} is not a state_dict: expected a mapping of parameter names to tensors "
            f"(or a zoo checkpoint with a 'state_dict'), found {found}"
        )
    # Old torchvision DenseNet files name "norm.1" what the model (and torchvision) calls "norm1".
    return {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2.", k): v for k, v in obj.items()}


def _checkpoint_preprocessing(ckpt: Mapping[str, Any]) -> Preprocessing:
    """What a zoo checkpoint records of its images: the inputs record training writes
    (:data:`zoo.checkpoint.INPUTS_KEY`), else, in older checkpoints, the state of its
    :class:`~zoo.data.ImageDataModule` (``image_size``, ``mean``, ``std``), else its hyper-parameters."""
    hparams = ckpt.get("datamodule_hyper_parameters") or {}
    record = [ckpt[INPUTS_KEY]] if isinstance(ckpt.get(INPUTS_KEY), Mapping) else []
    states = record + [v for k, v in ckpt.items() if k not in (INPUTS_KEY, "datamodule_hyper_parameters") and isinstance(v, Mapping)]
    sources = [v for v in states if {"image_size", "mean", "std"} <= set(v)] + [hparams]

    def fact(key: str) -> Any:
        return next((s[key] for s in sources if s.get(key)), None)

    mean, std = fact("mean"), fact("std")
    interpolation = fact("interpolation") or "bilinear"
    return Preprocessing(fact("image_size"), tuple(mean) if mean else None, tuple(std) if std else None, None, interpolation)


def load_pretrained(weights: str, download: bool = True, model: str | None = None) -> Pretrained:
    """Read ``weights`` safely, before anything is trained: a file (state_dict ``.pth``/``.pt``,
    ``.safetensors``, a zoo ``.ckpt``) or an entry of the weights table
    (:mod:`zoo.models.weights`), named in full (``ResNet50_Weights.IMAGENET1K_V2``,
    ``vit_tiny.digits``) or, given the ``model``, by its short name (``IMAGENET1K_V2``,
    ``digits``, ``DEFAULT``). A table entry's file is torch.hub's cache file for a URL (fetched
    there if missing and ``download``), else the registered file, checked against its sha256.

    Raises:
        WeightsError: the file is missing, unreadable, unsafe or not a state_dict; the
            name is unknown (the names ``model`` accepts are listed); or its file is
            neither cached nor downloadable, or not the registered one.
    """
    path = Path(weights).expanduser()
    if not path.exists():
        if entry := find_weights(weights, model):
            return _from_entry(entry, download)
        if TORCHVISION_NAME.match(weights):
            raise WeightsError(f"unknown torchvision weights name {weights!r}; expected {EXPECTED}")
        if model is not None and not re.search(r"[./\\]", weights):  # a bare name, not a path
            raise unknown_weights(weights, model)
    return _from_file(path)


def _from_entry(entry: Weights, download: bool) -> Pretrained:
    path = entry.file()
    if not path.is_file():
        if not entry.is_url:
            raise WeightsError(f"weights {entry.name}: the registered file {path} does not exist")
        if not download:
            raise WeightsError(
                f"torchvision weights {entry.name} are not in the cache: place {entry.source} at {path} "
                f"(or allow the download: finetune.download=true, or download=True in zoo.create_model)"
            )
        _fetch(entry.source, path)
    elif entry.sha256 and not entry.is_url:  # torch.hub checks a download; a user's file is checked here
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(entry.sha256):
            raise WeightsError(
                f"weights {entry.name}: {path} has sha256 {digest.hexdigest()[:16]}..., not the registered "
                f"{entry.sha256[:16]}... (a changed or replaced file)"
            )
    loaded = _from_file(path)
    return replace(loaded, source=f"{entry.name} ({path})", preprocessing=entry.preprocessing, label=entry.name)


def _from_file(path: Path) -> Pretrained:
    try:
        obj = load_lightning_checkpoint(path) if path.suffix == ".ckpt" else load_file(path)
    except CheckpointError as err:
        raise WeightsError(f"cannot load pretrained weights: {err}. Expected {EXPECTED}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):  # a zoo (Lightning) checkpoint
        net = {k.removeprefix("net."): v for k, v in obj["state_dict"].items() if k.startswith("net.")}
        if not net:
            raise WeightsError(
                f"{path.resolve()} is a checkpoint without a network ('net.*' keys); expected {EXPECTED}"
            )
        model_cfg = dict((obj.get("hyper_parameters") or {}).get("model") or {})
        name = model_cfg.pop("name", None)
        state = _as_state_dict(net, path)
        _check_own_model(state, name, model_cfg, path)
        preprocessing = _checkpoint_preprocessing(obj)
        size = model_cfg.get("image_size")
        if size is not None and preprocessing.image_size not in (None, size):
            # zoo-train fits the network to the data: only an edited file disagrees, and its data size
            # would size the fine-tuning data (finetune.preprocessing=pretrained) and the network with it.
            raise WeightsError(
                f"cannot load pretrained weights: {path.resolve()}: its network takes {size}-pixel images but its "
                f"data settings say {preprocessing.image_size} (a damaged or edited checkpoint?)"
            )
        options = {k: v for k, v in model_cfg.items() if v is not None}
        return Pretrained(str(path), state, preprocessing, name, options)
    return Pretrained(str(path), _as_state_dict(obj, path))


def _check_own_model(state: dict[str, Any], name: Any, options: dict[str, Any], path: Path) -> None:
    """Refuse a zoo checkpoint whose weights do not fit the network its own model options
    describe (built exactly as training built it, on the ``meta`` device): those options are
    the file's to choose, and :func:`zoo.create_model` builds from them. A checkpoint of a
    model this zoo cannot build from its options is left to the checks of whoever builds one."""
    if not isinstance(name, str) or name not in MODELS:
        return
    try:
        with config_errors(f"model '{name}'"):
            skeleton = build_on_meta(MODELS.get(name), **options)
    except ZooError:
        return
    try:
        check_fits(state, skeleton.state_dict(), path)
    except CheckpointError as err:
        raise WeightsError(f"cannot load pretrained weights: {err}") from None


def first_conv(net: nn.Module) -> tuple[str, nn.Module] | None:
    """The layer that reads the input channels, as the model declares it (``spec.first_conv``)."""
    if not isinstance(net, ImageModel) or net.spec.first_conv is None:
        return None
    return net.spec.first_conv, net.get_submodule(net.spec.first_conv)


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """First-conv kernels (out, c, kh, kw) for ``in_channels`` inputs.

    To one channel: the kernels summed over their input channels, so a gray image gives
    exactly what the original network gives for that image replicated c times
    (``conv(g, sum_c W_c) = sum_c conv(g, W_c)``). From one channel: the kernel repeated
    and divided by the count, the same identity read the other way.
    """
    have = weight.shape[1]
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    if have == 1:
        return weight.repeat(1, in_channels, 1, 1) / in_channels
    raise WeightsError(f"cannot adapt a first conv with {have} input channels to {in_channels}")


def head_keys(net: nn.Module) -> set[str]:
    """``state_dict`` keys of the classifier head, as the model declares it (none outside image models)."""
    return net.head_keys() if isinstance(net, ImageModel) else set()


def _listing(keys: Iterable[str], limit: int = 8) -> str:
    keys = list(keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_into(
    net: nn.Module,
    pretrained: Pretrained,
    adapt_channels: str = "sum",
    reset_head: bool = False,
    keep_fresh: Iterable[str] = (),
) -> list[str]:
    """Load ``pretrained`` into ``net`` strictly; returns the keys left out.

    Every key must be present on both sides with the same shape, except: the classifier
    head when the class count differs (or ``reset_head``), which is re-initialised; and
    the first conv's input channels, adapted by summing (``adapt_channels="sum"``).
    The keys in ``keep_fresh`` keep ``net``'s own fresh initialisation (they must still fit:
    the weights are of the same architecture, only not used there; fine-tuning's
    ``reinit_stages``).
    """
    state = dict(pretrained.state_dict)
    if isinstance(net, ImageModel):
        adapted = net.adapt_state_dict(state)  # e.g. a ViT's position embeddings for its image size
        for key in (k for k in adapted if adapted[k].shape != state[k].shape):
            log.info("%s fitted from %s to %s (%s)", key, tuple(state[key].shape), tuple(adapted[key].shape), type(net).__name__)
        state = adapted
    own = net.state_dict()
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    if missing or unexpected:
        trained = f" (a checkpoint of '{pretrained.model_name}')" if pretrained.model_name else ""
        raise WeightsError(
            f"{pretrained.source}{trained} does not fit {type(net).__name__}: {len(missing)} missing keys "
            f"[{_listing(missing)}], {len(unexpected)} unexpected keys [{_listing(unexpected)}]. "
            f"Expected the weights of the same architecture"
        )
    conv = first_conv(net)
    if conv is not None:
        key, want = f"{conv[0]}.weight", own[f"{conv[0]}.weight"].shape
        have = state[key].shape
        if have[1] != want[1] and have[:1] + have[2:] == want[:1] + want[2:]:
            if adapt_channels == "repeat":
                raise WeightsError(
                    f"{pretrained.source} expects {have[1]}-channel input and the data has {want[1]}; "
                    f"finetune.adapt_channels=repeat needs a data module with a 'channels' option (digits), "
                    f"use finetune.adapt_channels=sum"
                )
            state[key] = adapt_input_channels(state[key], want[1])
            log.info("adapted %s from %d to %d input channels (kernels summed)", key, have[1], want[1])
    mismatched = [k for k in own if state[k].shape != own[k].shape]
    head = head_keys(net) if mismatched or reset_head else set()
    if wrong := [k for k in mismatched if k not in head]:
        k, more = wrong[0], f" ({len(wrong) - 1} more mismatches)" if len(wrong) > 1 else ""
        raise WeightsError(
            f"{pretrained.source} does not fit {type(net).__name__}: {k} has shape {tuple(state[k].shape)} in the "
            f"weights and {tuple(own[k].shape)} in the model{more}"
        )
    head_skipped = sorted(head) if mismatched or reset_head else []
    if head_skipped:
        net.reset_classifier(net.num_classes)  # a fresh head, not the one the model was built with
    reinit = [k for k in keep_fresh if k not in head]
    skipped = head_skipped + reinit
    net.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=not skipped)
    if head_skipped:
        why = "reset_head=true" if reset_head and not mismatched else "the class count differs"
        log.info(
            "classifier head re-initialised for %d classes (%s); not loaded: %s",
            net.num_classes, why, ", ".join(head_skipped),
        )  # fmt: skip
    if reinit:
        log.info("%d tensors keep their fresh initialisation, not loaded: %s", len(reinit), _listing(reinit))
    return skipped


def create_model(
    name: str,
    weights: str | None = None,
    *,
    pretrained: bool = False,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    download: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """The registered model ``name``, with ``weights`` loaded if given.

    Args:
        name: A registered model (``zoo.list_models()``).
        weights: A file (a state_dict ``.pth``/``.pt``, ``.safetensors``, a ``zoo-train``
            ``.ckpt``) or the name of weights the model has (``zoo.list_weights(name)``):
            ``"ResNet50_Weights.IMAGENET1K_V2"``, ``"IMAGENET1K_V2"``, ``"DEFAULT"``, or
            weights you registered (:func:`zoo.register_weights`).
        pretrained: ``weights="DEFAULT"`` when no ``weights`` are given (as in timm).
        num_classes: The classifier's class count; weights for another count load all
            but the head, which starts fresh. Default: the checkpoint's, else the model's.
        in_channels: Input channels; pretrained first-conv kernels are summed to one
            channel (or spread from one), which keeps the network's function on gray input.
        image_size: For a ViT, the image size; weights trained at another size get their
            position embeddings interpolated (bicubic, the class token's kept).
        features_only: Return the trunk as a :class:`zoo.models.features.FeatureExtractor`
            giving the feature maps at ``out_indices``.
        download: Fetch torchvision weights missing from the hub cache (default: refuse,
            saying where to place the file).
        **kwargs: Any other constructor argument of the model (``dropout=0.2``, ...).

    Raises:
        zoo.models.weights.WeightsError: the weights cannot be read, are unknown (the names
            the model accepts are listed) or do not fit (the first mismatching keys are named).
    """
    if pretrained and weights is None:
        weights = "DEFAULT"
    source = load_pretrained(str(weights), download, model=name) if weights is not None else None
    options = dict(source.model_options) if source is not None and source.model_name == name else {}
    options.update(kwargs)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if value is not None:
            options[key] = value
    net = get_model(name, **options)
    if source is not None:
        load_into(net, source)
    return FeatureExtractor(net, out_indices, name=name) if features_only else net
