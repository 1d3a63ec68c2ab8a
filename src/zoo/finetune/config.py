"""The ``finetune`` config group, validated: which mode, which weights, which rates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from zoo.errors import ConfigError
from zoo.models.pretrained import EXPECTED

MODES = ("none", "freeze", "partial", "full", "gradual")
CHANNEL_ADAPTATIONS = ("sum", "repeat")
PREPROCESSING_SOURCES = ("pretrained", "data")


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
