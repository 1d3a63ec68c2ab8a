"""Measuring training speed and memory: the parts every benchmark script shares.

A benchmark here compares candidates (our model and torchvision's, fp32 and bf16, NCHW and
channels-last) by the throughput of a whole training step (forward, loss, backward, SGD
update) on a fixed synthetic batch, so the data pipeline is out of the figure.

On a CPU the machine's speed drifts (a shared 2-core VM moves by 10-30% within a minute),
so :func:`time_interleaved` runs the candidates in turn, a few steps each per round, and
reports per-round figures: a ratio of medians taken from the same rounds cannot be faked
by a slow minute. On a GPU the same loop works; CUDA is synchronised around every timed
block.

Peak memory is measured per candidate in isolation: ``torch.cuda.max_memory_allocated``
on a GPU; on a CPU the peak resident set size that building and running the step adds to a
fresh process (:func:`peak_rss_mib`), since a process's peak RSS only ever grows.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass(frozen=True)
class Setting:
    """How a training step runs: autocast precision, memory format, compilation."""

    precision: str = "32"  # "32" (no autocast), "bf16" or "16" (autocast; "16" with loss scaling)
    channels_last: bool = False
    compile: str | None = None  # a torch.compile mode ("default", "max-autotune", ...) or None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")

    @property
    def label(self) -> str:
        parts = ["fp32" if self.precision == "32" else self.precision]
        parts.append("channels_last" if self.channels_last else "NCHW")
        parts.append(f"compile({self.compile})" if self.compile else "eager")
        return " ".join(parts)


class TrainStep:
    """One training step of ``model`` on a fixed synthetic batch, as a training run takes it.

    The model is moved to ``device`` (and to channels-last memory format if asked), compiled
    if asked, and trained with SGD (momentum 0.9) on cross-entropy. Autocast covers the
    forward pass and the loss; float16 scales the loss (``torch.amp.GradScaler``).
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        setting: Setting = Setting(),
        device: str | torch.device = "cpu",
    ):
        self.device = torch.device(device)
        self.setting = setting
        memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format).train()
        self.inputs = inputs.to(self.device).contiguous(memory_format=memory_format)
        self.targets = targets.to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.forward = torch.compile(self.model, mode=setting.compile) if setting.compile else self.model
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=setting.precision == "16")

    def autocast(self):
        if self.setting.precision == "32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.setting.precision])

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.forward(self.inputs)
            logits = out[0] if isinstance(out, tuple) else out  # GoogLeNet's auxiliary heads
            loss = nn.functional.cross_entropy(logits, self.targets)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def synthetic_batch(
    batch_size: int, channels: int, size: int, num_classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of normal-noise images and uniform labels."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch_size, channels, size, size, generator=generator)
    return inputs, torch.randint(num_classes, (batch_size,), generator=generator)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    steps: dict[str, Callable[[], object]],
    *,
    rounds: int = 7,
    steps_per_round: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
) -> dict[str, list[float]]:
    """Seconds per step of each candidate, one figure per round; candidates run in turn.

    Each candidate first takes ``warmup`` untimed steps (allocator, autotuning, compilation).
    """
    device = torch.device(device)
    for step in steps.values():
        for _ in range(warmup):
            step()
    _synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            _synchronize(device)
            seconds[name].append((time.perf_counter() - start) / steps_per_round)
    return seconds


def median_ratio(fast: list[float], slow: list[float]) -> float:
    """Median over rounds of ``slow / fast`` seconds: the speedup of ``fast``, round by round."""
    return statistics.median(round_ratios(fast, slow))


def round_ratios(fast: list[float], slow: list[float]) -> list[float]:
    """``slow / fast`` seconds of each round: the two candidates timed back to back, a pair per round."""
    return [s / f for f, s in zip(fast, slow, strict=True)]


SPREAD_LIMIT = 0.10  # rounds further apart than this (max - min over the median) make a figure unreliable


def summary(key: str, values: Sequence[float]) -> dict[str, float]:
    """``{key: median, key_min: min, key_max: max}`` of per-round figures, as the tables report them."""
    return {key: statistics.median(values), f"{key}_min": min(values), f"{key}_max": max(values)}


def spread(values: Sequence[float]) -> float:
    """``(max - min) / median`` of per-round figures: 0 for a steady machine."""
    return (max(values) - min(values)) / statistics.median(values)


def load_average() -> float | None:
    """The machine's 1-minute load average (``None`` where the OS does not report one)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_warning(cores: int | None = None) -> str | None:
    """A warning when other work already loads the machine beyond its cores, before timing."""
    load, cores = load_average(), cores or os.cpu_count() or 1
    if load is not None and load > cores:
        return f"figures unreliable: machine busy (load average {load:.1f} on {cores} cores before timing)"
    return None


def cuda_peak_mib(step: Callable[[], object], device: str | torch.device = "cuda") -> float:
    """Peak CUDA memory (MiB) allocated while ``step`` runs once, above what was allocated before."""
    device = torch.device(device)
    _synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    _synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# Linux only: writing 5 here resets the process's peak resident memory (VmHWM).
CLEAR_REFS = Path("/proc/self/clear_refs")


def _rss_child(build: Callable[[], Callable[[], object]], steps: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS, so
    # the start-up's own peak (imports) does not mask what the steps use.
    CLEAR_REFS.write_text("5")
    baseline = _status_kib("VmRSS")
    step = build()
    for _ in range(steps):
        step()
    queue.put((_status_kib("VmHWM") - baseline) / 1024)


def peak_rss_mib(build: Callable[[], Callable[[], object]], steps: int = 3) -> float:
    """Peak resident memory (MiB) that building a step and running it adds to a fresh process.

    ``build`` must be picklable (a module-level function or a ``functools.partial`` of one).
    The figure is the process's peak RSS during build and steps minus its RSS before (the
    interpreter and torch), read from ``/proc/self/status`` (Linux only).
    """
    if not CLEAR_REFS.exists():
        raise RuntimeError("peak_rss_mib reads Linux's /proc/self/status; use a CUDA device elsewhere")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_rss_child, args=(build, steps, torch.get_num_threads(), queue))
    process.start()
    # Join before reading: a child that dies (killed for memory, an error in ``build``) puts
    # no figure, and a wait on the queue would outlast it by the whole timeout. The one
    # float it puts fits the pipe, so a child that succeeds is not held up by the join.
    process.join()
    if process.exitcode:
        raise RuntimeError(f"the memory measurement process failed with exit code {process.exitcode}")
    return queue.get(timeout=60)


def compiled_or_eager(step_builder: Callable[[Setting], TrainStep], setting: Setting) -> TrainStep:
    """Build a step with ``setting``; if compilation fails, warn and fall back to eager."""
    step = step_builder(setting)
    if not setting.compile:
        return step
    try:
        step()
    except Exception as error:  # noqa: BLE001 (any backend failure means: run eagerly)
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); running eagerly", stacklevel=2)
        return step_builder(Setting(setting.precision, setting.channels_last, None))
    return step
