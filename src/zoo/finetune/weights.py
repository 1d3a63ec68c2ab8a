"""Pretrained weights into a zoo model: reading them (files, zoo checkpoints, torchvision
names from the local cache) through :mod:`zoo.checkpoint`, fitting them key by key (a new
head for another class count, first-conv channels adapted), and the data settings they
were trained with.

A zoo checkpoint's own model options (which :func:`zoo.create_model` builds from) are
checked against its weights on the ``meta`` device when it is read, and its data's image
size against its network's: a file whose options describe a far larger network than its
weights, or far larger images than its network takes, is refused before anything is built.
Exported models (``.pt2``, ``.onnx``) are refused by :func:`zoo.checkpoint.load_file`
without being opened."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from zoo.checkpoint import CheckpointError, check_fits, load_file, load_lightning_checkpoint
from zoo.errors import ConfigError, ZooError, config_errors
from zoo.finetune.config import EXPECTED, FinetuneConfig
from zoo.models import MODELS, ImageModel, get_model
from zoo.optim.groups import stage_groups
from zoo.profiling import build_on_meta

log = logging.getLogger(__name__)

# "ResNet50_Weights.IMAGENET1K_V2": an enum of torchvision.models and one of its members.
TORCHVISION_WEIGHTS = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+$")


class WeightsError(CheckpointError):
    """Pretrained weights cannot be found, read, or do not fit the model."""


@dataclass(frozen=True)
class Preprocessing:
    """How the pretraining data was fed to the network: side of the (square) input and
    per-channel normalisation. Missing facts are ``None``."""

    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_size: int | None = None  # the shorter side before the centre crop, where the weights say


@dataclass
class Pretrained:
    """A state_dict ready to load, with what is known about where it came from."""

    source: str  # the file, or the torchvision weights name and its cache file
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    model_name: str | None = None  # the zoo model a checkpoint was trained with
    model_options: dict[str, Any] = field(default_factory=dict)  # and its constructor options

    @property
    def name(self) -> str:
        """How messages name the weights: a torchvision name without its cache file, else the source."""
        head = self.source.split(" (", 1)[0]
        return head if TORCHVISION_WEIGHTS.match(head) else self.source


def torchvision_cache_file(name: str) -> tuple[Any, Path]:
    """The torchvision weights enum member called ``name`` and the file torchvision's own
    download cache keeps it in: ``torch.hub.get_dir()/checkpoints/<file name of its url>``."""
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError) as err:
        raise WeightsError(f"unknown torchvision weights name {name!r} ({err}); expected {EXPECTED}") from None
    file_name = os.path.basename(urlparse(weights.url).path)
    return weights, Path(torch.hub.get_dir()) / "checkpoints" / file_name


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


def _from_torchvision(name: str, download: bool) -> Pretrained:
    weights, path = torchvision_cache_file(name)
    if not path.is_file():
        if not download:
            raise WeightsError(
                f"torchvision weights {name} are not in the cache: place {weights.url} at {path} "
                f"(or allow the download: finetune.download=true, or download=True in zoo.create_model)"
            )
        _fetch(weights.url, path)
    preset = weights.transforms()  # ImageClassification: resize, centre crop, normalise
    preprocessing = Preprocessing(preset.crop_size[0], tuple(preset.mean), tuple(preset.std), preset.resize_size[0])
    return Pretrained(f"{name} ({path})", _as_state_dict(load_file(path), path), preprocessing)


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
    """What an :class:`~zoo.data.ImageDataModule` recorded in a zoo checkpoint: its state
    (``image_size``, ``mean``, ``std``), else its hyper-parameters."""
    hparams = ckpt.get("datamodule_hyper_parameters") or {}
    states = [v for k, v in ckpt.items() if k != "datamodule_hyper_parameters" and isinstance(v, Mapping)]
    sources = [v for v in states if {"image_size", "mean", "std"} <= set(v)] + [hparams]

    def fact(key: str) -> Any:
        return next((s[key] for s in sources if s.get(key)), None)

    mean, std = fact("mean"), fact("std")
    return Preprocessing(fact("image_size"), tuple(mean) if mean else None, tuple(std) if std else None)


def torchvision_weights_names(model: str) -> list[str]:
    """The members of torchvision's weights enum for the model called ``model`` (none if
    torchvision has no model of that name), ``DEFAULT`` last."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(model)
    except (ValueError, KeyError):
        return []
    return [*(member.name for member in enum), "DEFAULT"]


def resolve_weights_name(weights: str, model: str | None) -> str | None:
    """The full torchvision name (``ResNet50_Weights.IMAGENET1K_V2``) that ``weights`` means
    for ``model``: itself if it is one, a member of ``model``'s enum (``IMAGENET1K_V2``,
    ``DEFAULT``) spelled out; ``None`` if it names no torchvision weights."""
    if TORCHVISION_WEIGHTS.match(weights):
        return weights
    if model is None or weights not in torchvision_weights_names(model):
        return None
    from torchvision.models import get_model_weights

    enum = get_model_weights(model)
    return f"{enum.__name__}.{enum[weights].name}"  # DEFAULT is an alias of a named member


def unknown_weights(weights: str, model: str) -> WeightsError:
    """The error for a weights name that is neither a file nor one of ``model``'s torchvision weights."""
    names = torchvision_weights_names(model)
    accepted = f"its torchvision weights are {', '.join(names)}" if names else "torchvision has no weights for it"
    return WeightsError(f"unknown weights {weights!r} for {model}: not a file, and {accepted}")


def load_pretrained(weights: str, download: bool = True, model: str | None = None) -> Pretrained:
    """Read ``weights`` safely, before anything is trained: a file (state_dict ``.pth``/``.pt``,
    ``.safetensors``, a zoo ``.ckpt``) or torchvision weights from the local hub cache, named
    in full (``ResNet50_Weights.IMAGENET1K_V2``) or, given the ``model``, by their member
    name (``IMAGENET1K_V2``, ``DEFAULT``).

    Raises:
        WeightsError: the file is missing, unreadable, unsafe or not a state_dict; the
            name is unknown (the names ``model`` accepts are listed); or its file is
            neither cached nor downloadable.
    """
    path = Path(weights).expanduser()
    if not path.exists():
        if full_name := resolve_weights_name(weights, model):
            return _from_torchvision(full_name, download)
        if model is not None and not re.search(r"[./\\]", weights):  # a bare name, not a path
            raise unknown_weights(weights, model)
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
            skeleton = build_on_meta(get_model, name=name, **options)
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


def stage_keys(net: nn.Module, names: Iterable[str]) -> list[str]:
    """The ``state_dict`` keys of the stages ``names`` of ``net`` (see :func:`stage_groups`)."""
    groups = dict(stage_groups(net))
    if unknown := [n for n in names if n not in groups]:
        raise ConfigError(
            f"finetune.reinit_stages: {type(net).__name__} has no stage {', '.join(map(repr, unknown))}; "
            f"its stages are {', '.join(groups)}"
        )
    tensors = {id(t) for n in names for t in [*groups[n].parameters(), *groups[n].buffers()]}
    return [k for k, t in net.state_dict(keep_vars=True).items() if id(t) in tensors]


def load_into(
    net: nn.Module,
    pretrained: Pretrained,
    adapt_channels: str = "sum",
    reset_head: bool = False,
    reinit_stages: Iterable[str] = (),
) -> list[str]:
    """Load ``pretrained`` into ``net`` strictly; returns the keys left out.

    Every key must be present on both sides with the same shape, except: the classifier
    head when the class count differs (or ``reset_head``), which is re-initialised; and
    the first conv's input channels, adapted by summing (``adapt_channels="sum"``).
    The stages named in ``reinit_stages`` keep ``net``'s own fresh initialisation (their
    keys must still fit: the weights are of the same architecture, only not used there).
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
    reinit = [k for k in stage_keys(net, reinit_stages) if k not in head]
    skipped = head_skipped + reinit
    net.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=not skipped)
    if head_skipped:
        why = "reset_head=true" if reset_head and not mismatched else "the class count differs"
        log.info(
            "classifier head re-initialised for %d classes (%s); not loaded: %s",
            net.num_classes, why, ", ".join(head_skipped),
        )  # fmt: skip
    if reinit:
        log.info("stages %s keep their fresh initialisation (finetune.reinit_stages): %d tensors not loaded",
                 ", ".join(reinit_stages), len(reinit))  # fmt: skip
    return skipped


def _per_channel(values: tuple[float, ...] | None, channels: int | None) -> tuple[float, ...] | None:
    """``values`` for ``channels`` channels: a gray copy of the data fed to a colour network
    (or the reverse) gets one value for all channels, their mean."""
    if values is None or not channels or len(values) == channels:
        return values
    return (sum(values) / len(values),) * channels


def _same(given: Any, expected: Any) -> bool:
    """Whether a user's option equals what the weights expect (one value for every channel counts)."""
    if not isinstance(given, (list, tuple)):
        return given == expected
    given = list(given) * len(expected) if len(given) == 1 else list(given)
    return len(given) == len(expected) and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(given, expected))


def _as_option(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def adapt_data_config(
    data_cfg: dict[str, Any], model_cfg: Mapping[str, Any], config: FinetuneConfig, pretrained: Pretrained | None
) -> dict[str, Any]:
    """The data options that feed the data the way the pretrained network was fed, where
    the user left them to be inferred.

    Explicit settings win: a data option the user set (not ``null``) is used as given. With
    ``preprocessing=pretrained``, the options the weights can supply are filled where they
    are ``null``: ``image_size`` (``model.image_size`` where given, a ViT fine-tuned at
    another resolution than its weights', else the weights' crop size), ``mean`` and ``std``
    (averaged for data of another channel count), and ``resize_size`` (the weights' own,
    where the data is fed at their crop size). An explicit ``image_size``, ``mean`` or
    ``std`` that differs from the weights' is used with one warning that says what they
    expect; an explicit ``data.image_size`` other than an explicit ``model.image_size`` is
    refused later, where the model is fitted to the data. What stays ``null`` is the data
    module's own default (:func:`data_options_used` gives the values that ran).
    With ``adapt_channels=repeat``: ``channels`` (a digits option) becomes the first conv's
    input channels, so gray images are replicated instead of the kernels summed.
    """
    data_cfg = dict(data_cfg)
    if pretrained is None:
        return data_cfg
    changed = {}
    if config.adapt_channels == "repeat" and "channels" in data_cfg:
        options = {k: v for k, v in model_cfg.items() if k != "name" and v is not None}
        with torch.device("meta"):
            conv = first_conv(get_model(model_cfg["name"], **options))
        weight = pretrained.state_dict.get(f"{conv[0]}.weight") if conv else None
        if weight is not None and weight.ndim == 4 and weight.shape[1] != data_cfg["channels"]:
            changed["channels"] = weight.shape[1]
    if config.preprocessing == "pretrained":
        facts, model_size = pretrained.preprocessing, model_cfg.get("image_size")
        channels = changed.get("channels", data_cfg.get("channels"))
        expected = {  # model.image_size: the size a ViT is built for (384 from 224 weights)
            "image_size": model_size or facts.image_size,
            "mean": _per_channel(facts.mean, channels),
            "std": _per_channel(facts.std, channels),
        }
        for key, value in expected.items():
            if value is None:
                continue
            if key not in data_cfg:
                name = data_cfg.get("name")
                log.warning("the pretrained %s %s is not applied: data '%s' has no %s option", key, value, name, key)
            elif data_cfg[key] is None:
                changed[key] = _as_option(value)
            elif not _same(data_cfg[key], value) and not (key == "image_size" and model_size):
                log.warning(_explicit_wins(key, data_cfg[key], _as_option(value), pretrained))
        # torchvision's eval resize (232 for ResNet50 V2, not 224 / 0.875), where the data is fed at its crop size
        size = changed.get("image_size", data_cfg.get("image_size"))
        if facts.resize_size and data_cfg.get("resize_size", 0) is None and size == facts.image_size:  # 0: no option
            changed["resize_size"] = facts.resize_size
    if changed:
        log.info("data settings from the pretrained weights (finetune.preprocessing=data keeps the data's): %s", changed)
    return {**data_cfg, **changed}


def _explicit_wins(key: str, given: Any, expected: Any, pretrained: Pretrained) -> str:
    """``data.image_size=112 is used; the weights ... were trained at 224 (resize 256, crop 224): ...``."""
    facts = pretrained.preprocessing
    if key == "image_size":
        resize = f" (resize {facts.resize_size}, crop {expected})" if facts.resize_size else ""
        what = f"at {expected}{resize}"
    else:
        what = f"with {key} {expected}"
    return (
        f"data.{key}={given} is used; the weights {pretrained.name} were trained {what}: "
        f"set data.{key}=null to use theirs"
    )


# The options a data module may infer (left null in configs/data): filled in with what ran.
INFERRED_DATA_OPTIONS = ("image_size", "resize_size", "mean", "std")


def data_options_used(data_cfg: Mapping[str, Any], datamodule: Any) -> dict[str, Any]:
    """``data_cfg`` as it ran: its ``null`` (inferred) ``image_size``, ``resize_size``,
    ``mean`` and ``std`` replaced by the data module's values, for ``config.yaml`` and
    ``metrics.json``. Call it after ``datamodule.setup`` (digits computes its statistics
    there); only options ``data_cfg`` has are filled, so the result still builds the data."""
    used = dict(data_cfg)
    for key in INFERRED_DATA_OPTIONS:
        value = getattr(datamodule, key, None)
        if key in used and used[key] is None and value not in (None, ()):
            used[key] = _as_option(value)
    return used
