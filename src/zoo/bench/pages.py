"""The pages and plots the benchmarks write: every generated page of ``docs/benchmarks/``
is headed the same way (:func:`write_results_page`: title, what was measured, the command,
the date and machine), ``zoo-bench``'s tables and plots (:func:`markdown`,
:func:`summary_markdown`, :func:`plot`), and the sections of README.md a script writes from
its results file (:func:`write_generated_section`), so that each number the README shows
has one home."""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import importlib.metadata
import re
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from zoo.bench.inference import BACKENDS, InferRow, auto_rule, fastest
from zoo.bench.inference import table as inference_table
from zoo.bench.models import Row
from zoo.errors import ZooError
from zoo.files import atomic_write


def machine_description() -> str:
    """This machine as the results pages name it: architecture, CPU cores, torch version."""
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def write_results_page(
    page: Path, title: str, intro: Sequence[str], command: str, body: Sequence[str], date: str | None = None,
    machine: str | None = None,
) -> None:
    """A documentation page of measured results, as every generated page of
    ``docs/benchmarks/`` is written: the title, ``intro`` (what was measured, ending with
    "Written by:"), the command, the date and machine (default: today, this one), then
    ``body`` (tables, notes)."""
    date = date or datetime.date.today().isoformat()
    machine = machine or machine_description()
    lines = [f"# {title}", "", *intro, "", f"```bash\n{command}\n```", "", f"on {date}, {machine}.", "", *body]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n")
    print(f"wrote {page}")


def write_records(path: Path, records: list[dict]) -> None:
    """``records`` as a CSV file with a column for every key any of them has, written whole."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in records for k in r)))
    writer.writeheader()
    writer.writerows(records)
    atomic_write(path, text.getvalue())


def write_inference_page(page: Path, command: str, rows: Sequence[InferRow], warnings: Sequence[str] = ()) -> None:
    """``docs/benchmarks/inference.md``: ``zoo-bench --infer``'s table, the fastest backend of
    each model on this machine, ``backend=auto``'s rule with what the run measured of it, and
    the warnings of the run; its CSV (timm's benchmark-infer columns, per round summary) beside
    it, ``inference.csv``."""
    intro = [
        "How fast each model answers, on each backend, beside torchvision's same architecture in the same process:"
        " batch-1 latency and batch throughput, medians over rounds with (min-max); the ratio is ours' speed over"
        " torchvision's, taken round by round (each round times the two back to back), so above 1 is faster."
        " Inputs are normal noise at each model's default size, 1000 classes, eval mode without autograd."
        " The backends are those of `zoo-predict` (`precision=`, `channels_last=`, `backend=onnxruntime`);"
        " `torch.compile` compiles in the untimed warm-up. Written by:",
    ]
    best = fastest(rows)
    body = [*(f"**Warning:** {w}" for w in warnings), "", *inference_table(rows), "", "Fastest on this machine, ours:", ""]
    body += [f"- `{name}`: batch 1 {BACKENDS[b1]}, batch {rows[0].batch_size} {BACKENDS[bn]}" for name, (b1, bn) in best.items()]
    body += ["", "## How `zoo-predict backend=auto` chooses", "", *auto_rule(rows), "",
             f"Every figure of the table, with torchvision's side: [{page.with_suffix('.csv').name}]({page.with_suffix('.csv').name})."]
    write_records(page.with_suffix(".csv"), [row.record() for row in rows])
    versions = ", ".join(f"{p} {_version(p)}" for p in ("torchvision", "onnxruntime"))
    machine = f"{machine_description()}, {versions}, {torch.get_num_threads()} threads"
    write_results_page(page, "Inference speed", intro, command, body, machine=machine)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def markdown(rows: list[Row], args: argparse.Namespace, warnings: list[str] = ()) -> str:
    records = [r.record() for r in rows]
    columns = list(dict.fromkeys(k for r in records for k in r))
    lines = [
        f"zoo-bench, {datetime.datetime.now():%Y-%m-%d %H:%M}; device {args.device}, precision {args.precision}, "
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
    """``summary.md`` as a documentation page (:func:`write_results_page`), the plots beside it."""
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


def generated_section(text: str, name: str) -> tuple[int, int]:
    """Where the body of the section ``name`` a script writes into a page lies in ``text``:
    between ``<!-- generated:<name> ... -->`` and ``<!-- /generated:<name> -->``, each on a line
    of its own."""
    start = re.search(rf"^<!-- generated:{re.escape(name)}\b.*-->\n", text, re.M)
    end = re.search(rf"^<!-- /generated:{re.escape(name)} -->$", text, re.M)
    if start is None or end is None or end.start() < start.end():
        raise ZooError(f"no section '{name}' (<!-- generated:{name} --> ... <!-- /generated:{name} -->) to write")
    return start.end(), end.start()


def write_generated_section(path: Path, name: str, body: str) -> None:
    """Replace the body of section ``name`` of ``path`` (README.md) with ``body``, atomically:
    the numbers the README shows are written by the script that measured them, from its results file."""
    text = path.read_text()
    start, end = generated_section(text, name)
    atomic_write(path, text[:start] + body.rstrip("\n") + "\n" + text[end:])
    print(f"wrote the '{name}' section of {path}")
