#!/usr/bin/env python
"""Performance rows, each measured side by side with its reference in this one process.

    python scripts/bench_perf.py [--suite gpu] [--models resnet50 vit_b_16] ...

Every row prints ``name  ours  reference  ratio``; the method is zoo/bench/timing.py's
(candidates interleaved round by round, median over rounds; ratio > 1: ours is faster,
or for memory rows, ours uses more). Suites (default: every CPU suite):

  parity  training step, ours vs torchvision's same architecture, float32 NCHW eager, same
          batch and input: throughput and peak process memory (each in a fresh process)
          for resnet18, resnet50, vgg16, densenet121, efficientnet_b0, vit_b_16.
  fast    the fast path (bf16 autocast + channels_last) of ResNet-50, DenseNet-121 and
          EfficientNet-B0, eager and under torch.compile (--compile-mode), each vs
          torchvision's fp32 NCHW eager step and compiled vs eager, the three interleaved;
          the seconds compilation took (the first step, less a compiled step) apart.
  profile where the fast path's step spends its time, eager and compiled: the share of
          the profiler's CPU self time per kind of operator (convolutions, batch norm,
          compiled kernels, ...), for the same models. Explains what compile can gain.
  accuracy  digits test accuracy of those three models trained by zoo-train in fp32 and
          in bf16-mixed + channels_last (same seed, same recipe), side by side.
  rnn     fused nn.LSTM/nn.GRU vs the reference cells (training steps/s).
  sdpa    multi-head attention through F.scaled_dot_product_attention vs the written-out
          equation, 512 tokens, forward + backward; outputs checked equal first.

The default run and zoo-train's training loop against a plain PyTorch loop are
scripts/bench_default.py's (docs/benchmarks/default-run.md).

  gpu   ResNet-50 and ViT-B/16 training steps on synthetic 224 px data on a CUDA GPU:
        ours fp32 eager (NCHW) against torchvision's same architecture, and ours at
        bf16 autocast + channels_last, eager and under torch.compile, against our fp32
        eager. scripts/gpu_check.sh runs this suite.
  cifar   ResNet-18 on CIFAR-10-shaped synthetic data (3x32x32, 10 classes) at the
          resnet18_cifar10 recipe's model options and batch, fp32 eager and bf16 +
          channels_last (on a CPU: fp32 only): images/s and the seconds one epoch of the
          recipe's 45,000 training images takes. scripts/gpu_check.sh runs it after gpu.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

try:
    import zoo
except ImportError:  # run from a checkout without installing (the GPU machine)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import zoo

from zoo.bench.timing import (
    Setting, TrainStep, compiled_or_eager, cuda_peak_mib, median_ratio, peak_rss_mib, synthetic_batch, time_interleaved,
)  # fmt: skip

from zoo.cli import config  # noqa: F401  (registers the configs' schemas: the cifar suite composes a recipe)
from zoo.bench.models import build_step, torchvision_builder
from zoo.files import config_dir

SCRIPTS = Path(__file__).resolve().parent
PARITY_MODELS = ("resnet18", "resnet50", "vgg16", "densenet121", "efficientnet_b0", "vit_b_16")
FAST_MODELS = ("resnet50", "densenet121", "efficientnet_b0")


def row(name: str, ours: str, reference: str, ratio: str = "") -> None:
    print(f"{name:<60} {ours:>12} {reference:>12} {ratio:>8}", flush=True)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    name, bf16 = platform.machine(), ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), name)
        flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
        bf16 = ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "no bf16 instructions"
    return f"{name} ({bf16}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def gpu_suite(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        sys.exit("the gpu suite needs a CUDA GPU; none is visible to torch")
    device = torch.device("cuda")
    print(f"# {machine(device)}; TF32: matmul {torch.backends.cuda.matmul.allow_tf32}, "
          f"cuDNN {torch.backends.cudnn.allow_tf32} (PyTorch's defaults)")  # fmt: skip
    torch.backends.cudnn.benchmark = True
    fp32, fast_eager = Setting(), Setting("bf16", channels_last=True)
    fast = Setting("bf16", channels_last=True, compile=args.compile_mode)
    for name in args.models:
        batch = args.batch_size or {"resnet50": 128, "vit_b_16": 64}.get(name, 64)
        inputs, targets = synthetic_batch(batch, 3, args.image_size, 1000)

        def ours(setting: Setting, name=name) -> TrainStep:
            torch.manual_seed(0)
            return TrainStep(zoo.get_model(name, num_classes=1000), inputs, targets, setting, device)

        candidates = {
            "torchvision fp32": TrainStep(torchvision_builder(name)(num_classes=1000), inputs, targets, fp32, device),
            "ours fp32": ours(fp32),
            "ours bf16": ours(fast_eager),
            "ours fast": compiled_or_eager(ours, fast),
        }
        seconds = time_interleaved(
            candidates, rounds=args.rounds, steps_per_round=args.steps_per_round, warmup=args.warmup, device=device
        )
        # After the timing: warm steps only (cuDNN's autotuning workspaces are transient).
        memory = {label: cuda_peak_mib(step, device) for label, step in candidates.items()}
        ips = {label: batch / statistics.median(s) for label, s in seconds.items()}
        steps = args.warmup + args.rounds * args.steps_per_round
        print(f"\n## {name}, batch {batch}, {args.image_size} px, {steps} training steps per candidate")
        row("row", "ours img/s", "reference", "ratio")
        row(f"{name} fp32 eager: ours vs torchvision", f"{ips['ours fp32']:.0f}", f"{ips['torchvision fp32']:.0f}",
            f"{median_ratio(seconds['ours fp32'], seconds['torchvision fp32']):.3f}")  # fmt: skip
        row(f"{name} {fast_eager.label} vs fp32 eager", f"{ips['ours bf16']:.0f}", f"{ips['ours fp32']:.0f}",
            f"{median_ratio(seconds['ours bf16'], seconds['ours fp32']):.3f}")  # fmt: skip
        row(f"{name} {fast.label} vs fp32 eager", f"{ips['ours fast']:.0f}", f"{ips['ours fp32']:.0f}",
            f"{median_ratio(seconds['ours fast'], seconds['ours fp32']):.3f}")  # fmt: skip
        row(f"{name} peak MiB per step: ours fp32 vs torchvision", f"{memory['ours fp32']:.0f}",
            f"{memory['torchvision fp32']:.0f}", f"{memory['ours fp32'] / memory['torchvision fp32']:.3f}")  # fmt: skip
        row(f"{name} peak MiB per step: ours fast vs fp32", f"{memory['ours fast']:.0f}", f"{memory['ours fp32']:.0f}",
            f"{memory['ours fast'] / memory['ours fp32']:.3f}")  # fmt: skip
        del candidates
        torch.cuda.empty_cache()


CIFAR_TRAIN_IMAGES = 45_000  # CIFAR-10's 50,000 training images less the 10% the recipe validates on


def cifar_suite(args: argparse.Namespace) -> None:
    """The resnet18_cifar10 recipe's training step on synthetic data of CIFAR-10's size."""
    with initialize_config_dir(config_dir(), version_base=None):
        cfg = compose("train", overrides=["experiment=resnet18_cifar10"])
    options = {k: v for k, v in cfg.model.items() if k != "name" and v is not None}
    batch = args.batch_size or cfg.data.batch_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    inputs, targets = synthetic_batch(batch, 3, 32, 10)
    settings = {"fp32": Setting()}
    if device.type == "cuda":
        settings["bf16 channels_last"] = Setting("bf16", channels_last=True)
    candidates = {}
    for label, setting in settings.items():
        torch.manual_seed(0)
        net = zoo.get_model(cfg.model.name, num_classes=10, in_channels=3, **options)
        candidates[label] = TrainStep(net, inputs, targets, setting, device)
    seconds = time_interleaved(
        candidates, rounds=args.rounds, steps_per_round=args.steps_per_round, warmup=args.warmup, device=device
    )
    print(f"\n## resnet18_cifar10 recipe: {cfg.model.name} {options}, batch {batch}, 3x32x32, {machine(device)}")
    row("row", "img/s", "s / epoch", "spread")
    for label, per_round in seconds.items():
        rates = [batch / s for s in per_round]
        spread = (max(rates) - min(rates)) / statistics.median(rates)
        rate = statistics.median(rates)
        row(f"resnet18 CIFAR-10 training step, {label}", f"{rate:.0f}", f"{CIFAR_TRAIN_IMAGES / rate:.1f}", f"{spread:.0%}")


def cpu_pairs(args, title: str, pairs: dict[str, tuple[partial, partial]], memory: bool, size: int) -> None:
    """Time each (ours, reference) pair interleaved, print throughput (and memory) rows."""
    print(f"\n## {title}; batch {args.cpu_batch}, {size} px, {torch.get_num_threads()} threads")
    row("row", "ours", "reference", "ratio")
    for name, (ours, reference) in pairs.items():
        seconds = time_interleaved(
            {"ours": ours(), "reference": reference()}, rounds=args.cpu_rounds, steps_per_round=args.cpu_steps, warmup=2
        )
        rate = {k: args.cpu_batch / statistics.median(v) for k, v in seconds.items()}
        row(f"{name} img/s", f"{rate['ours']:.1f}", f"{rate['reference']:.1f}",
            f"{median_ratio(seconds['ours'], seconds['reference']):.3f}")  # fmt: skip
        if memory:
            mib = {"ours": peak_rss_mib(ours), "reference": peak_rss_mib(reference)}
            row(f"{name} peak RSS MiB", f"{mib['ours']:.0f}", f"{mib['reference']:.0f}",
                f"{mib['ours'] / mib['reference']:.3f}")  # fmt: skip


def parity_suite(args: argparse.Namespace) -> None:
    pairs = {
        f"{name} fp32 train step: ours vs torchvision": (
            partial(build_step, "ours", name, args.cpu_batch, args.cpu_size, num_classes=10),
            partial(build_step, "torchvision", name, args.cpu_batch, args.cpu_size, num_classes=10),
        )
        for name in args.parity_models
    }
    cpu_pairs(args, "parity with torchvision (target: ratio >= 0.98, memory ratio <= 1)", pairs, memory=True, size=args.cpu_size)


def fast_suite(args: argparse.Namespace) -> None:
    # A cache of its own: the compilation seconds are a first run's, not a cached rerun's.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-perf-inductor-")
    eager, compiled = Setting("bf16", channels_last=True), Setting("bf16", channels_last=True, compile=args.compile_mode)
    print(f"\n## the fast path, eager and compiled (target: ratio >= 1.5 vs torchvision); batch {args.cpu_batch}, "
          f"{args.fast_size} px, {torch.get_num_threads()} threads")  # fmt: skip
    row("row", "ours", "reference", "ratio")
    for name in args.fast_models:
        steps = {
            "torchvision": build_step("torchvision", name, args.cpu_batch, args.fast_size, num_classes=10),
            "eager": build_step("ours", name, args.cpu_batch, args.fast_size, eager, num_classes=10),
            "compiled": build_step("ours", name, args.cpu_batch, args.fast_size, compiled, num_classes=10),
        }
        started = time.perf_counter()
        steps["compiled"]()  # compiles
        first = time.perf_counter() - started
        started = time.perf_counter()
        steps["compiled"]()
        compile_seconds = first - (time.perf_counter() - started)
        seconds = time_interleaved(steps, rounds=args.cpu_rounds, steps_per_round=args.cpu_steps, warmup=2)
        rate = {k: args.cpu_batch / statistics.median(v) for k, v in seconds.items()}
        for label, setting in (("eager", eager), ("compiled", compiled)):
            row(f"{name} {setting.label} vs torchvision fp32 NCHW img/s", f"{rate[label]:.2f}", f"{rate['torchvision']:.2f}",
                f"{median_ratio(seconds[label], seconds['torchvision']):.3f}")  # fmt: skip
        spread = {k: f"{min(v) / statistics.median(v):.2f}-{max(v) / statistics.median(v):.2f}" for k, v in seconds.items()}
        row(f"{name} compiled vs eager (rounds: {spread['compiled']} / {spread['eager']} of median)",
            f"{rate['compiled']:.2f}", f"{rate['eager']:.2f}", f"{median_ratio(seconds['compiled'], seconds['eager']):.3f}")  # fmt: skip
        row(f"{name} compilation seconds (first step less a compiled one)", f"{compile_seconds:.0f}", "", "")


# The profile suite's kinds of operator, by the first pattern in an event's name.
OPERATOR_KINDS = (
    ("convolution (oneDNN)", ("convolution",)), ("batch norm (ATen)", ("batch_norm",)),
    ("compiled kernels (inductor)", ("CompiledFxGraph", "cpp_fused", "CompiledFunction")),
    ("optimizer and gradient sums", ("_foreach", "add_", "mul_", "SGD")), ("casts and copies", ("_to_copy", "copy_")),
    ("activations", ("relu", "threshold", "clamp", "silu", "sigmoid")),
)  # fmt: skip


def operator_shares(step: TrainStep, steps: int = 3) -> dict[str, float]:
    """The share of the profiler's CPU self time each kind of operator takes over ``steps`` steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    shares: dict[str, float] = {kind: 0.0 for kind, _ in OPERATOR_KINDS} | {"other": 0.0}
    for event in prof.key_averages():
        kind = next((k for k, patterns in OPERATOR_KINDS if any(p in event.key for p in patterns)), "other")
        shares[kind] += event.self_cpu_time_total
    total = sum(shares.values())
    return {kind: value / total for kind, value in shares.items()}


def explain_compile(step: TrainStep) -> str:
    """What dynamo makes of the network's forward under the step's autocast: graphs and graph breaks (with the first reason)."""
    with step.autocast():
        explained = torch._dynamo.explain(step.model)(step.inputs)
    reason = f" (first: {explained.break_reasons[0].reason.splitlines()[0]})" if explained.break_reasons else ""
    return f"{explained.graph_count} graph(s), {explained.graph_break_count} graph break(s){reason}"


def profile_suite(args: argparse.Namespace) -> None:
    print(f"\n## where the fast path's step spends its time; batch {args.cpu_batch}, {args.fast_size} px, "
          f"{torch.get_num_threads()} threads (share of CPU self time over 3 steps)")  # fmt: skip
    for name in args.fast_models:
        shares = {}
        for label, setting in (("eager", Setting("bf16", True)), ("compiled", Setting("bf16", True, args.compile_mode))):
            step = build_step("ours", name, args.cpu_batch, args.fast_size, setting, num_classes=10)
            step(), step()  # compiled, warm
            shares[label] = operator_shares(step)
        graphs = explain_compile(build_step("ours", name, args.cpu_batch, args.fast_size, Setting("bf16", True), num_classes=10))
        row(f"{name}: {graphs}", "", "", "")
        row(f"{name}: kind of operator", "eager", "compiled", "")
        for kind in shares["eager"]:
            row(f"  {kind}", f"{100 * shares['eager'][kind]:.1f}%", f"{100 * shares['compiled'][kind]:.1f}%", "")


# 32 px through the ImageNet stems (one shared recipe, not the per-family ones of bench_tables.py), except
# EfficientNet-B0, which needs its small-input stem to learn digits in a few epochs;
# ResNet-50's residual branches start at zero (Goyal et al., 2017), which it needs to learn
# them in a few epochs (5 epochs without: 66-70% in both precisions).
DIGITS_OPTIONS = {"efficientnet_b0": ["model.small_input=true"], "resnet50": ["model.zero_init_residual=true"]}


def digits_accuracy(name: str, seed: int, epochs: int, fast: bool) -> float:
    zoo_train = Path(sys.executable).parent / "zoo-train"
    speed = ["trainer.precision=bf16-mixed", "perf.channels_last=true"] if fast else [
        "trainer.precision=32-true", "perf.channels_last=false"]  # fmt: skip
    with tempfile.TemporaryDirectory() as run_dir:
        subprocess.run(
            [str(zoo_train), f"model={name}", *DIGITS_OPTIONS.get(name, []), f"trainer.max_epochs={epochs}",
             "data.batch_size=64", "optim.lr=0.05", f"seed={seed}", f"hydra.run.dir={run_dir}",
             "callbacks.progress_bar=none", *speed],
            check=True, capture_output=True,
        )  # fmt: skip
        return json.loads((Path(run_dir) / "metrics.json").read_text())["test"]["test/acc"]


def accuracy_suite(args: argparse.Namespace) -> None:
    print(f"\n## digits test accuracy, bf16-mixed + channels_last vs fp32 (target: within 0.5 point); "
          f"32 px, {args.epochs} epochs, batch 64, SGD lr 0.05, one-cycle, seeds {args.seeds}")  # fmt: skip
    row("row", "bf16 acc %", "fp32 acc %", "diff")
    for name in args.fast_models:
        fast = statistics.median(digits_accuracy(name, s, args.epochs, True) for s in args.seeds)
        base = statistics.median(digits_accuracy(name, s, args.epochs, False) for s in args.seeds)
        fast, base = fast * 100, base * 100
        row(f"{name} median digits test acc", f"{fast:.2f}", f"{base:.2f}", f"{fast - base:+.2f}")


def rnn_suite(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(SCRIPTS))
    from bench_rnn import steps_per_second

    from zoo.layers.recurrent import make_rnn

    print("\n## fused recurrent layers vs the reference cells: batch 64, 32 steps, hidden 128, 2 layers")
    row("row", "fused step/s", "reference", "speedup")
    x = torch.randn(64, 32, 128)
    for cell in ("lstm", "gru"):
        kwargs = dict(input_size=128, hidden_size=128, num_layers=2, batch_first=True)
        reference, fused = make_rnn(cell, "reference", **kwargs), make_rnn(cell, "fused", **kwargs)
        fused.load_state_dict(reference.state_dict())
        torch.testing.assert_close(fused(x)[0], reference(x)[0], rtol=1e-4, atol=1e-5)
        ref_rate, fused_rate = steps_per_second(reference, x, 10), steps_per_second(fused, x, 10)
        row(f"{cell} training step", f"{fused_rate:.1f}", f"{ref_rate:.1f}", f"{fused_rate / ref_rate:.2f}")


def sdpa_suite(args: argparse.Namespace) -> None:
    from zoo.layers.attention import MultiHeadAttention

    torch.manual_seed(0)
    fast, reference = MultiHeadAttention(512, 8), MultiHeadAttention(512, 8, fast=False)
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(4, 512, 512)  # (B, T, D): 512 tokens
    torch.testing.assert_close(fast(x, x, x)[0], reference(x, x, x)[0], rtol=1e-4, atol=1e-5)

    def step(layer):
        def run():
            out, _ = layer(x, x, x)
            out.sum().backward()
        return run

    seconds = time_interleaved({"fast": step(fast), "reference": step(reference)}, rounds=7, steps_per_round=3)
    print("\n## multi-head attention, d 512, 8 heads, batch 4, 512 tokens, forward + backward (outputs equal)")
    row("row", "sdpa ms", "reference ms", "speedup")
    row("attention step", f"{statistics.median(seconds['fast']) * 1e3:.1f}",
        f"{statistics.median(seconds['reference']) * 1e3:.1f}", f"{median_ratio(seconds['fast'], seconds['reference']):.2f}")  # fmt: skip


SUITES = {
    "parity": parity_suite, "fast": fast_suite, "profile": profile_suite, "accuracy": accuracy_suite,
    "rnn": rnn_suite, "sdpa": sdpa_suite, "gpu": gpu_suite, "cifar": cifar_suite,
}  # fmt: skip
CPU_SUITES = ["parity", "fast", "rnn", "sdpa", "accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", nargs="+", choices=sorted(SUITES), default=CPU_SUITES)
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"], help="gpu suite")
    parser.add_argument("--parity-models", nargs="+", default=PARITY_MODELS)
    parser.add_argument("--fast-models", nargs="+", default=FAST_MODELS)
    parser.add_argument("--cpu-batch", type=int, default=8)
    parser.add_argument("--cpu-size", type=int, default=112, help="CPU input size (ViT-B/16 is built for it)")
    parser.add_argument("--fast-size", type=int, default=224, help="fast suite input size")
    parser.add_argument("--cpu-rounds", type=int, default=7)
    parser.add_argument("--cpu-steps", type=int, default=2, help="CPU steps per round per candidate")
    parser.add_argument("--epochs", type=int, default=10, help="accuracy suite: training epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=None, help="gpu/cifar suites; default: per model / the recipe's")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile-mode", default="default")
    args = parser.parse_args()
    print(f"# {machine(torch.device('cpu'))}; {platform.platform()}")
    for suite in args.suite:
        SUITES[suite](args)


if __name__ == "__main__":
    main()
