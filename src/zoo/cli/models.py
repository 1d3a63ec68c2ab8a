"""``zoo-models [PATTERN]``: the registered models with parameter counts and MACs."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from zoo.profiling import build_on_meta, count_macs, count_params
from zoo.registry import MODELS


def model_rows(pattern: str = "*", macs: bool = True) -> list[tuple[str, int, int | None, int]]:
    """``(name, parameters, MACs at the default input, default input size)`` per model."""
    rows = []
    for name in MODELS.names(pattern):
        model = build_on_meta(MODELS.get(name))
        size = model.default_image_size
        n_macs = count_macs(model, (1, model.in_channels, size, size)) if macs else None
        rows.append((name, count_params(model), n_macs, size))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zoo-models", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    parser.add_argument("--no-macs", action="store_true", help="skip counting MACs")
    args = parser.parse_args(argv)
    table = Table(title="zoo models (default constructor arguments)")
    for column in ("model", "params", "GMACs", "input"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, params, macs, size in model_rows(args.pattern, macs=not args.no_macs):
        table.add_row(name, f"{params:,}", "-" if macs is None else f"{macs / 1e9:.4g}", f"{size}x{size}")
    Console().print(table)


if __name__ == "__main__":
    main()
