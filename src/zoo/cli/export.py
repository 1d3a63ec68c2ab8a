"""``zoo-export ckpt_path=... format=onnx``: ship a trained image model as one file.

Writes the checkpoint's network as an ONNX file (``format=onnx``, run it with onnxruntime)
or a ``torch.export`` program (``format=torch_export``, a ``.pt2`` file that PyTorch loads
without this package's code) with :mod:`zoo.export`: a dynamic batch dimension and the
image size and channels the checkpoint was trained on (``(B, C, image_size, image_size)``,
after the checkpoint's own preprocessing, which the graph does not contain). An ONNX file
describes that preprocessing and the class names in its metadata
(:func:`zoo.export.image_metadata`), so onnxruntime, numpy and PIL classify an image with
the file alone (``docs/inference.md``). The file goes beside the checkpoint
(``<stem>.onnx`` / ``<stem>.pt2``) unless ``out`` is given, and is kept only if it matches
the eager network; stdout shows its path and that difference. It is written whole or not
at all (a full disk leaves the previous file), and an ``out`` that cannot be written (a
folder, a path under a file) is refused in one line before the checkpoint is read.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from zoo import export as exporting
from zoo import inference
from zoo.data.inputs import ImageInputs
from zoo.errors import ConfigError


def export(cfg: DictConfig) -> exporting.Exported:
    """Export ``cfg.ckpt_path`` as ``cfg.format`` and print where it went and how close it is."""
    exporting.check_format(cfg.format)  # before the checkpoint is read: a typo fails at once
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {cfg.batch_size!r}")
    if cfg.opset is not None and (cfg.format != "onnx" or not isinstance(cfg.opset, int)):
        raise ConfigError(f"opset must be null or an ONNX opset version with format=onnx, got opset={cfg.opset!r}")
    out = Path(cfg.out) if cfg.out else exporting.default_path(cfg.ckpt_path, cfg.format)
    inference.check_output(out)  # a folder, or a path under a file: refused before any work
    trained = inference.load_trained(cfg.ckpt_path, cfg.device)
    name = trained.model_name
    exporting.check_exportable(trained.net, cfg.format, name)
    inputs = trained.inputs
    if not isinstance(inputs, ImageInputs):
        raise ConfigError(f"{trained.path} was not trained on images; zoo-export exports image classifiers")
    c, s = inputs.in_channels, inputs.image_size
    example = torch.randn(cfg.batch_size, c, s, s, generator=torch.Generator().manual_seed(0))
    metadata = exporting.image_metadata(inputs)
    result = exporting.export_model(
        trained.net, example, out, cfg.format, opset=cfg.opset, name=name, metadata=metadata
    )
    kind = f"ONNX opset {result.opset}" if result.format == "onnx" else "torch.export program"
    runner = "onnxruntime" if result.format == "onnx" else "torch.export.load"
    print(f"wrote {result.path} ({kind}, input (batch, {c}, {s}, {s}))")
    where = "metadata_props" if result.format == "onnx" else f"extra file {exporting.PROGRAM_METADATA}"
    print(f"with the preprocessing and {len(inputs.class_names)} class names in its {where}")
    print(
        f"checked with {runner} at batch sizes {', '.join(map(str, result.batch_sizes))}: "
        f"max abs difference to the eager network {result.max_abs_diff:.3g}"
    )
    return result


def run(cfg: DictConfig) -> None:
    """What ``zoo-export`` runs once Hydra has composed ``cfg`` (see :mod:`zoo.cli.launch`)."""
    export(cfg)


if __name__ == "__main__":
    from zoo.cli.launch import export as main

    main()
