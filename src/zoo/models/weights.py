"""The weights that exist for each model, as data: one table that :func:`zoo.create_model`,
``finetune.weights=``, :func:`list_weights` and ``zoo-models --weights`` all read.

A :class:`Weights` record says where a set of weights is (a local file, or a URL and the
file torch.hub's cache keeps it in), how the images it was trained on were fed (its
evaluation transform: resize, centre crop, mean and std, interpolation) and what it scores
(the metric and its dataset, parameters, GFLOPS, recipe, licence). Each model's
:class:`PretrainedConfig` (timm's ``pretrained_cfg``) gathers what a user of its weights
needs: the input size and normalisation they expect, where the first convolution and the
classifier are, and the weights themselves.

The table has three sources:

- **declared where the model is registered**: ``@register_model(weights=torchvision_weights(
  "ResNet50_Weights"))`` makes every member of torchvision's enum an entry, with
  torchvision's own metadata (read offline; nothing is downloaded to list them). A model
  torchvision does not have (``lenet5``, ``vit_tiny``, the Transformers) declares none;
- **registered by a call**: :func:`register_weights` (a file you trained, its transform and
  its score);
- **declared in YAML**: every ``configs/weights/*.yaml`` of the working directory and of the
  package's configs, one entry per file, the keys of :func:`register_weights`::

      # configs/weights/vit_tiny_digits.yaml
      model: vit_tiny
      tag: digits                    # default: the file's stem; finetune.weights=digits
      file: ../../runs/vit/checkpoints/last.ckpt   # relative to this YAML file
      image_size: 16                 # the crop; resize_size (default: the crop) before it
      mean: [0.3]
      std: [0.4]
      num_classes: 10
      dataset: digits
      metrics: {acc@1: 90.0}         # your run's test accuracy, in percent

Reading the files and fitting them to a network: :mod:`zoo.models.pretrained`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import yaml

from zoo.checkpoint import CheckpointError
from zoo.errors import ConfigError
from zoo.files import config_dir
from zoo.models.base import ImageModel
from zoo.models.factory import DECLARED_WEIGHTS, MODELS, build_on_meta
from zoo.weight_import import EvalTransform, torchvision_member, torchvision_members

# "ResNet50_Weights.IMAGENET1K_V2": one of torchvision's weights enums and one of its members.
TORCHVISION_NAME = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


class WeightsError(CheckpointError):
    """Pretrained weights cannot be found, read, or do not fit the model."""


@dataclass(frozen=True)
class Preprocessing:
    """How the images were fed to the network the weights come from: the side of the
    (square) crop, per-channel normalisation, the shorter side before the crop and the
    resize's interpolation. Missing facts are ``None``."""

    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_size: int | None = None  # the shorter side before the centre crop, where the weights say
    interpolation: str = "bilinear"

    def transforms(self) -> EvalTransform:
        """The evaluation transform these facts describe (:class:`EvalTransform`)."""
        if self.image_size is None or self.mean is None or self.std is None:
            raise WeightsError("these weights do not say how their images were fed (image size, mean and std)")
        return EvalTransform(self.image_size, self.resize_size or self.image_size, self.mean, self.std, self.interpolation)


@dataclass(frozen=True)
class Weights:
    """One set of weights for one model: where it is, how it was fed, what it scores."""

    name: str  # in full: "ResNet50_Weights.IMAGENET1K_V2", "vit_tiny.digits"
    model: str
    source: str  # a local file, or the URL torchvision downloads it from
    preprocessing: Preprocessing
    sha256: str | None = None  # the file's digest, or its first hex digits (torchvision's file names carry 8)
    is_default: bool = False  # what "DEFAULT" means for the model
    num_classes: int | None = None
    dataset: str | None = None  # what ``metrics`` were measured on
    metrics: Mapping[str, float] = field(default_factory=dict)  # {"acc@1": 80.858, "acc@5": 95.434}
    num_params: int | None = None
    gflops: float | None = None  # per image at the evaluation size
    file_size_mb: float | None = None
    recipe: str | None = None
    license: str | None = None

    @property
    def member(self) -> str:
        """The short name a model's weights are also known by: ``IMAGENET1K_V2``, ``digits``."""
        return self.name.rsplit(".", 1)[1]

    @property
    def is_url(self) -> bool:
        return urlparse(self.source).scheme in ("http", "https")

    def file(self) -> Path:
        """The local file: the registered one, or torch.hub's cache file for a URL
        (``torch.hub.get_dir()/checkpoints/<the URL's file name>``, where torchvision keeps it)."""
        if self.is_url:
            return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(self.source).path).name
        return Path(self.source)

    def transforms(self) -> EvalTransform:
        """The evaluation transform these weights were measured with (:meth:`Preprocessing.transforms`)."""
        return self.preprocessing.transforms()


@dataclass(frozen=True)
class TorchvisionWeights:
    """The members of a torchvision weights enum, declared for a model at its registration."""

    enum: str  # "ResNet50_Weights"

    def entries(self, model: str) -> list[Weights]:
        return [_torchvision_entry(facts, model) for facts in torchvision_members(self.enum)]


def torchvision_weights(enum: str) -> TorchvisionWeights:
    """Declare, at ``register_model``, that torchvision's enum ``enum`` holds the model's weights."""
    return TorchvisionWeights(enum)


def _torchvision_entry(facts: dict[str, Any], model: str) -> Weights:
    pre = Preprocessing(facts["crop_size"], facts["mean"], facts["std"], facts["resize_size"], facts["interpolation"])
    keep = ("name", "source", "sha256", "is_default", "num_classes", "dataset", "metrics", "num_params", "gflops",
            "file_size_mb", "recipe", "license")  # fmt: skip
    return Weights(model=model, preprocessing=pre, **{k: facts[k] for k in keep})


@dataclass(frozen=True)
class PretrainedConfig:
    """What a model's weights expect and where they plug in (timm's ``pretrained_cfg``):
    the default weights' input size, normalisation, interpolation and crop (the model's own
    input size and no normalisation where it has no weights), the first convolution and the
    classifier as the model declares them, and every weights entry for it."""

    model: str
    input_size: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    interpolation: str | None
    crop_pct: float | None  # crop / resize
    first_conv: str | None
    classifier: str | None
    weights: tuple[Weights, ...]


_REGISTERED: dict[str, dict[str, Weights]] = {}  # model -> tag -> weights, from register_weights


def register_weights(
    model: str,
    tag: str,
    file: str | Path,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize_size: int | None = None,
    interpolation: str = "bilinear",
    num_classes: int | None = None,
    dataset: str | None = None,
    metrics: Mapping[str, float] | None = None,
    sha256: str | None = None,
    recipe: str | None = None,
    license: str | None = None,
    default: bool = False,
) -> Weights:
    """Add your own weights for ``model`` to the table, as ``<model>.<tag>`` (or ``tag`` with
    the model named): ``zoo.create_model(model, weights=tag)``, ``finetune.weights=tag``,
    :func:`list_weights` and ``zoo-models --weights`` see them from then on.

    ``file`` is a state_dict (``.pth``/``.pt``), ``.safetensors`` or a ``zoo-train``
    checkpoint, read when the weights are loaded (checked against ``sha256`` where given);
    ``image_size``, ``mean`` and ``std`` (and ``resize_size``, ``interpolation``) are the
    evaluation transform its ``metrics`` (``{"acc@1": <percent>}`` on ``dataset``) were measured with.
    """
    entry = _user_entry(model, tag, file, image_size=image_size, mean=mean, std=std, resize_size=resize_size,
                        interpolation=interpolation, num_classes=num_classes, dataset=dataset, metrics=metrics,
                        sha256=sha256, recipe=recipe, license=license, default=default)  # fmt: skip
    _check_new(entry, [*_declared(model), *_REGISTERED.get(model, {}).values()])
    _REGISTERED.setdefault(model, {})[tag] = entry
    return entry


def unregister_weights(model: str, tag: str) -> None:
    """Take weights added by :func:`register_weights` out of the table again (none: nothing to do)."""
    entries = _REGISTERED.get(model, {})
    entries.pop(tag, None)
    if not entries:
        _REGISTERED.pop(model, None)


def _user_entry(model: str, tag: str, file: str | Path, **facts: Any) -> Weights:
    MODELS.get(model)  # an unknown model: the registry's error, with close matches
    if not isinstance(tag, str) or not TAG.match(tag):
        raise ConfigError(f"weights tag {tag!r}: use letters, digits, '_' and '-' (e.g. 'digits', 'in1k_v1')")
    size, resize = facts.pop("image_size"), facts.pop("resize_size")
    for what, value in (("image_size", size), ("resize_size", resize)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"weights {model}.{tag}: {what} must be a positive whole number of pixels, not {value!r}")
    mean, std = (_floats(f"weights {model}.{tag}: {k}", facts.pop(k)) for k in ("mean", "std"))
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ConfigError(f"weights {model}.{tag}: mean and std need one value per channel, std above 0 (mean {list(mean)}, std {list(std)})")
    interpolation = facts.pop("interpolation")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"weights {model}.{tag}: interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    metrics = dict(facts.pop("metrics") or {})
    if not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in metrics.items()):
        raise ConfigError(f"weights {model}.{tag}: metrics must map names to numbers, e.g. {{acc@1: 91.4}}, not {metrics!r}")
    sha256 = facts.pop("sha256")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{8,64}", str(sha256)):
        raise ConfigError(f"weights {model}.{tag}: sha256 must be the file's hex digest (or its first 8 or more digits)")
    return Weights(
        name=f"{model}.{tag}", model=model, source=str(Path(file).expanduser()),
        preprocessing=Preprocessing(size, mean, std, resize, interpolation), sha256=sha256 and str(sha256).lower(),
        is_default=bool(facts.pop("default")), metrics=metrics, **facts,
    )  # fmt: skip


def _floats(what: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, Sequence) or isinstance(values, str) or not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise ConfigError(f"{what} must be a number per channel, e.g. [0.485, 0.456, 0.406], not {values!r}")
    return tuple(float(v) for v in values)


def _check_new(entry: Weights, existing: Sequence[Weights]) -> None:
    for other in existing:
        if other.member == entry.member and other != entry:  # a taken name (full or short), other facts
            raise ConfigError(f"weights {entry.name}: {entry.model} already has weights called {other.member!r} ({other.name})")
        if entry.is_default and other.is_default and other.name != entry.name:
            raise ConfigError(f"weights {entry.name}: {entry.model}'s DEFAULT weights are {other.name} already")


# --------------------------------------------------------------------------- YAML declarations


def weights_folders() -> list[Path]:
    """Where YAML declarations are read from: ``configs/weights`` in the working directory
    and in the package's configs (once if they are the same folder)."""
    folders = [Path.cwd() / "configs" / "weights", Path(config_dir()) / "weights"]
    return list({f.resolve(): f for f in folders if f.is_dir()}.values())


YAML_KEYS = ("model", "tag", "file", "image_size", "mean", "std", "resize_size", "interpolation", "num_classes",
             "dataset", "metrics", "sha256", "recipe", "license", "default")  # fmt: skip


def weights_from_yaml(path: str | Path) -> Weights:
    """The entry a ``configs/weights/*.yaml`` file declares (the keys of :func:`register_weights`)."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the weights declaration {path}: {' '.join(str(err).split())}") from None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{path}: a weights declaration is a mapping of {', '.join(YAML_KEYS)}")
    if unknown := sorted(set(spec) - set(YAML_KEYS)):
        raise ConfigError(f"{path}: unknown keys {', '.join(map(str, unknown))}; the keys are {', '.join(YAML_KEYS)}")
    if missing := [k for k in ("model", "file", "image_size", "mean", "std") if k not in spec]:
        raise ConfigError(f"{path}: missing {', '.join(missing)}")
    facts = {k: spec.get(k) for k in YAML_KEYS[3:]}  # what register_weights takes besides model, tag and file
    facts["interpolation"] = spec.get("interpolation", "bilinear")
    file = path.parent / Path(str(spec["file"])).expanduser()
    try:
        return _user_entry(str(spec["model"]), str(spec.get("tag", path.stem)), file, **facts)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _from_yaml(model: str) -> list[Weights]:
    entries = (weights_from_yaml(p) for folder in weights_folders() for p in sorted(folder.glob("*.yaml")))
    return [w for w in entries if w.model == model]


# --------------------------------------------------------------------------- the table


def _declared(model: str) -> list[Weights]:
    source = DECLARED_WEIGHTS.get(model)
    return source.entries(model) if source is not None else []


def list_weights(model: str) -> list[Weights]:
    """Every weights entry for ``model``: the ones declared with it (torchvision's), then the
    ones registered by :func:`register_weights`, then the YAML declarations. None for a
    model without published weights that nobody registered any for."""
    MODELS.get(model)  # an unknown model: the registry's error, with close matches
    entries = [*_declared(model), *_REGISTERED.get(model, {}).values()]
    for entry in _from_yaml(model):
        _check_new(entry, entries)
        if entry not in entries:
            entries.append(entry)
    return entries


def find_weights(name: str, model: str | None) -> Weights | None:
    """The entry ``name`` means: a full name (``ResNet50_Weights.IMAGENET1K_V2``,
    ``vit_tiny.digits``), or for ``model`` a short one (``IMAGENET1K_V2``, ``digits``) or
    ``DEFAULT``; ``None`` when it names none."""
    if model is not None and model in MODELS:
        for entry in list_weights(model):
            if name in (entry.name, entry.member) or name == "DEFAULT" and entry.is_default:
                return entry
    if TORCHVISION_NAME.match(name):  # another model's torchvision weights, named in full
        facts = torchvision_member(name)
        if facts is None:
            return None
        owner = next((m for m, d in DECLARED_WEIGHTS.items() if getattr(d, "enum", None) == facts["enum"]), model or "")
        return _torchvision_entry(facts, owner)
    owner = name.split(".", 1)[0]
    if "." in name and owner in MODELS and owner != model:  # another model's own, named in full: "vit_tiny.digits"
        return find_weights(name, owner)
    return None


def unknown_weights(weights: str, model: str) -> WeightsError:
    """The error for a weights name that is neither a file nor one of ``model``'s weights."""
    entries = list_weights(model)
    names = [w.member for w in entries] + (["DEFAULT"] if any(w.is_default for w in entries) else [])
    accepted = f"its weights are {', '.join(names)}" if names else "no weights are declared or registered for it"
    return WeightsError(f"unknown weights {weights!r} for {model}: not a file, and {accepted}")


def weights_transforms(model: str, weights: str = "DEFAULT") -> EvalTransform:
    """The evaluation transform of ``model``'s weights ``weights`` (resize, centre crop,
    scale to [0, 1], normalise), for a PIL image or a uint8 tensor."""
    entry = find_weights(weights, model)
    if entry is None:
        raise unknown_weights(weights, model)
    return entry.transforms()


def pretrained_config(model: str) -> PretrainedConfig:
    """``model``'s :class:`PretrainedConfig`: its default weights' preprocessing (or the
    model's own input size), its first convolution and classifier, and its weights."""
    entries = list_weights(model)
    net = build_on_meta(MODELS.get(model))
    spec = net.spec if isinstance(net, ImageModel) else None
    default = next((w for w in entries if w.is_default), entries[0] if entries else None)
    facts = default.preprocessing if default else Preprocessing(getattr(net, "default_image_size", None))
    resize = facts.resize_size or facts.image_size
    return PretrainedConfig(
        model=model, input_size=facts.image_size, mean=facts.mean, std=facts.std,
        interpolation=facts.interpolation if default else None,
        crop_pct=round(facts.image_size / resize, 4) if default and facts.image_size else None,
        first_conv=spec.first_conv if spec else None, classifier=spec.classifier if spec else None,
        weights=tuple(entries),
    )  # fmt: skip


__all__ = [
    "INTERPOLATIONS", "Preprocessing", "PretrainedConfig", "TorchvisionWeights", "Weights", "WeightsError", "find_weights",
    "list_weights", "pretrained_config", "register_weights", "torchvision_weights", "unknown_weights",
    "unregister_weights", "weights_from_yaml", "weights_folders", "weights_transforms",
]  # fmt: skip
