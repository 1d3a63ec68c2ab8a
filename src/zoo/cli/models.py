"""``zoo-models [PATTERN]``: the registered models with parameter counts and MACs;
``zoo-models --weights [PATTERN]``: the torchvision weights each can load, with their
published accuracy, cost and preprocessing (from torchvision's metadata, offline)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from zoo.profiling import build_on_meta, count_macs, count_params
from zoo.models import MODELS
from zoo.pretrained import list_weights


def model_rows(pattern: str = "*", macs: bool = True) -> list[tuple[str, int, int | None, str]]:
    """``(name, parameters, MACs of one example, the example's shape)`` per model."""
    rows = []
    for name in MODELS.names(pattern):
        model = build_on_meta(MODELS.get(name))
        inputs = model.example_inputs()
        n_macs = count_macs(model, inputs) if macs else None
        shape = "x".join(str(d) for d in inputs[0].shape[1:])
        rows.append((name, count_params(model), n_macs, shape))
    return rows


def weights_table(pattern: str = "*") -> Table:
    """One row per torchvision weights of the models matching ``pattern`` (``zoo.list_weights``)."""
    table = Table(title="torchvision weights (ImageNet-1K; zoo.create_model(name, weights=...) loads them)")
    for column in ("model", "weights", "acc@1", "acc@5", "GFLOPS", "MB", "resize->crop"):
        table.add_column(column, justify="left" if column in ("model", "weights") else "right", no_wrap=True)
    for name in MODELS.names(pattern):
        for w in list_weights(name):
            default = " (DEFAULT)" if w.is_default else ""
            prep = f"{w.resize_size}->{w.crop_size} {w.interpolation}"
            table.add_row(name, w.member + default, f"{w.acc1:.3f}", f"{w.acc5:.3f}", f"{w.gflops:.2f}",
                          f"{w.file_size_mb:.1f}", prep)  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zoo-models", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    parser.add_argument("--no-macs", action="store_true", help="skip counting MACs")
    parser.add_argument("--weights", action="store_true", help="list the torchvision weights each model loads")
    args = parser.parse_args(argv)
    if args.weights:
        Console().print(weights_table(args.pattern))
        return
    table = Table(title="zoo models (default constructor arguments)")
    for column in ("model", "params", "GMACs", "input (one example)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, params, macs, shape in model_rows(args.pattern, macs=not args.no_macs):
        table.add_row(name, f"{params:,}", "-" if macs is None else f"{macs / 1e9:.4g}", shape)
    Console().print(table)


if __name__ == "__main__":
    main()
