"""What a run writes besides its checkpoints and logs: ``metrics.json`` (the test metrics and
the facts of the run), and the config as it ran (``config.yaml``: inferred options filled in)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from zoo.files import atomic_write

if TYPE_CHECKING:
    import lightning as L


def what_ran(cfg: DictConfig, data_options: dict, module: L.LightningModule, trainer: L.Trainer) -> dict:
    """The resolved config as it ran (config.yaml, the trackers' params): the data's inferred
    options as the data module resolved them, the model's as the data filled them in, the
    precision ``auto`` chose."""
    ran = OmegaConf.to_container(cfg, resolve=True)
    ran["data"] = data_options
    ran["model"] = {**ran["model"], **dict(module.hparams["model"])}
    ran["trainer"]["precision"] = str(trainer.precision)
    return ran


def ran_summary(ran: dict) -> dict:
    """What metrics.json records of :func:`what_ran`: the settings that are often inferred."""
    data = {k: ran["data"][k] for k in ("image_size", "resize_size", "mean", "std", "channels") if k in ran["data"]}
    return {"precision": ran["trainer"]["precision"], "data": data}


def write_metrics(path: Path, metrics: dict[str, Any], **info: Any) -> None:
    record = {"test": {k: float(v) for k, v in metrics.items()}, **info}
    atomic_write(path, json.dumps(record, indent=2) + "\n")
