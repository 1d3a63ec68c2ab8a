"""Lightning's checkpoint plugin for this project: every checkpoint Lightning writes is
written atomically beside its destination, and every one it reads goes through
:mod:`zoo.checkpoint`.

Lightning's own ``TorchCheckpointIO`` saves through a temporary file that may live on
another filesystem (``TMPDIR``), where the final move is a copy: a kill during it left a
0-byte ``last.ckpt`` and the previous one lost. Here the temporary file is in the
checkpoint's folder, flushed and fsynced, then renamed (:func:`zoo.files.atomic_writer`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo.checkpoint import load_lightning_checkpoint
from zoo.files import atomic_writer


class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic local saves; loads restricted to tensors and plain values (``weights_only``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_writer(path) as file:
            torch.save(checkpoint, file)

    def load_checkpoint(
        self, path: str | Path, map_location: Callable | str | torch.device | None = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        # weights_only is always true here, whatever the caller asks.
        return load_lightning_checkpoint(path, map_location=map_location or "cpu")
