"""The one place where files with tensors are read: safely, with errors that name the file.

``torch.load`` is always called with ``weights_only=True``, which unpickles only tensors
and plain containers and refuses anything that would import or call code; there is no
fallback to unrestricted unpickling. ``.safetensors`` files are read with safetensors.
A ``torch.export`` program (``.pt2``) or an ONNX model given as weights is refused by its
name before it is opened (``torch.export.load`` would unpickle; neither holds a state_dict);
one renamed to ``.pth`` still only meets the restricted unpickler, which finds no
``data.pkl`` in it. :func:`check_fits` compares a checkpoint's weights with the network
its hyperparameters describe, built on the ``meta`` device, before that network takes memory.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from zoo.errors import ZooError


# How torch's restricted unpickler names what it refused ("... GLOBAL posix.system ...").
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


# Where training writes what using the network needs of its inputs (zoo.data.inputs).
INPUTS_KEY = "zoo_inputs"


class CheckpointError(ZooError):
    """A checkpoint or weights file is missing, truncated, foreign or unsafe."""


# Files that are models but not weights: refused by name, never opened.
_NOT_WEIGHTS = {".pt2": "a torch.export program (.pt2)", ".onnx": "an ONNX model (.onnx)"}


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a ``.pt``/``.pth``/``.ckpt`` (restricted unpickling) or ``.safetensors`` file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path.resolve()} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path.resolve()}")
    if path.suffix.lower() in _NOT_WEIGHTS:
        raise CheckpointError(
            f"{path.resolve()} is {_NOT_WEIGHTS[path.suffix.lower()]}, not a checkpoint or weights file: "
            f"exported models are never read back"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(path), device=str(map_location))
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{path.resolve()} is not a valid safetensors file: {err}") from None
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.resolve()} is empty (0 bytes): not a checkpoint")
    try:
        with warnings.catch_warnings():  # damaged bytes can look like an unknown pickle protocol
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = _BLOCKED_GLOBAL.search(str(err))
        if not blocked:  # damaged bytes, or a pickle written by something other than torch.save
            raise CheckpointError(
                f"{path.resolve()} is not a readable checkpoint: not the tensors and plain containers "
                f"torch.save writes (damaged, or written by another program)"
            ) from None
        raise CheckpointError(
            f"{path.resolve()} is refused: it names {blocked.group(1)}, which only code could build; "
            f"checkpoints and weights must hold tensors and plain containers only (a state_dict, or .safetensors)"
        ) from None
    except Exception as err:  # noqa: BLE001  (restricted unpickling of damaged bytes fails in many ways)
        if "failed locating file data.pkl" in str(err):  # a zip, but not one torch.save wrote (a renamed .pt2?)
            raise CheckpointError(
                f"{path.resolve()} is not a readable checkpoint: a zip archive without torch.save's data.pkl "
                f"(a torch.export program, or another archive?)"
            ) from None
        reason = " ".join(str(err).split()[:24]) or type(err).__name__
        raise CheckpointError(f"{path.resolve()} is not a readable checkpoint (truncated or corrupt?): {reason}") from None


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


def load_lightning_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A ``zoo`` training checkpoint: a dict with ``state_dict`` and plain ``hyper_parameters``.

    Hyperparameters that name something to import (``_target_``, ``_instantiator``, ...)
    are refused: rebuilding the model from them could run code the file chose.
    """
    ckpt = load_file(path, map_location)
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


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The checkpoint of a training run at ``path``, to resume from: besides
    :func:`load_lightning_checkpoint`'s checks, the optimizer and loop states, not only weights."""
    ckpt = load_lightning_checkpoint(path)
    missing = [key for key in ("optimizer_states", "loops", "epoch", "global_step") if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{Path(path).resolve()} holds weights but not a training run's state (no {', '.join(missing)}); "
            f"to start from its weights use finetune.weights={path} instead of resuming"
        )
    return ckpt


def check_resumable(ckpt: dict[str, Any], module: torch.nn.Module, path: str | Path) -> None:
    """Refuse, in one line, to resume ``module`` from ``ckpt`` (read from ``path`` by
    :func:`load_training_state`) unless its parameters have the names and shapes of ``module``'s."""
    where = Path(path).resolve()
    saved = ckpt["state_dict"]
    expected = module.state_dict()
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise CheckpointError(f"{where}: its state_dict is not a mapping of names to tensors")
    absent, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    reshaped = [k for k in expected if k in saved and saved[k].shape != expected[k].shape]
    if absent or extra or reshaped:
        model_hparams = ckpt["hyper_parameters"].get("model") if isinstance(ckpt["hyper_parameters"], dict) else None
        saved_model = model_hparams.get("name", "another model") if isinstance(model_hparams, dict) else "another model"
        detail = (
            f"missing {absent[0]}" if absent else f"unexpected {extra[0]}" if extra
            else f"{reshaped[0]} is {tuple(saved[reshaped[0]].shape)}, here {tuple(expected[reshaped[0]].shape)}"
        )
        raise CheckpointError(
            f"{where} was saved from {saved_model} and does not fit this run's model "
            f"({len(absent) + len(extra) + len(reshaped)} parameters differ: {detail}); "
            f"resume with the config it was trained with"
        )


def check_fits(saved: Any, expected: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse, in one line naming ``path``, weights ``saved`` that are not exactly the names
    and shapes of ``expected``: the state_dict of the network the checkpoint's own
    hyperparameters describe, built on the ``meta`` device. Its sizes come from the file,
    so they are checked against the file's weights before the network takes any memory."""
    where = Path(path).resolve()
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise CheckpointError(f"{where}: its state_dict is not a mapping of names to tensors")
    for key, tensor in expected.items():
        if key not in saved:
            detail = f"{key} is missing from its weights"
        elif saved[key].shape != tensor.shape:
            detail = f"{key} is {tuple(saved[key].shape)} in its weights, {tuple(tensor.shape)} by its hyperparameters"
        else:
            continue
        break
    else:
        extra = next((key for key in saved if key not in expected), None)
        if extra is None:
            return
        detail = f"its weights hold {extra}, which the network has not"
    raise CheckpointError(
        f"{where}: its weights do not fit the network its hyperparameters describe ({detail}); "
        f"refusing to build it (a damaged or edited checkpoint?)"
    )
