"""``zoo-models [PATTERN]``: the registered models with parameter counts and MACs;
``zoo-models --weights [PATTERN]``: the weights each can load (the table of
:mod:`zoo.models.weights`: torchvision's, read offline from its metadata, and your
registered ones), with their score, cost and preprocessing.

``--format`` (:mod:`zoo.cli.tables`): a table fitted to the terminal, Markdown in a pipe."""

from __future__ import annotations

import argparse

from zoo.cli.tables import Column, TextTable, add_format_argument, print_table
from zoo.models.factory import build_on_meta
from zoo.bench.profiling import count_macs, count_params
from zoo.models import MODELS
from zoo.models.weights import list_weights


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


def weights_table(pattern: str = "*") -> TextTable:
    """One row per weights entry of the models matching ``pattern`` (``zoo.list_weights``)."""
    # Left out first on a narrow terminal: the file size, then the secondary accuracy and the cost.
    columns = [Column("model"), Column("weights"), Column("acc@1", numeric=True), Column("acc@5", numeric=True, drop=2),
               Column("GFLOPS", numeric=True, drop=3), Column("MB", numeric=True, drop=1),
               Column("resize->crop", numeric=True, drop=4)]  # fmt: skip
    title = ("weights (accuracy on ImageNet-1K for torchvision's, on the declared dataset for yours; "
             "zoo.create_model(name, weights=...) loads them)")  # fmt: skip
    table = TextTable(title, columns)

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for name in MODELS.names(pattern):
        for w in list_weights(name):
            default = " (DEFAULT)" if w.is_default else ""
            pre = w.preprocessing
            prep = f"{pre.resize_size or pre.image_size}->{pre.image_size} {pre.interpolation}"
            table.rows.append([name, w.member + default, number(w.metrics.get("acc@1"), 3),
                               number(w.metrics.get("acc@5"), 3), number(w.gflops, 2), number(w.file_size_mb, 1),
                               prep])  # fmt: skip
    return table


def models_table(pattern: str = "*", macs: bool = True) -> TextTable:
    """One row per registered model matching ``pattern``: :func:`model_rows` as text."""
    columns = [Column("model"), Column("params", numeric=True), Column("GMACs", numeric=True, drop=2),
               Column("input (one example)", numeric=True, drop=1)]  # fmt: skip
    table = TextTable("zoo models (default constructor arguments)", columns)
    for name, params, n_macs, shape in model_rows(pattern, macs=macs):
        table.rows.append([name, f"{params:,}", "-" if n_macs is None else f"{n_macs / 1e9:.4g}", shape])
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zoo-models", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    parser.add_argument("--no-macs", action="store_true", help="skip counting MACs")
    parser.add_argument("--weights", action="store_true", help="list the weights each model loads (torchvision's and your registered ones)")
    add_format_argument(parser)
    args = parser.parse_args(argv)
    table = weights_table(args.pattern) if args.weights else models_table(args.pattern, macs=not args.no_macs)
    print_table(table, args.format)


if __name__ == "__main__":
    main()
