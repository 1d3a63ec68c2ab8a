"""The data settings of a fine-tuning run, from the pretrained weights: the image size,
normalisation and resize the weights were trained with fill the data options the user left
``null`` (``finetune.preprocessing=pretrained``), and :func:`data_options_used` records what ran."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from zoo.finetune.config import FinetuneConfig
from zoo.models import get_model
from zoo.models.pretrained import Pretrained, first_conv

log = logging.getLogger(__name__)


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
    (averaged for data of another channel count), ``resize_size`` (the weights' own,
    where the data is fed at their crop size) and ``interpolation`` (the resize's). An explicit ``image_size``, ``mean`` or
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
        if data_cfg.get("interpolation", 0) is None:  # the weights' resize: bicubic for some (ViT SWAG, EfficientNet V1)
            changed["interpolation"] = facts.interpolation
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
INFERRED_DATA_OPTIONS = ("image_size", "resize_size", "interpolation", "mean", "std")


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
