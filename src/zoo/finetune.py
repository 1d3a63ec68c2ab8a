"""Transfer learning: pretrained weights into a zoo model, then freeze, partial, full or
gradual fine-tuning.

The lecture's three recipes (take a network trained on ImageNet, 1.2M images, and
train it further on your own data) and their learning rates:

- feature extraction (``freeze``): freeze every convolutional stage, replace only the
  classifier and train it alone; for little data (100-1000 examples); lr 1e-3;
- partial fine-tuning (``partial``): freeze the first stages (general features), train
  the last blocks with a small lr; for a medium amount of data; lr 1e-5;
- full fine-tuning (``full``): train everything with a very small lr; for large data
  sets (10K+); lr 1e-6.

``gradual`` starts as ``freeze`` and unfreezes the stages one at a time from the head
backwards at given epochs (as in ULMFiT, Howard & Ruder 2018). The new head always
learns at ``lr_head``: it starts from random weights and needs the larger rate.

Stages are the model contract's ``stages()`` (stem .. head), so every image family is
fine-tuned the same way. Frozen batch-norm layers stay in eval mode: their running
statistics are part of the pretrained features, and updating them from a few
fine-tuning batches would change the features the head is learning to read.

Weights are read only through :mod:`zoo.checkpoint` (tensors only; never arbitrary
pickles) and must fit the model key by key; the one tolerated difference is the
classifier head when the number of classes differs, which is re-initialised.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from zoo.checkpoint import CheckpointError, load_file, load_lightning_checkpoint
from zoo.errors import ConfigError
from zoo.models.base import ImageModel
from zoo.optim.factory import param_groups
from zoo.registry import get_model

log = logging.getLogger(__name__)

MODES = ("none", "freeze", "partial", "full", "gradual")
CHANNEL_ADAPTATIONS = ("sum", "repeat")
PREPROCESSING_SOURCES = ("pretrained", "data")
# "ResNet50_Weights.IMAGENET1K_V2": an enum of torchvision.models and one of its members.
TORCHVISION_WEIGHTS = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+$")
EXPECTED = (
    "a state_dict (.pth/.pt), a .safetensors file, a zoo checkpoint (.ckpt) "
    "or a torchvision weights name such as ResNet50_Weights.IMAGENET1K_V2"
)


class WeightsError(CheckpointError):
    """Pretrained weights cannot be found, read, or do not fit the model."""


@dataclass(frozen=True)
class FinetuneConfig:
    """The ``finetune`` config group (``configs/finetune/*.yaml``), validated."""

    mode: str = "none"
    weights: str | None = None
    download: bool = True
    reset_head: bool = False
    adapt_channels: str = "sum"
    preprocessing: str = "pretrained"
    freeze_stages: int = -2
    freeze_modules: tuple[str, ...] = ()
    reinit_stages: tuple[str, ...] = ()
    lr_backbone: float | None = None
    lr_head: float | None = None
    unfreeze_epochs: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> FinetuneConfig:
        """Validate ``options``; a wrong key or value is a :class:`ConfigError` that says what is allowed."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(options) - known):
            raise ConfigError(f"unknown finetune option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("freeze_modules", "reinit_stages", "unfreeze_epochs"):
            options[key] = tuple(options.get(key) or ())
        config = cls(**options)
        choices_of = {"mode": MODES, "adapt_channels": CHANNEL_ADAPTATIONS, "preprocessing": PREPROCESSING_SOURCES}
        for key, choices in choices_of.items():
            if getattr(config, key) not in choices:
                raise ConfigError(f"finetune.{key} must be one of {', '.join(choices)}, got {getattr(config, key)!r}")
        for key in ("lr_backbone", "lr_head"):
            value = getattr(config, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"finetune.{key} must be a positive learning rate or null, got {value!r}")
        if isinstance(config.freeze_stages, bool) or not isinstance(config.freeze_stages, int):
            raise ConfigError(f"finetune.freeze_stages must be a whole number of stages, got {config.freeze_stages!r}")
        if config.mode != "none" and not config.weights:
            raise ConfigError(
                f"finetune={config.mode} fine-tunes pretrained weights: set finetune.weights=<{EXPECTED}>"
            )
        if config.reinit_stages and not config.weights:
            raise ConfigError("finetune.reinit_stages re-initialises stages of pretrained weights: set finetune.weights")
        if list(config.unfreeze_epochs) != sorted(config.unfreeze_epochs) or any(e < 0 for e in config.unfreeze_epochs):
            raise ConfigError(
                f"finetune.unfreeze_epochs must be non-decreasing epochs >= 0, got {list(config.unfreeze_epochs)}"
            )
        if config.mode == "gradual" and config.freeze_modules:
            raise ConfigError("finetune=gradual unfreezes whole stages; it does not combine with finetune.freeze_modules")
        return config

    def stage_lrs(self) -> dict[str, float] | None:
        """Learning rates by stage for the task (``backbone``: every stage but the head).
        ``none`` is plain training: every parameter at ``optim.lr``."""
        if self.mode == "none":
            return None
        lrs = {"backbone": self.lr_backbone, "head": self.lr_head}
        if self.mode in ("freeze", "gradual"):  # the backbone is not in the optimizer at the start
            del lrs["backbone"]
        lrs |= dict.fromkeys(self.reinit_stages, self.lr_head)  # fresh weights learn like the new head
        lrs = {k: v for k, v in lrs.items() if v is not None}
        return lrs or None

    def task_options(self) -> dict[str, Any]:
        """Arguments for the task module (:class:`~zoo.tasks.ImageClassifier`), none when no rate is set."""
        lrs = self.stage_lrs()
        return {"stage_lrs": lrs} if lrs else {}


# --------------------------------------------------------------------------- reading weights


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
                f"(or set finetune.download=true)"
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


def load_pretrained(weights: str, download: bool = True) -> Pretrained:
    """Read ``weights`` (a file or a torchvision weights name) safely, before anything is trained.

    Raises:
        WeightsError: the file is missing, unreadable, unsafe or not a state_dict; the
            name is unknown; or its file is neither cached nor downloadable.
    """
    path = Path(weights).expanduser()
    if not path.exists() and TORCHVISION_WEIGHTS.match(weights):
        return _from_torchvision(weights, download)
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
        model = (obj.get("hyper_parameters") or {}).get("model") or {}
        return Pretrained(str(path), _as_state_dict(net, path), _checkpoint_preprocessing(obj), model.get("name"))
    return Pretrained(str(path), _as_state_dict(obj, path))


# --------------------------------------------------------------------------- fitting weights to a model


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


# --------------------------------------------------------------------------- freezing


def stage_groups(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """An image model's ``stages()``; for other networks, their top-level modules."""
    return net.stages() if isinstance(net, ImageModel) else list(net.named_children())


def set_trainable(modules: Iterable[nn.Module], trainable: bool) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(trainable)


def frozen_stage_names(net: nn.Module, config: FinetuneConfig) -> list[str]:
    """The stages ``config.mode`` freezes at the start of training."""
    names = [name for name, _ in stage_groups(net)]
    frozen: list[str] = []
    if config.mode in ("freeze", "gradual"):
        frozen = names[:-1]
    elif config.mode == "partial":
        k = config.freeze_stages if config.freeze_stages >= 0 else len(names) + config.freeze_stages
        if not 0 <= k < len(names):
            raise ConfigError(
                f"finetune.freeze_stages={config.freeze_stages} is out of range for {type(net).__name__}, whose "
                f"{len(names)} stages are {', '.join(names)}: use 0..{len(names) - 1} (or -1..-{len(names)})"
            )
        frozen = names[:k]
    return [name for name in frozen if name not in config.reinit_stages]  # fresh stages always train


def freeze_modules(net: nn.Module, prefixes: Iterable[str]) -> None:
    """Freeze the parameters whose names start with one of ``prefixes`` (``encoder``, ``decoder.embedding``)."""
    named = dict(net.named_parameters())
    for prefix in prefixes:
        chosen = [p for n, p in named.items() if n == prefix or n.startswith(prefix + ".")]
        if not chosen:
            tops = sorted({n.split(".")[0] for n in named})
            raise ConfigError(
                f"finetune.freeze_modules: no parameters under '{prefix}' in {type(net).__name__}; "
                f"its modules: {', '.join(tops)}"
            )
        for p in chosen:
            p.requires_grad_(False)


def parameter_lrs(net: nn.Module, stage_lrs: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """Learning rate of each parameter (by name, with ``prefix``) from rates by stage.

    Keys of ``stage_lrs`` are stage names of ``net.stages()``, ``head`` (the last
    stage) and ``backbone`` (every other stage); a stage's own name wins. Parameters
    of stages without a rate are left out (they take the optimizer's ``lr``).
    """
    groups = stage_groups(net)
    by_param: dict[int, float] = {}
    for i, (name, module) in enumerate(groups):
        alias = "head" if i == len(groups) - 1 else "backbone"
        lr = stage_lrs.get(name, stage_lrs.get(alias))
        for p in module.parameters():
            if lr is not None:
                by_param.setdefault(id(p), lr)
    return {prefix + n: by_param[id(p)] for n, p in net.named_parameters() if id(p) in by_param}


def parameter_table(net: nn.Module, lrs: Mapping[str, float] | None = None) -> str:
    """Trainable and frozen parameter counts per stage, as a text table for the log."""
    rows, seen = [], set()
    lrs = lrs or {}
    groups = stage_groups(net)
    for i, (name, module) in enumerate(groups):
        params = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        frozen = sum(p.numel() for p in params if not p.requires_grad)
        lr = lrs.get(name, lrs.get("head" if i == len(groups) - 1 else "backbone"))
        rate = "-" if not trainable else (f"{lr:g}" if lr else "optim.lr")
        rows.append((name, f"{trainable:,}", f"{frozen:,}", rate))
    total_t = sum(p.numel() for p in net.parameters() if p.requires_grad)
    total_f = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    rows.append(("total", f"{total_t:,}", f"{total_f:,}", ""))
    header = ("stage", "trainable", "frozen", "lr")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(header), *(line(r) for r in rows)])


def apply_finetuning(net: nn.Module, config: FinetuneConfig, pretrained: Pretrained | None) -> None:
    """Load the weights into ``net`` and freeze what ``config.mode`` freezes; logs the table.

    Called before the trainer exists, so that weights that do not fit are reported before
    anything is written to the run folder.
    """
    if config.mode != "none" and not isinstance(net, ImageModel):
        raise ConfigError(
            f"finetune={config.mode} works on the stages of image models; for {type(net).__name__} "
            f"use finetune=none with finetune.freeze_modules=[<module name>, ...]"
        )
    if pretrained is not None:
        load_into(net, pretrained, config.adapt_channels, config.reset_head, config.reinit_stages)
    frozen = set(frozen_stage_names(net, config))
    set_trainable((m for n, m in stage_groups(net) if n in frozen), False)
    freeze_modules(net, config.freeze_modules)
    if pretrained is not None or frozen or config.freeze_modules:
        log.info(
            "fine-tuning (finetune=%s, weights: %s):\n%s",
            config.mode, pretrained.source if pretrained else "none", parameter_table(net, config.stage_lrs()),
        )  # fmt: skip


# --------------------------------------------------------------------------- data settings


def adapt_data_config(
    data_cfg: dict[str, Any], model_cfg: Mapping[str, Any], config: FinetuneConfig, pretrained: Pretrained | None
) -> dict[str, Any]:
    """The data options that feed the data the way the pretrained network was fed.

    With ``preprocessing=pretrained``: ``image_size``, ``mean`` and ``std`` of the
    pretraining replace the data's own, where the data module has those options.
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
        facts = pretrained.preprocessing
        channels = changed.get("channels", data_cfg.get("channels"))
        for key in ("image_size", "mean", "std"):
            value = getattr(facts, key)
            if value is None:
                continue
            if key in ("mean", "std") and channels and len(value) != channels:
                # A gray copy of the data fed to a colour network (or the reverse): one value for all channels.
                value = (sum(value) / len(value),) * channels
            if key not in data_cfg:
                name = data_cfg.get("name")
                log.warning("the pretrained %s %s is not applied: data '%s' has no %s option", key, value, name, key)
                continue
            changed[key] = list(value) if isinstance(value, tuple) else value
    if changed:
        log.info("data settings from the pretrained weights (finetune.preprocessing=data keeps the data's): %s", changed)
    return {**data_cfg, **changed}


# --------------------------------------------------------------------------- callbacks


def _is_frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


class FrozenBatchNormEval(L.Callback):
    """Keep batch norms whose parameters are frozen in eval mode during training.

    Lightning puts the whole module in train mode at the start of every epoch and after
    every validation, which would let frozen batch norms update their running statistics
    (and normalise with batch statistics). This resets them before every training batch;
    batch norms that have been unfrozen (``gradual``) go back to train mode.
    """

    def _apply(self, pl_module: L.LightningModule) -> None:
        for module in pl_module.modules():
            if isinstance(module, _BatchNorm):
                module.train(pl_module.training and not _is_frozen(module))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply(pl_module)


class GradualUnfreezing(BaseFinetuning):
    """Unfreeze the backbone stages one by one, from the head backwards, at ``unfreeze_epochs``.

    Unfrozen stages join the optimizer as new parameter groups at ``lr`` (split by weight
    decay as :func:`zoo.optim.param_groups` splits them). Lightning's
    ``unfreeze_and_add_param_group`` is not used for that step: it recognises parameters
    already in the optimizer by *value* (equal-initialised batch-norm scales look like
    duplicates), puts decayed and undecayed parameters in one group, and gives the new
    group none of the keys a running scheduler keeps per group (``initial_lr``,
    ``max_lr``, ...). Here the new group copies the head group's keys with the rates
    scaled by ``lr / lr_head``, so it follows the same schedule shape. Stages named in
    ``fresh`` (re-initialised, see ``finetune.reinit_stages``) train from the start, like
    the head, and are not in the schedule.
    """

    def __init__(
        self, unfreeze_epochs: Iterable[int], lr: float | None, weight_decay: float = 0.0,
        decay_norm_and_bias: bool = False, fresh: Iterable[str] = (),
    ):  # fmt: skip
        super().__init__()
        self.unfreeze_epochs, self.lr, self.fresh = list(unfreeze_epochs), lr, set(fresh)
        self.weight_decay, self.decay_norm_and_bias = weight_decay, decay_norm_and_bias

    def _backbone(self, pl_module: L.LightningModule) -> list[tuple[str, nn.Module]]:
        return [(name, m) for name, m in stage_groups(pl_module.net)[:-1] if name not in self.fresh]

    def _schedule(self, pl_module: L.LightningModule) -> list[tuple[int, str, nn.Module]]:
        backbone = self._backbone(pl_module)
        return [(e, name, module) for e, (name, module) in zip(self.unfreeze_epochs, reversed(backbone))]

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable((m for _, m in self._backbone(pl_module)), False)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        for start, name, module in self._schedule(pl_module):
            if epoch < start:
                continue
            self.make_trainable(module)
            present = {id(p) for g in optimizer.param_groups for p in g["params"]}
            new = [(n, p) for n, p in module.named_parameters() if id(p) not in present]
            if not new:  # unfrozen before (or restored from a checkpoint)
                continue
            reference = optimizer.param_groups[0]
            base = reference.get("max_lr", reference.get("initial_lr", reference["lr"]))
            scale = (self.lr if self.lr is not None else base) / base
            for group in param_groups(new, self.weight_decay, self.decay_norm_and_bias):
                if not group["params"]:
                    continue
                keys = {k: v for k, v in reference.items() if k not in ("params", "weight_decay")}
                rates = ("lr", "initial_lr", "max_lr", "min_lr")
                keys.update({k: reference[k] * scale for k in rates if k in reference})
                optimizer.add_param_group({**keys, **group})
                _extend_schedulers(pl_module.trainer, optimizer.param_groups[-1])
            count = f"{sum(p.numel() for _, p in new):,}"
            log.info("epoch %d: unfroze stage %s (%s parameters, lr %g)", epoch, name, count, base * scale)


def _extend_schedulers(trainer: L.Trainer, group: dict[str, Any]) -> None:
    """Give the running schedulers a per-group entry for a group added after they were built."""
    n = len(trainer.optimizers[0].param_groups)
    pending = [c.scheduler for c in trainer.lr_scheduler_configs]
    while pending:
        scheduler = pending.pop()
        pending.extend(getattr(scheduler, "_schedulers", []))  # SequentialLR, ChainedScheduler
        entries = {"base_lrs": group.get("initial_lr", group["lr"]), "_last_lr": group["lr"], "min_lrs": None}
        for attr, value in entries.items():
            values = getattr(scheduler, attr, None)
            if isinstance(values, list) and len(values) == n - 1:
                values.append(values[0] if value is None else value)


def finetune_callbacks(config: FinetuneConfig, optim: Mapping[str, Any]) -> list[L.Callback]:
    """The callbacks ``config`` needs: frozen batch norms kept in eval; gradual unfreezing."""
    callbacks: list[L.Callback] = []
    if config.mode == "gradual":
        callbacks.append(
            GradualUnfreezing(
                config.unfreeze_epochs, config.lr_backbone,
                optim.get("weight_decay", 0.0), optim.get("decay_norm_and_bias", False), config.reinit_stages,
            )
        )  # fmt: skip
    if config.mode in ("freeze", "partial", "gradual") or config.freeze_modules:
        callbacks.append(FrozenBatchNormEval())
    return callbacks
