"""Shared test helpers: the real Hydra configs composed in-process, CLI subprocesses, model weights."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image
from torch import nn

from zoo.cli import config  # noqa: F401  (registers the config schemas)
from zoo.files import config_dir
from zoo.models import MODELS, ImageModel
from zoo.models.factory import build_on_meta

CONFIGS = Path(config_dir())
QUIET = ["callbacks.progress_bar=none", "trainer.enable_model_summary=false"]
# A GRU barely trained on a few reversed strings: a real seq2seq checkpoint in a second or two.
TINY_SEQ2SEQ = [
    "model=seq2seq_gru", "data=reverse", "sched=none", "data.train_size=32", "data.val_size=8", "data.test_size=8",
    "data.min_len=2", "data.max_len=5", "data.num_symbols=8", "model.hidden=16", "model.emb_dim=8",
    "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1", "~logger", *QUIET,
]  # fmt: skip


def compose_config(name: str, run_dir: Path, overrides: list[str]) -> DictConfig:
    """The config ``zoo-<name>`` would run with, with ``run_dir`` as its output folder."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_cli(command: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a console script of this package as a user would, in a fresh process."""
    script = Path(sys.executable).parent / command
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=600)


def run_main(command: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run console script ``command`` in this process: the same entry-point function, with
    ``sys.argv`` set and stdout/stderr captured, its exit status as ``returncode``. About
    10x faster than :func:`run_cli` (no interpreter start and Lightning import), for the
    many tests of what a command answers; :func:`run_cli` keeps the process boundary tested."""
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=command)
    main = entry.load()
    out, err = io.StringIO(), io.StringIO()
    argv, environ = sys.argv, dict(os.environ)
    sys.argv = [command, *args]
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess([command, *args], returncode, out.getvalue(), err.getvalue())


def randomize_batch_norms(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so that eps or wiring mistakes show
    when our model and torchvision's are compared on the same weights."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)


def write_image_folder(root: Path, splits=("train", "test"), classes=("cat", "dog"), per_class: int = 4) -> None:
    """An ImageFolder tree of random 24x20 RGB PNGs: <root>/<split>/<class>/<i>.png."""
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def informative_weights(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """Weights under which ``model``'s outputs are of order one and depend on the input.

    At initialisation some outputs barely do: GoogLeNet's and EfficientNet's activations
    fade layer after layer (their logits vary by ~1e-8 between inputs at 224 px, far below
    a 1e-5 tolerance), AlexNet's N(0, 0.01) classifier makes them tiny and ViT's zero head
    constant, so a comparison of two such networks cannot fail on a wiring mistake in the
    trunk. Here: He-initialised weights, small random biases, random batch-norm affine
    parameters, no all-zero tensors, and batch-norm running statistics measured on
    ``batch`` as training would leave them. Returns ``model`` in eval mode.
    """
    randomize_batch_norms(model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: exactly the statistics of `batch`
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
        if norms:  # running statistics to measure
            model.train()(batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def assert_varies_with_the_input(outputs: torch.Tensor, at_least: float = 1e-2) -> None:
    """Fail unless the rows of ``outputs`` (one per input) differ by more than ``at_least``:
    a comparison of outputs that do not depend on the input proves nothing."""
    spread = (outputs - outputs.mean(0)).abs().max().item()
    assert spread > at_least, f"outputs hardly depend on the input (spread {spread:.2e}): the comparison is vacuous"


def accepts(name: str, option: str) -> bool:
    """Whether the registered model ``name`` takes the constructor argument ``option``."""
    return option in inspect.signature(type(models_on_meta()[name])).parameters


def model_fingerprint(model: nn.Module) -> list:
    """What a model is, as far as its options can change it: every module's class, its
    plain attributes (rates, flags, sizes) and its parameter and buffer shapes. Two builds
    with equal fingerprints are the same architecture with the same settings."""
    plain = (bool, int, float, str, tuple, type(None))
    return [
        (
            name,
            type(module).__name__,
            sorted((k, v) for k, v in vars(module).items() if isinstance(v, plain) and not k.startswith("_")),
            [(n, tuple(t.shape)) for n, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]],
        )
        for name, module in model.named_modules()
    ]


# The registry's model lists, built once per test process and handed to any test that
# asks for one of these arguments (instead of module-level lists in several files):
#   model_name          every registered model
#   image_model         every registered image model
#   family_model        the smallest variant (fewest parameters) of each model class
#   family_image_model  the same, image models only
# The meta-device checks run on every model; tests that compute on real tensors take the
# family representatives, whose code paths are the same as their larger siblings'.
@functools.cache
def models_on_meta() -> dict[str, nn.Module]:
    """Every registered model with its default arguments, on the meta device."""
    return {name: build_on_meta(MODELS.get(name)) for name in MODELS.names()}


@functools.cache
def model_lists() -> dict[str, list[str]]:
    built = models_on_meta()
    smallest: dict[type, str] = {}
    for name in sorted(built, key=lambda n: (sum(p.numel() for p in built[n].parameters()), n), reverse=True):
        smallest[type(built[name])] = name
    image = [name for name, model in built.items() if isinstance(model, ImageModel)]
    families = sorted(smallest.values())
    return {
        "model_name": sorted(built),
        "image_model": sorted(image),
        "family_model": families,
        "family_image_model": [name for name in families if name in image],
    }


def _probe(outputs: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
    """A scalar of ``outputs`` whose gradient differs from element to element (a plain sum
    would hide a permutation)."""
    return sum((y * torch.linspace(-1.0, 2.0, y.numel()).view_as(y)).sum() for y in outputs if y is not None)


def values_and_gradients(module: nn.Module, *inputs: torch.Tensor, **kwargs) -> dict[str, torch.Tensor | None]:
    """``module(*inputs, **kwargs)``'s outputs (``out0``, ``out1``, ...) and the gradients of a
    probe of them with respect to each distinct input (``d_in0``, ...; one leaf for an input
    passed twice, as in self-attention) and each parameter (``d_<name>``)."""
    module.zero_grad()
    leaves: dict[int, torch.Tensor] = {}
    args = [leaves.setdefault(id(x), x.detach().clone().requires_grad_()) for x in inputs]
    outputs = module(*args, **kwargs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    _probe(outputs).backward()
    result = {f"out{i}": None if y is None else y.detach() for i, y in enumerate(outputs)}
    result.update({f"d_in{i}": leaf.grad for i, leaf in enumerate(leaves.values())})
    result.update({f"d_{name}": p.grad for name, p in module.named_parameters()})
    return result


def assert_same_values_and_gradients(
    ours: nn.Module, ref: nn.Module, *inputs: torch.Tensor, ref_kwargs: dict | None = None, **kwargs
) -> None:
    """``ours`` and the reference ``ref`` (with the same weights) give the same outputs and the
    same gradients of inputs and parameters; ``ref_kwargs`` (default ``kwargs``) go to ``ref``."""
    expected = values_and_gradients(ref, *inputs, **(kwargs if ref_kwargs is None else ref_kwargs))
    actual = values_and_gradients(ours, *inputs, **kwargs)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-5, atol=1e-5, msg=lambda m: f"{key}: {m}")
