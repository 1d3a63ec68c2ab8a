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

    zoo-bench --page docs/benchmarks/models.md      # the docs' model table
    zoo-bench 'resnet*'
    zoo-bench resnet50 vgg16 --throughput --batch-size 16 --image-size 112 --compare torchvision --threads 2
    zoo-bench 'efficientnet*' --throughput --device cuda --precision bf16 --channels-last
"""

from __future__ import annotations

import argparse
import csv
import inspect
import shlex
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import Progress

from zoo.benchmark import (
    CLEAR_REFS, SPREAD_LIMIT, Setting, TrainStep, busy_warning, cuda_peak_mib, peak_rss_mib, round_ratios, spread,
    synthetic_batch, time_interleaved, write_results_page,
)  # fmt: skip
from zoo.cli import tables
from zoo.cli.tables import Column, TextTable
from zoo.errors import ZooError
from zoo.models import MODELS, ImageModel
from zoo.perf import speed_up
from zoo.models.factory import build_on_meta
from zoo.profiling import count_macs, count_params

MAC_TOLERANCE = 0.02  # torchvision rounds its GFLOPS to 2 decimals: 0.386 shows as 0.39


def reference_path() -> Path:
    """``benchmarks/reference.yaml``: inside the installed package, else the repository's."""
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "benchmarks" / "reference.yaml"
    return packaged if packaged.is_file() else here.parents[3] / "benchmarks" / "reference.yaml"


def load_reference(path: Path | None = None) -> dict[str, dict[str, Any]]:
    path = path or reference_path()
    if not path.is_file():
        raise ZooError(f"the reference numbers file {path} does not exist")
    return yaml.safe_load(path.read_text())["models"]


@dataclass
class Row:
    model: str
    params: int
    macs: int | None
    image_size: int | None
    tv_params: int | None = None
    resizable: bool = True  # the constructor takes image_size (ViT, MLP), or the net takes any size
    ref: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)
    unsteady: list[str] = field(default_factory=list)  # timings whose rounds spread beyond SPREAD_LIMIT

    @property
    def flags(self) -> list[str]:
        published = self.ref.get("torchvision", {})
        flags = []
        if "params" in published and published["params"] != self.params:
            flags.append(f"params {self.params:,} != published {published['params']:,}")
        if "gflops" in published and self.macs is not None:
            if abs(self.macs / 1e9 - published["gflops"]) > MAC_TOLERANCE * published["gflops"]:
                flags.append(f"GMACs {self.macs / 1e9:.3f} != published {published['gflops']}")
        return flags

    def record(self) -> dict[str, Any]:
        tv, paper = self.ref.get("torchvision", {}), self.ref.get("paper", {})
        paper_text = f"{paper['metric']}: {paper['value']}" if paper else ""
        return {
            "model": self.model, "params": self.params, "torchvision_params": self.tv_params,
            "published_params": tv.get("params"), "gmacs": None if self.macs is None else round(self.macs / 1e9, 4),
            "published_gmacs": tv.get("gflops"), "image_size": self.image_size,
            "published_acc1": tv.get("acc1"), "published_acc5": tv.get("acc5"), "weights": tv.get("weights"),
            "paper": paper_text, **{k: round(v, 3) for k, v in self.measured.items()},
            "flags": "; ".join(self.flags) or "ok", **({"unsteady": "; ".join(self.unsteady)} if self.unsteady else {}),
        }  # fmt: skip


def torchvision_builder(name: str):
    import torchvision

    return (lambda **kw: torchvision.models.get_model(name, weights=None, **kw)) if name in torchvision.models.list_models() else None


def static_row(name: str, ref: dict[str, Any]) -> Row:
    """Parameters and MACs, counted on the ``meta`` device."""
    build = ref.get("build", {})
    model = build_on_meta(MODELS.get(name), **build)
    published = ref.get("torchvision", {})
    if isinstance(model, ImageModel):
        size = published.get("image_size", model.default_image_size)
        macs = count_macs(model, (1, model.in_channels, size, size))
    else:
        size, macs = None, count_macs(model)
    builder = torchvision_builder(name)
    tv_params = count_params(build_on_meta(builder, **build)) if builder else None
    resizable = getattr(model, "fixed_image_size", None) is None or "image_size" in inspect.signature(type(model)).parameters
    return Row(name, count_params(model), macs, size, tv_params, resizable=resizable, ref=ref)


class InferStep:
    """One forward pass in eval mode without autograd, as :class:`TrainStep` sets models up."""

    def __init__(self, train_step: TrainStep):
        self.train_step = train_step

    def __call__(self) -> torch.Tensor:
        step = self.train_step
        step.model.eval()
        with torch.inference_mode(), step.autocast():
            out = step.forward(step.inputs)
        step.model.train()
        return out


def build_step(
    source: str, name: str, batch_size: int, size: int, setting: Setting = Setting(),
    device: str = "cpu", num_classes: int = 1000,
) -> TrainStep:
    """A training step of ``name`` (``source``: ours or torchvision) on a synthetic batch,
    set up as zoo-train would run it (bf16 on a CPU: ``zoo.perf.speed_up``). Module-level,
    so that a fresh process can build it for the memory measurement."""
    torch.manual_seed(0)
    fixed = getattr(build_on_meta(MODELS.get(name)), "fixed_image_size", None)
    options = {"image_size": size} if fixed is not None and fixed != size else {}
    if source == "ours":
        model = MODELS.build(name, num_classes=num_classes, **options)
        if setting.precision == "bf16" and torch.device(device).type == "cpu":
            speed_up(model, "bf16-mixed", setting.channels_last, accelerator="cpu")
    else:
        model = torchvision_builder(name)(num_classes=num_classes, **options)
    inputs, targets = synthetic_batch(batch_size, getattr(model, "in_channels", 3), size, num_classes)
    return TrainStep(model, inputs, targets, setting, device)


def measure(row: Row, args: argparse.Namespace) -> None:
    """Throughput (images/s) and the training step's peak memory, into ``row.measured``."""
    size = (args.image_size if row.resizable else None) or row.image_size
    sources = ["ours"] + (["torchvision"] if args.compare == "torchvision" and torchvision_builder(row.model) else [])
    row.measured["timed_at_px"] = size
    setting = Setting(args.precision, args.channels_last, args.compile)
    build = {s: partial(build_step, s, row.model, args.batch_size, size, setting, args.device) for s in sources}
    steps = {s: b() for s, b in build.items()}
    timing = {f"{s} train": step for s, step in steps.items()}
    timing |= {f"{s} infer": InferStep(step) for s, step in steps.items()}
    seconds = time_interleaved(timing, rounds=args.rounds, steps_per_round=args.steps, warmup=args.warmup, device=args.device)
    for label, per_round in seconds.items():
        rates = [args.batch_size / s for s in per_round]
        key = label.replace(" ", "_")
        row.measured |= {f"{key}_img_s": statistics.median(rates), f"{key}_img_s_min": min(rates),
                         f"{key}_img_s_max": max(rates)}  # fmt: skip
        if spread(per_round) > SPREAD_LIMIT:
            row.unsteady.append(f"{label} rounds {spread(per_round):.0%} apart")
    if "torchvision train" in seconds:
        for kind in ("train", "infer"):
            ratios = round_ratios(seconds[f"ours {kind}"], seconds[f"torchvision {kind}"])  # pair by pair
            row.measured |= {f"{kind}_ratio_vs_torchvision": statistics.median(ratios),
                             f"{kind}_ratio_vs_torchvision_min": min(ratios),
                             f"{kind}_ratio_vs_torchvision_max": max(ratios)}  # fmt: skip
    if args.memory:
        for source, step in steps.items():
            if torch.device(args.device).type == "cuda":
                row.measured[f"{source}_train_peak_mib"] = cuda_peak_mib(step, args.device)
            elif CLEAR_REFS.exists():  # the fresh process's peak RSS
                row.measured[f"{source}_train_peak_mib"] = peak_rss_mib(build[source])


def markdown(rows: list[Row], args: argparse.Namespace, warnings: list[str] = ()) -> str:
    records = [r.record() for r in rows]
    columns = list(dict.fromkeys(k for r in records for k in r))
    lines = [
        f"zoo-bench, {datetime.now():%Y-%m-%d %H:%M}; device {args.device}, precision {args.precision}, "
        f"batch {args.batch_size}, channels_last {args.channels_last}, compile {args.compile}, "
        f"threads {torch.get_num_threads()}, {args.rounds} rounds (img/s: median, min, max over rounds)",
        *(f"Warning: {w}" for w in warnings),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in records:
        lines.append("| " + " | ".join("" if r.get(c) is None else f"{r[c]:,}" if isinstance(r.get(c), int) else str(r[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(rows: list[Row]) -> str:
    """The compact table of the docs (docs/benchmarks/models.md): ours beside the published numbers, checked."""
    lines = [
        "| model | params: ours / published | GMACs: ours / published (px) | published acc@1 / acc@5 (torchvision weights) | paper | check |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        tv, paper = r.ref.get("torchvision", {}), r.ref.get("paper", {})
        params = f"{r.params:,} / {tv['params']:,}" if "params" in tv else f"{r.params:,} / -"
        macs = "-" if r.macs is None else f"{r.macs / 1e9:.4g}"
        macs += f" / {tv['gflops']} ({r.image_size})" if "gflops" in tv else f" / - ({r.image_size or 'example'})"
        acc = f"{tv['acc1']} / {tv['acc5']} ({tv['weights'].split('.')[-1]})" if "acc1" in tv else "-"
        paper_text = f"{paper['metric']}: {paper['value']}" if paper else "-"
        lines.append(f"| `{r.model}` | {params} | {macs} | {acc} | {paper_text} | {'; '.join(r.flags) or 'ok'} |")
    return "\n".join(lines) + "\n"


def write_page(page: Path, command: str, rows: list[Row], plots: list[Path]) -> None:
    """``summary.md`` as a documentation page (:func:`zoo.benchmark.write_results_page`), the plots beside it."""
    intro = [
        "Parameters and multiply-accumulates (MACs, `torch.utils.flop_counter` on the `meta` device, at the",
        "published input size with 1,000 classes) of every registered model, beside torchvision's counts, its",
        "weights' published ImageNet accuracy and the papers' headline results (`benchmarks/reference.yaml`,",
        "each with its source, held to torchvision's weights metadata by the tests). A count that disagrees",
        "is flagged in the last column. Written by:",
    ]
    body = [summary_markdown(rows).rstrip()]
    page.parent.mkdir(parents=True, exist_ok=True)
    for image in plots:
        target = page.with_name(f"{page.stem}-{image.name}")
        shutil.copyfile(image, target)
        body += ["", f"![{image.stem.replace('_', ' ')}]({target.name})"]
    write_results_page(page, "Models: ours beside the published numbers", intro, command, body)


def plot(rows: list[Row], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    points = [(r.macs / 1e9, r.ref["torchvision"]["acc1"], r.model) for r in rows if r.macs and "acc1" in r.ref.get("torchvision", {})]
    if points:
        fig, ax = plt.subplots(figsize=(7, 5))
        for x, y, name in points:
            ax.scatter(x, y)
            ax.annotate(name, (x, y), fontsize=7)
        ax.set(xscale="log", xlabel="GMACs (ours, at the published input size)", ylabel="published acc@1 (%)",
               title="ImageNet-1K accuracy of torchvision's weights against compute")  # fmt: skip
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_macs.png", dpi=120)
        plt.close(fig)
        written.append(out / "accuracy_vs_macs.png")
    points = [(r.params / 1e6, r.measured["ours_train_img_s"], r.model) for r in rows if "ours_train_img_s" in r.measured]
    if points:
        fig, ax = plt.subplots(figsize=(7, 5))
        for x, y, name in points:
            ax.scatter(x, y)
            ax.annotate(name, (x, y), fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel="parameters (M)", ylabel="training images/s", title="Training throughput")
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_params.png", dpi=120)
        plt.close(fig)
        written.append(out / "throughput_vs_params.png")
    return written


def bench(args: argparse.Namespace) -> list[Row]:
    reference = load_reference(args.reference)
    names = list(dict.fromkeys(n for pattern in args.patterns for n in MODELS.names(pattern)))
    if not names:
        raise ZooError(f"no registered model matches {args.patterns}; available: {', '.join(MODELS.names())}")
    rows = [static_row(name, reference.get(name, {})) for name in names]
    check_options(rows, args)
    out = Path(args.out or f"outputs/bench/{datetime.now():%Y-%m-%d/%H-%M-%S}")
    out.mkdir(parents=True, exist_ok=True)
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
    records = [r.record() for r in rows]
    columns = list(dict.fromkeys(k for r in records for k in r))
    with open(out / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
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
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=None, help="default: each model's published input size")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median, min and max are reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the timings (default: torch's)")
    parser.add_argument("--steps", type=int, default=2, help="steps per round per candidate")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    parser.add_argument("--compare", choices=["torchvision"], default=None)
    parser.add_argument("--page", default=None, help="also write the summary as this documentation page (Markdown)")
    tables.add_format_argument(parser)
    args = parser.parse_args(argv)
    args.command = shlex.join(["zoo-bench", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        bench(args)
    except ZooError as err:
        raise SystemExit(f"Error: {err}") from None


if __name__ == "__main__":
    main()
