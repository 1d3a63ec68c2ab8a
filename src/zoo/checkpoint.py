"""The one place where files with tensors are read: safely, with errors that name the file.

``torch.load`` is always called with ``weights_only=True``, which unpickles only tensors
and plain containers and refuses anything that would import or call code; there is no
fallback to unrestricted unpickling. ``.safetensors`` files are read with safetensors.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from zoo.errors import ZooError


class CheckpointError(ZooError):
    """A checkpoint or weights file is missing, truncated, foreign or unsafe."""


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a ``.pt``/``.pth``/``.ckpt`` (restricted unpickling) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path.resolve()}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(path), device=str(map_location))
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{path.resolve()} is not a valid safetensors file: {err}") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path.resolve()} holds objects other than tensors and plain containers; "
            f"refusing to unpickle it ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path.resolve()} is not a readable checkpoint (truncated or corrupt?): {err}") from None


# Keys by which configuration systems name code to import and call (Hydra, LightningCLI,
# jsonargparse). Our hyperparameters are plain values and never contain them.
IMPORT_TARGET_KEYS = frozenset({"_target_", "_instantiator", "class_path", "_partial_"})


def _import_targets(tree: Any, where: str = "hyper_parameters") -> list[str]:
    if isinstance(tree, dict):
        found = [f"{where}.{k}" for k in tree if k in IMPORT_TARGET_KEYS]
        return found + [f for k, v in tree.items() for f in _import_targets(v, f"{where}.{k}")]
    if isinstance(tree, (list, tuple)):
        return [f for i, v in enumerate(tree) for f in _import_targets(v, f"{where}[{i}]")]
    return []


def load_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``zoo`` training checkpoint: a dict with ``state_dict`` and plain ``hyper_parameters``.

    Hyperparameters that name something to import (``_target_``, ``_instantiator``, ...)
    are refused: rebuilding the model from them could run code the file chose.
    """
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(
            f"{Path(path).resolve()} is not a zoo training checkpoint "
            f"(expected the keys 'state_dict' and 'hyper_parameters')"
        )
    targets = _import_targets(ckpt["hyper_parameters"]) + _import_targets(
        ckpt.get("datamodule_hyper_parameters", {}), "datamodule_hyper_parameters"
    )
    if targets:
        raise CheckpointError(
            f"{Path(path).resolve()} names import targets in its hyperparameters ({', '.join(targets)}); "
            f"zoo checkpoints hold plain values only, refusing to build from it"
        )
    return ckpt
