"""How fast a trained image model answers, beside torchvision's same architecture: ``zoo-bench --infer``.

For each model and each backend (``BACKENDS``): the latency of one image (batch 1, in
milliseconds) and the throughput of a batch (``--batch-size``, images per second), ours and
torchvision's built in the same process with the same input (normal noise at the model's
default size or ``--image-size``), in eval mode without autograd. Each figure is the median
of ``--rounds`` rounds with its minimum and maximum; in each round ours and torchvision's
run back to back (``zoo.bench.timing.time_interleaved``), and the ratio (ours' speed
over torchvision's: above 1 is faster) is taken round by round, pair by pair, never as a
ratio of the two medians, so that a moment of load slows both sides of a pair alike.

Backends:

- ``eager``: fp32, NCHW, the network as it is;
- ``bf16``: bfloat16 autocast and channels-last memory, as ``zoo-predict precision=bf16
  channels_last=true`` runs it;
- ``compile``: ``torch.compile`` (default mode) of the fp32 network, from an empty compile
  cache for each model; compilation happens in the untimed warm-up;
- ``onnxruntime``: the network exported to ONNX (``zoo.export.export_onnx``, checked
  against the eager network) and run by ONNX Runtime's CPU provider with torch's thread count.

Models without a torchvision counterpart (LeNet-5, the MLP) are timed alone.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.bench.models import build_model
from zoo.bench.timing import SPREAD_LIMIT, round_ratios, spread, summary, time_interleaved
from zoo.errors import ZooError
from zoo.export import export_onnx, onnx_session
from zoo.models import MODELS, ImageModel
from zoo.models.factory import build_on_meta

BACKENDS = {
    "eager": "eager fp32",
    "bf16": "eager bf16 + channels_last",
    "compile": "torch.compile fp32",
    "onnxruntime": "ONNX Runtime fp32",
}
SOURCES = ("ours", "torchvision")


@dataclass
class InferRow:
    """One model on one backend: per source and batch size, the seconds of each round."""

    model: str
    backend: str
    image_size: int
    batch_size: int
    seconds: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # (source, batch) -> per round

    def record(self) -> dict[str, Any]:
        """The row as the CSV and the page give it: latency (ms) at batch 1, throughput
        (images/s) at ``batch_size``, each median, min and max over rounds, and the
        round-by-round ratio of ours to torchvision's speed."""
        out: dict[str, Any] = {"model": self.model, "backend": self.backend, "image_size": self.image_size,
                               "batch_size": self.batch_size}  # fmt: skip
        for source in SOURCES:
            if (source, 1) in self.seconds:
                ms = [1000 * s for s in self.seconds[source, 1]]
                out |= summary(f"{source}_b1_ms", ms)
            if (source, self.batch_size) in self.seconds:
                rates = [self.batch_size / s for s in self.seconds[source, self.batch_size]]
                out |= summary(f"{source}_b{self.batch_size}_img_s", rates)
        for n in (1, self.batch_size):
            if ("torchvision", n) in self.seconds:  # torchvision's seconds over ours: ours' speed over its
                out |= summary(f"b{n}_ratio_vs_torchvision", round_ratios(self.seconds["ours", n], self.seconds["torchvision", n]))
        return out

    def unsteady(self) -> list[str]:
        return [f"{self.model} {self.backend} {source} batch {n}: rounds {spread(s):.0%} apart"
                for (source, n), s in self.seconds.items() if spread(s) > SPREAD_LIMIT]  # fmt: skip


def build(source: str, name: str, size: int) -> nn.Module | None:
    """``zoo.bench.models.build_model``'s model (1000 classes, seeded) in eval mode."""
    model = build_model(source, name, size)
    return None if model is None else model.eval()


def predictor(model: nn.Module, backend: str, example: torch.Tensor, folder: Path, label: str) -> Callable[[torch.Tensor], Callable[[], object]]:
    """``model`` set up for ``backend`` (its ONNX file, if any, named ``label`` in ``folder``);
    returns what makes the timed call for an input batch."""
    if backend == "onnxruntime":
        path = folder / f"{label}.onnx"
        export_onnx(model, example, path)
        session = onnx_session(path)

        def session_call(x: torch.Tensor) -> Callable[[], object]:
            feed = {"images": x.numpy()}
            return lambda: session.run(None, feed)

        return session_call
    layout = torch.channels_last if backend == "bf16" else torch.contiguous_format
    if backend == "bf16":
        model = model.to(memory_format=layout)
    forward = torch.compile(model) if backend == "compile" else model

    def call(x: torch.Tensor) -> Callable[[], object]:
        x = x.contiguous(memory_format=layout)

        def run() -> object:
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if backend == "bf16" else contextlib.nullcontext()
            with torch.inference_mode(), autocast:
                return forward(x)

        return run

    return call


def measure(name: str, backends: Sequence[str], batch_size: int, size: int | None = None, rounds: int = 5,
            steps: int = 2, warmup: int = 2) -> list[InferRow]:  # fmt: skip
    """One ``InferRow`` per backend for image model ``name`` (``size``: its default input size)."""
    skeleton = build_on_meta(MODELS.get(name))
    if not isinstance(skeleton, ImageModel):
        raise ZooError(f"zoo-bench --infer times image models; {name} is not one")
    size = size or skeleton.default_image_size
    generator = torch.Generator().manual_seed(0)
    inputs = {n: torch.randn(n, skeleton.in_channels, size, size, generator=generator) for n in (1, batch_size)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-infer-") as folder:
        for backend in backends:
            if backend == "compile":
                # Our models share one forward (ImageModel.forward), and dynamo keeps at most
                # `recompile_limit` (8) compiled versions of a function per process, then runs
                # it eagerly: from the fifth model on, "compile" would time eager code. Each
                # model is compiled from an empty cache instead.
                torch._dynamo.reset()
            row = InferRow(name, backend, size, batch_size)
            models = {s: m for s in SOURCES if (m := build(s, name, size)) is not None}
            calls = {s: predictor(m, backend, inputs[batch_size][:2], Path(folder), s) for s, m in models.items()}
            for n, x in inputs.items():
                # a batch of one takes a small share of a round: more of them per round
                timed = time_interleaved({s: call(x) for s, call in calls.items()}, rounds=rounds,
                                         steps_per_round=steps * (10 if n == 1 < batch_size else 1), warmup=warmup)  # fmt: skip
                row.seconds |= {(s, n): per_round for s, per_round in timed.items()}
            rows.append(row)
    return rows


def fastest(rows: Sequence[InferRow]) -> dict[str, tuple[str, str]]:
    """Per model, our fastest backend at batch 1 (lowest median latency) and at the batch size
    (highest median throughput)."""
    best: dict[str, tuple[str, str]] = {}
    for name in dict.fromkeys(r.model for r in rows):
        records = [r.record() for r in rows if r.model == name]
        n = records[0]["batch_size"]
        latency = min(records, key=lambda r: r["ours_b1_ms"])["backend"]
        throughput = max(records, key=lambda r: r[f"ours_b{n}_img_s"])["backend"]
        best[name] = (latency, throughput)
    return best


def auto_rule(rows: Sequence[InferRow]) -> list[str]:
    """The page's statement of ``zoo-predict backend=auto``'s rule (:func:`zoo.export.choose_backend`)
    and what these rows measured of it at the batch size, per backend it weighs."""
    n = rows[0].batch_size if rows else 1
    key = f"ours_b{n}_img_s"
    by_model: dict[str, dict[str, float]] = {}
    for row in rows:
        by_model.setdefault(row.model, {})[row.backend] = row.record()[key]
    lines = [
        "`zoo-predict backend=auto` (`zoo.export.choose_backend`) runs torch in bf16 + channels_last where training's"
        " precision rule picks bf16 (the ImageNet CNNs, on a CPU or GPU with native bfloat16); otherwise ONNX Runtime,"
        " on a CPU where the checkpoint's `zoo-export` file exists; otherwise torch in fp32. What this run measured of"
        f" it, at batch {n}:",
        "",
    ]
    with_bf16 = {m: b for m, b in by_model.items() if "bf16" in b}
    if with_bf16:
        best = {m: max(b, key=b.get) for m, b in with_bf16.items()}
        behind = [f"`{m}` ({BACKENDS[best[m]]}; bf16 at {b['bf16'] / b[best[m]]:.2f} of its speed)"
                  for m, b in with_bf16.items() if best[m] != "bf16"]  # fmt: skip
        lines.append(f"- bf16 + channels_last was the fastest backend for {len(with_bf16) - len(behind)} of {len(with_bf16)}"
                     f" models{': not for ' + ', '.join(behind) if behind else ''}")  # fmt: skip
    with_ort = {m: b["onnxruntime"] / b["eager"] for m, b in by_model.items() if {"eager", "onnxruntime"} <= b.keys()}
    if with_ort:
        faster = sum(r > 1 for r in with_ort.values())
        lines.append(f"- ONNX Runtime was faster than eager fp32 for {faster} of {len(with_ort)} models"
                     f" ({min(with_ort.values()):.2f}x to {max(with_ort.values()):.2f}x its speed)")  # fmt: skip
    return lines


def _cell(record: dict[str, Any], key: str, digits: int = 3) -> str:
    if key not in record:
        return "-"
    return f"{record[key]:.{digits}g} ({record[key + '_min']:.{digits}g}-{record[key + '_max']:.{digits}g})"


def table(rows: Sequence[InferRow]) -> list[str]:
    """The page's table: one line per model and backend, medians with (min-max) over rounds."""
    n = rows[0].batch_size if rows else 1
    lines = [
        f"| model | backend | batch 1 ms, ours | ours / torchvision speed | batch {n} img/s, ours | ours / torchvision speed |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row.record()
        lines.append(f"| `{row.model}` | {BACKENDS[row.backend]} | {_cell(r, 'ours_b1_ms')} | {_cell(r, 'b1_ratio_vs_torchvision')} "
                     f"| {_cell(r, f'ours_b{n}_img_s')} | {_cell(r, f'b{n}_ratio_vs_torchvision')} |")  # fmt: skip
    return lines
