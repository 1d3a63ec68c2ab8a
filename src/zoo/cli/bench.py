"""``zoo-bench [PATTERN]``: the benchmark table of the registered models, beside the published numbers.

For every model the pattern matches: parameters (ours, torchvision's same architecture,
the published count), MACs at the published input size (``torch.utils.flop_counter``, on
the ``meta`` device), the published accuracy (``benchmarks/reference.yaml``), and with
``--throughput`` the inference and training throughput at ``--batch-size`` on ``--device``
at ``--precision``, and the training step's peak memory (CUDA: max allocated; CPU: the
peak resident memory a fresh process adds). Each throughput is the median over
``--rounds`` with its min and max; ``--threads`` sets torch's threads. A warning says
the figures are unreliable when the rounds spread more than 10% or the load average
already exceeds the cores. ``--compare torchvision`` times torchvision's same
architecture side by side, interleaved, and gives the ratio round by round (median, min,
max). Options the run would ignore (``--image-size`` for a model of fixed input size, or
without ``--throughput``) are refused.

Writes ``bench.csv``, ``bench.md`` (every column), ``summary.md`` (ours beside the published
numbers) and two plots (published acc@1 against MACs; training throughput against
parameters, with ``--throughput``) into ``--out``. A parameter count that differs from the
published one, or MACs more than 2% off, is flagged in the table. ``--page`` also writes
``summary.md`` as a documentation page, headed by the command, date and machine, with
the accuracy plot beside it. The table on stdout follows ``--format`` (``zoo.cli.tables``):
fitted to the terminal, Markdown in a pipe or file, or CSV.

``--infer`` times using the image models instead (:mod:`zoo.bench.inference`): batch-1
latency and ``--batch-size`` (default 32) throughput per backend (``--backends``: eager fp32,
bf16 + channels_last, torch.compile, ONNX Runtime), beside torchvision's same architecture
pair by pair; writes ``inference.csv`` and ``inference.md`` into ``--out``, and with
``--page`` the documentation page.

    zoo-bench --page docs/benchmarks/models.md      # the docs' model table
    zoo-bench --infer resnet18 resnet50 --threads 2 --page docs/benchmarks/inference.md
    zoo-bench 'resnet*'
    zoo-bench resnet50 vgg16 --throughput --batch-size 16 --image-size 112 --compare torchvision --threads 2
    zoo-bench 'efficientnet*' --throughput --device cuda --precision bf16 --channels-last
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from zoo.bench.inference import BACKENDS, InferRow
from zoo.bench.inference import measure as measure_inference
from zoo.bench.inference import table as inference_table
from zoo.bench.models import Row, load_reference, measure, static_row
from zoo.bench.pages import markdown, plot, summary_markdown, write_inference_page, write_page, write_records
from zoo.bench.timing import SPREAD_LIMIT, busy_warning
from zoo.cli import tables
from zoo.cli.tables import Column, TextTable
from zoo.errors import ZooError
from zoo.files import atomic_write
from zoo.models import MODELS


def matched_models(patterns: list[str]) -> list[str]:
    """The registered models the patterns match, each once, in the patterns' order."""
    names = list(dict.fromkeys(n for pattern in patterns for n in MODELS.names(pattern)))
    if not names:
        raise ZooError(f"no registered model matches {patterns}; available: {', '.join(MODELS.names())}")
    return names


def output_folder(out: str | None) -> Path:
    """``--out``, or a new ``outputs/bench/<date>/<time>``, created."""
    folder = Path(out or f"outputs/bench/{datetime.now():%Y-%m-%d/%H-%M-%S}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def bench_inference(args: argparse.Namespace) -> list[InferRow]:
    """``zoo-bench --infer``: time the models' inference per backend, write the CSV, the table and the page."""
    names = matched_models(args.patterns)
    if unknown := [b for b in args.backends if b not in BACKENDS]:
        raise ZooError(f"--backends takes {', '.join(BACKENDS)}; got {', '.join(unknown)}")
    if args.threads is not None and args.threads < 1:
        raise ZooError(f"--threads must be at least 1, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = output_folder(args.out)
    warnings = [busy] if (busy := busy_warning()) else []
    rows: list[InferRow] = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("zoo-bench --infer", total=len(names))
        for name in names:
            progress.update(task, description=f"zoo-bench --infer {name}")
            rows += measure_inference(name, args.backends, args.batch_size, args.image_size, args.rounds,
                                      args.steps, args.warmup)  # fmt: skip
            progress.advance(task)
    if unsteady := [u for row in rows for u in row.unsteady()]:
        warnings.append(f"figures unreliable: rounds spread beyond {SPREAD_LIMIT:.0%} ({'; '.join(unsteady)})")
    write_records(out / "inference.csv", [row.record() for row in rows])
    lines = inference_table(rows)
    atomic_write(out / "inference.md", "\n".join(lines) + "\n")
    if args.page:
        write_inference_page(Path(args.page), args.command, rows, warnings)
    print("\n".join(lines))
    for warning in warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    return rows


def bench(args: argparse.Namespace) -> list[Row]:
    reference = load_reference(args.reference)
    rows = [static_row(name, reference.get(name, {})) for name in matched_models(args.patterns)]
    check_options(rows, args)
    out = output_folder(args.out)
    warnings = []
    if args.throughput:
        if args.threads:
            torch.set_num_threads(args.threads)
        if busy := busy_warning():
            warnings.append(busy)
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("zoo-bench", total=len(rows))
            for row in rows:
                progress.update(task, description=f"zoo-bench {row.model}")
                if row.image_size is not None:
                    measure(row, args)
                progress.advance(task)
        if unsteady := [f"{r.model}: {'; '.join(r.unsteady)}" for r in rows if r.unsteady]:
            warnings.append(f"figures unreliable: rounds spread beyond {SPREAD_LIMIT:.0%} ({'; '.join(unsteady)})")
    write_records(out / "bench.csv", [r.record() for r in rows])
    (out / "bench.md").write_text(markdown(rows, args, warnings))
    (out / "summary.md").write_text(summary_markdown(rows))
    plots = plot(rows, out)
    if args.page:
        write_page(Path(args.page), args.command, rows, plots)
    print_table(rows, out, args.format)
    for warning in warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    return rows


def check_options(rows: list[Row], args: argparse.Namespace) -> None:
    """Refuse an option the run would ignore, rather than print figures it did not shape."""
    if not args.throughput:
        given = [flag for flag, value in (("--image-size", args.image_size), ("--compare", args.compare),
                                          ("--threads", args.threads)) if value is not None]  # fmt: skip
        if given:
            raise ZooError(
                f"{', '.join(given)} only apply to the timings: add --throughput "
                f"(the counts are taken at each model's published input size)"
            )
    if args.image_size is not None and (fixed := [f"{r.model} ({r.image_size} px)" for r in rows if not r.resizable]):
        raise ZooError(
            f"--image-size {args.image_size} cannot apply to {', '.join(fixed)}: their input size is fixed; "
            f"leave them out or drop --image-size"
        )
    if args.threads is not None and args.threads < 1:
        raise ZooError(f"--threads must be at least 1, got {args.threads}")


def print_table(rows: list[Row], out: Path, fmt: str = "auto", console: Console | None = None) -> None:
    """The run's table on stdout, in ``fmt`` (:mod:`zoo.cli.tables`): fitted to the terminal, Markdown in a pipe."""
    timed = any("ours_train_img_s" in r.measured for r in rows)
    compared = any("train_ratio_vs_torchvision" in r.measured for r in rows)
    # Left out first on a narrow terminal: the published counts (the check column flags a
    # disagreement), then the inference figures, the published accuracy, then ours.
    columns = [Column("model"), Column("params", numeric=True, drop=7),
               Column("published", numeric=True, drop=2, about="published params"),
               Column("GMACs", numeric=True, drop=6),
               Column("published", numeric=True, drop=1, about="published GMACs"),
               Column("acc@1", numeric=True, drop=5)]  # fmt: skip
    columns += [Column("train img/s", numeric=True, drop=9), Column("infer img/s", numeric=True, drop=4)] if timed else []
    columns += [Column("train vs tv", numeric=True, drop=8), Column("infer vs tv", numeric=True, drop=3)] if compared else []
    table = TextTable(f"zoo-bench (tables and plots in {out})", [*columns, Column("check")])
    for r in rows:
        tv, m = r.ref.get("torchvision", {}), r.measured
        cells = [
            r.model, f"{r.params:,}", f"{tv['params']:,}" if "params" in tv else "-",
            "-" if r.macs is None else f"{r.macs / 1e9:.4g}", str(tv.get("gflops", "-")), str(tv.get("acc1", "-")),
        ]  # fmt: skip
        keys = (["ours_train_img_s", "ours_infer_img_s"] if timed else []) + (
            ["train_ratio_vs_torchvision", "infer_ratio_vs_torchvision"] if compared else [])  # fmt: skip
        cells += [f"{m[k]:.3g} ({m[k + '_min']:.3g}-{m[k + '_max']:.3g})" if k in m else "-" for k in keys]
        table.rows.append([*cells, "; ".join(r.flags) or "ok"])
    tables.print_table(table, fmt, console)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="zoo-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="*", default=["*"], help="model names or shell-style patterns")
    parser.add_argument("--out", default=None, help="output folder (default outputs/bench/<date>/<time>)")
    parser.add_argument("--reference", type=Path, default=None, help="published numbers (default benchmarks/reference.yaml)")
    parser.add_argument("--throughput", action="store_true", help="also time inference and training steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16"], help="autocast precision")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", default=None, help="a torch.compile mode")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (--throughput), 32 (--infer)")
    parser.add_argument("--image-size", type=int, default=None, help="default: each model's published input size")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median, min and max are reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the timings (default: torch's)")
    parser.add_argument("--steps", type=int, default=2, help="steps per round per candidate")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    parser.add_argument("--compare", choices=["torchvision"], default=None)
    parser.add_argument("--infer", action="store_true", help="time inference per backend instead (zoo.bench.inference)")
    parser.add_argument("--backends", type=lambda text: text.split(","), default=list(BACKENDS),
                        help=f"with --infer: comma-separated, of {','.join(BACKENDS)} (default: all)")
    parser.add_argument("--page", default=None, help="also write the summary as this documentation page (Markdown)")
    tables.add_format_argument(parser)
    args = parser.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 32 if args.infer else 8
    args.command = shlex.join(["zoo-bench", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        bench_inference(args) if args.infer else bench(args)
    except ZooError as err:
        raise SystemExit(f"Error: {err}") from None


if __name__ == "__main__":
    main()
