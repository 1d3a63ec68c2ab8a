"""Speed switches of a training run: precision, memory format, compilation.

``trainer.precision=auto`` and ``perf.channels_last=auto`` (the defaults) choose, for a
convolutional network on hardware with fast bfloat16 (a CUDA GPU that supports it, or a
CPU with AVX-512 BF16 or AMX), ``bf16-mixed`` autocast and channels-last weights; anything
else trains in float32, NCHW. This is the fastest setting that measured safe:
``scripts/bench_perf.py`` (suite ``fast``) times it against torchvision's fp32 NCHW
training step and checks digits accuracy against the fp32 run (docs/performance.md).
Autocast keeps weights, optimizer state and reductions (losses, norms' statistics) in
float32; only matrix products and convolutions run in bfloat16. ``16-mixed`` (float16
with loss scaling) is Lightning's and is never chosen automatically: it needs the scaler
and CPUs have no fast float16.

``perf.compile`` compiles the network with :func:`torch.compile` (its ``mode``); if the
platform cannot compile, or compilation fails on the first batch, a warning says why and
training goes on eagerly. The module's parameters and state_dict keys are untouched, so
checkpoints do not depend on the switch.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sys
import warnings
from typing import Any

import torch
from torch import nn

log = logging.getLogger("zoo")

PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "64", "transformer-engine")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def accelerator_type(accelerator: str) -> str:
    """``"cuda"`` or ``"cpu"``: where Lightning's ``accelerator`` setting will train."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def fast_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bfloat16 matrix products natively (fast, not emulated)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    cpu = getattr(torch, "cpu", None)  # private probes of oneDNN's own dispatch; absent: assume not
    return any(bool(getattr(cpu, probe, lambda: False)()) for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def is_convolutional(net: nn.Module) -> bool:
    """A network whose work is mostly convolutions (``ImageModel.convolutional``)."""
    return bool(getattr(net, "convolutional", False))


def resolve_precision(precision: Any, accelerator: str, net: nn.Module) -> Any:
    """Lightning's precision for ``trainer.precision``; ``"auto"`` as the module docstring says."""
    if precision != "auto":
        if str(precision) not in PRECISIONS:
            raise ValueError(f"trainer.precision must be auto or one of {', '.join(PRECISIONS)}; got {precision!r}")
        return precision
    if is_convolutional(net) and fast_bf16(accelerator_type(accelerator)):
        return "bf16-mixed"
    return "32-true"


def use_channels_last(setting: Any, precision: Any, net: nn.Module) -> bool:
    """``perf.channels_last``: true, false, or auto (on for convolutional networks trained
    in bf16-mixed, where it measured faster on both CPU and GPU)."""
    if setting == "auto":
        return is_convolutional(net) and str(precision).startswith("bf16")
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


def speed_up(net: nn.Module, precision: Any, channels_last: Any = "auto", compile: str | None = None, accelerator: str = "auto") -> dict[str, Any]:
    """Apply the ``perf`` switches to ``net`` (in place) for a run at ``precision`` (resolved);
    returns what was applied, for the log."""
    applied: dict[str, Any] = {"precision": precision, "channels_last": False, "compile": None}
    if use_channels_last(channels_last, precision, net):
        net.to(memory_format=torch.channels_last)
        applied["channels_last"] = True
    if compile and compile_network(net, compile, accelerator_type(accelerator)):
        applied["compile"] = compile
    log.info("speed: precision %s, channels_last %s, compile %s", *applied.values())
    return applied
