"""Speed switches of a training run: precision, memory format, compilation.

``trainer.precision=auto`` and ``perf.channels_last=auto`` (the defaults) choose
``bf16-mixed`` autocast and channels-last weights for a network whose family measured
faster that way (``ImageModel.fast_path``: the ImageNet CNNs, AlexNet to EfficientNet;
not LeNet-5, the MLP or ViT) on hardware with fast bfloat16 (a CUDA GPU that supports it,
or a CPU with AVX-512 BF16 or AMX); anything else trains in float32, NCHW. This is the fastest setting that measured safe:
``scripts/bench_perf.py`` (suite ``fast``) times it against torchvision's fp32 NCHW
training step and checks digits accuracy against the fp32 run (docs/performance.md).
Autocast keeps weights, optimizer state and reductions (losses, norms' statistics) in
float32; only matrix products and convolutions run in bfloat16. ``16-mixed`` (float16
with loss scaling) is Lightning's and is never chosen automatically: it needs the scaler
and CPUs have no fast float16.

On a CPU, bf16-mixed leaves depthwise convolutions (EfficientNet's) in float32: oneDNN's
bfloat16 depthwise backward pass is slower than its float32 one (EfficientNet-B0, batch 8,
2-core AMD EPYC, against torchvision's fp32 NCHW step: 1.38x with them in bf16 and 2.06x in
fp32 at 224 px; 0.94x and 1.39x at 112 px), so :func:`depthwise_in_float32` takes them out
of autocast.

``perf.compile`` compiles the network with :func:`torch.compile` (its ``mode``); if the
platform cannot compile, or compilation fails on the first batch, a warning says why and
training goes on eagerly. The module's parameters and state_dict keys are untouched, so
checkpoints do not depend on the switch. ``perf.compile=auto`` compiles (``default`` mode)
where it measured faster, on a CUDA GPU (ResNet-50 in bf16 + channels-last 1.29x its eager
step, ViT-B/16 in bf16 1.11x, on an H100), and trains eagerly on a CPU, where it measured
slower (``scripts/bench_perf.py --suite fast``: 0.90-0.96x the eager fast path for
ResNet-50, DenseNet-121 and EfficientNet-B0, after 2-3 minutes of compilation;
``--suite profile`` shows why: half to three quarters of the step are oneDNN convolutions,
the same calls compiled or not, and inductor's fused batch-norm and activation kernels are
no faster than ATen's). docs/performance.md has the figures.
"""

from __future__ import annotations

import functools
import shutil
import sys
import warnings
from typing import Any

import torch
from torch import nn

from zoo.errors import ConfigError

PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "64", "transformer-engine")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def accelerator_type(accelerator: str) -> str:
    """``"cuda"`` or ``"cpu"``: where Lightning's ``accelerator`` setting will train."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def require_cuda(setting: str) -> None:
    """Refuse ``setting`` (the option that asked for CUDA, e.g. ``trainer=gpu``) in one line
    when torch sees no CUDA device, before Lightning or torch fail deep inside."""
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device or driver found"
        raise ConfigError(f"{setting} needs a CUDA GPU, and torch finds none ({build}); leave it out to run on the CPU")


def fast_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bfloat16 matrix products natively (fast, not emulated)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    cpu = getattr(torch, "cpu", None)  # private probes of oneDNN's own dispatch; absent: assume not
    return any(bool(getattr(cpu, probe, lambda: False)()) for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def has_fast_path(net: nn.Module) -> bool:
    """Whether bf16 + channels-last was measured faster for ``net``'s family (``ImageModel.fast_path``)."""
    return bool(getattr(net, "fast_path", False))


def resolve_precision(precision: Any, accelerator: str, net: nn.Module) -> Any:
    """Lightning's precision for ``trainer.precision``; ``"auto"`` as the module docstring says."""
    return choose_precision(precision, accelerator, net)[0]


def choose_precision(precision: Any, accelerator: str, net: nn.Module) -> tuple[Any, str]:
    """:func:`resolve_precision`'s choice and why, in words for the run's first line
    (``"this CPU has native bf16; precision=32 for float32"``)."""
    if precision != "auto":
        if str(precision) not in PRECISIONS:
            raise ValueError(f"trainer.precision must be auto or one of {', '.join(PRECISIONS)}; got {precision!r}")
        return precision, f"trainer.precision={precision}, as set"
    device = accelerator_type(accelerator)
    hardware = "GPU" if device == "cuda" else "CPU"
    if not has_fast_path(net):
        return "32-true", f"auto: bf16-mixed was not measured faster for {type(net).__name__}"
    if not fast_bf16(device):
        return "32-true", f"auto: this {hardware} has no native bf16"
    return "bf16-mixed", f"this {hardware} has native bf16; precision=32 for float32"


def use_channels_last(setting: Any, precision: Any, net: nn.Module) -> bool:
    """``perf.channels_last``: true, false, or auto (on for fast-path networks trained in
    bf16-mixed, where it measured faster on both CPU and GPU)."""
    if setting == "auto":
        return has_fast_path(net) and str(precision).startswith("bf16")
    if not isinstance(setting, bool):
        raise ValueError(f"perf.channels_last must be true, false or auto; got {setting!r}")
    return setting


def compile_problem(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot work here, or ``None``."""
    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile does not support Python {sys.version_info.major}.{sys.version_info.minor} in torch {torch.__version__}"
    if device_type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler was found for compiled CPU kernels"
    return None


def resolve_compile(setting: Any, accelerator: str) -> tuple[str | None, str]:
    """``perf.compile`` as a ``torch.compile`` mode or ``None`` (eager), and why; ``auto`` as
    the module docstring says."""
    if setting is None or setting is False:
        return None, "perf.compile=null"
    if setting == "auto":
        if accelerator_type(accelerator) == "cuda":
            return "default", "auto: measured faster on a CUDA GPU"
        return None, "auto: measured slower than eager on a CPU"
    if setting not in COMPILE_MODES:
        raise ValueError(f"perf.compile must be null, auto or one of {', '.join(COMPILE_MODES)}; got {setting!r}")
    return setting, f"perf.compile={setting}, as set"


def compile_network(net: nn.Module, mode: str = "default", device_type: str = "cpu", backend: Any = "inductor") -> bool:
    """Compile ``net``'s forward in place; returns whether it will run compiled.

    If compilation fails (raises a ``torch._dynamo`` exception) on any call, the network
    warns once and runs its eager forward from then on.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"perf.compile must be null or one of {', '.join(COMPILE_MODES)}; got {mode!r}")
    problem = compile_problem(device_type)
    if problem:
        warnings.warn(f"perf.compile={mode}: {problem}; training eagerly", stacklevel=2)
        return False
    eager = net.forward
    compiled = torch.compile(eager, mode=None if mode == "default" else mode, backend=backend)

    @functools.wraps(eager)
    def forward(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            warnings.warn(
                f"perf.compile={mode}: torch.compile failed ({type(error).__name__}: {first_line}); "
                f"training eagerly",
                stacklevel=2,
            )
            net.forward = eager
            return eager(*args, **kwargs)

    net.forward = forward
    return True


def depthwise_in_float32(net: nn.Module, device_type: str = "cpu") -> int:
    """Run ``net``'s depthwise convolutions outside ``device_type``'s autocast, in float32;
    returns how many. Their weights stay as they are; only the forward call changes."""
    count = 0
    for module in net.modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            module.forward = functools.partial(_float32_forward, module.forward, device_type)
            count += 1
    return count


def _float32_forward(forward: Any, device_type: str, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type, enabled=False):
        return forward(x.float())


def speed_up(net: nn.Module, precision: Any, channels_last: Any = "auto", compile: str | None = None, accelerator: str = "auto") -> dict[str, Any]:
    """Apply the ``perf`` switches to ``net`` (in place) for a run at ``precision`` (resolved);
    returns what was applied, for the caller's log."""
    applied: dict[str, Any] = {"precision": precision, "channels_last": False, "compile": None}
    if use_channels_last(channels_last, precision, net):
        net.to(memory_format=torch.channels_last)
        applied["channels_last"] = True
    device_type = accelerator_type(accelerator)
    if str(precision) == "bf16-mixed" and device_type == "cpu":
        depthwise_in_float32(net, device_type)
    mode, _ = resolve_compile(compile, accelerator)
    if mode and compile_network(net, mode, device_type):
        applied["compile"] = mode
    return applied
