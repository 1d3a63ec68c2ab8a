"""The rows of ``zoo-bench``'s model table: parameters and MACs counted on the ``meta``
device beside torchvision's same architecture and the published numbers
(``benchmarks/reference.yaml``), and with ``--throughput`` the measured inference and
training throughput and peak memory (:mod:`zoo.bench.timing`)."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from zoo.bench.profiling import count_macs, count_params
from zoo.bench.timing import (
    CLEAR_REFS, SPREAD_LIMIT, Setting, TrainStep, cuda_peak_mib, peak_rss_mib, round_ratios, spread, summary,
    synthetic_batch, time_interleaved,
)  # fmt: skip
from zoo.errors import ZooError
from zoo.models import MODELS, ImageModel
from zoo.models.factory import build_on_meta
from zoo.perf import speed_up

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


def size_options(name: str, size: int) -> dict[str, int]:
    """The constructor option that sizes model ``name`` for ``size``-pixel images: ``image_size``
    for a model whose input size is fixed at another (ViT's position embeddings), else none."""
    fixed = getattr(build_on_meta(MODELS.get(name)), "fixed_image_size", None)
    return {"image_size": size} if fixed is not None and fixed != size else {}


def build_model(source: str, name: str, size: int, num_classes: int = 1000) -> nn.Module | None:
    """``name`` from ``source`` (ours or torchvision; ``None`` where torchvision has none) for
    ``size``-pixel images, built after ``torch.manual_seed(0)``."""
    builder = partial(MODELS.build, name) if source == "ours" else torchvision_builder(name)
    if builder is None:
        return None
    torch.manual_seed(0)
    return builder(num_classes=num_classes, **size_options(name, size))


def build_step(
    source: str, name: str, batch_size: int, size: int, setting: Setting = Setting(),
    device: str = "cpu", num_classes: int = 1000,
) -> TrainStep:
    """A training step of ``name`` (``source``: ours or torchvision) on a synthetic batch,
    set up as zoo-train would run it (bf16 on a CPU: ``zoo.perf.speed_up``). Module-level,
    so that a fresh process can build it for the memory measurement."""
    model = build_model(source, name, size, num_classes)
    if source == "ours" and setting.precision == "bf16" and torch.device(device).type == "cpu":
        speed_up(model, "bf16-mixed", setting.channels_last, accelerator="cpu")
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
        row.measured |= summary(f"{key}_img_s", rates)
        if spread(per_round) > SPREAD_LIMIT:
            row.unsteady.append(f"{label} rounds {spread(per_round):.0%} apart")
    if "torchvision train" in seconds:
        for kind in ("train", "infer"):
            ratios = round_ratios(seconds[f"ours {kind}"], seconds[f"torchvision {kind}"])  # pair by pair
            row.measured |= summary(f"{kind}_ratio_vs_torchvision", ratios)
    if args.memory:
        for source, step in steps.items():
            if torch.device(args.device).type == "cuda":
                row.measured[f"{source}_train_peak_mib"] = cuda_peak_mib(step, args.device)
            elif CLEAR_REFS.exists():  # the fresh process's peak RSS
                row.measured[f"{source}_train_peak_mib"] = peak_rss_mib(build[source])
