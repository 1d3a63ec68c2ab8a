"""The speed switches (zoo.perf): what ``auto`` chooses, and that every switch leaves the
results as they were (channels-last, compilation and its fallback, bf16 autocast,
gradient accumulation, activation checkpointing)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import zoo
from zoo import perf
from zoo.cli.train import train

from tests.helpers import QUIET, compose_config


@pytest.fixture
def bf16_hardware(monkeypatch):
    def set_to(fast: bool) -> None:
        monkeypatch.setattr(perf, "fast_bf16", lambda device_type: fast)

    return set_to


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_is_bf16_for_imagenet_cnns_where_bf16_is_fast(bf16_hardware, fast):
    bf16_hardware(fast)
    cnn = zoo.get_model("resnet18", num_classes=10)
    vit = zoo.get_model("vit_tiny", num_classes=10, image_size=32, small_input=True)
    lenet = zoo.get_model("lenet5")  # too narrow to gain (measured; zoo.models.lenet)
    assert perf.resolve_precision("auto", "cpu", cnn) == ("bf16-mixed" if fast else "32-true")
    assert perf.resolve_precision("auto", "cpu", vit) == perf.resolve_precision("auto", "cpu", lenet) == "32-true"
    assert perf.resolve_precision("16-mixed", "cpu", cnn) == "16-mixed"  # explicit settings pass through
    assert perf.use_channels_last("auto", "bf16-mixed", cnn) and not perf.use_channels_last("auto", "32-true", cnn)
    assert not perf.use_channels_last("auto", "bf16-mixed", vit) and perf.use_channels_last(True, "32-true", vit)


def test_the_precision_choice_says_why_in_each_branch(bf16_hardware):
    cnn, lenet = zoo.get_model("resnet18", num_classes=10), zoo.get_model("lenet5")
    bf16_hardware(True)
    assert perf.choose_precision("auto", "cpu", cnn) == ("bf16-mixed", "this CPU has native bf16; precision=32 for float32")
    assert perf.choose_precision("auto", "cpu", lenet) == ("32-true", "auto: bf16-mixed was not measured faster for LeNet5")
    assert perf.choose_precision("auto", "gpu", cnn) == ("bf16-mixed", "this GPU has native bf16; precision=32 for float32")
    assert perf.choose_precision("32", "cpu", cnn) == ("32", "trainer.precision=32, as set")
    assert perf.choose_precision("bf16-mixed", "cpu", lenet) == ("bf16-mixed", "trainer.precision=bf16-mixed, as set")
    bf16_hardware(False)
    assert perf.choose_precision("auto", "cpu", cnn) == ("32-true", "auto: this CPU has no native bf16")


def test_bad_switch_values_name_the_choices():
    net = zoo.get_model("lenet5")
    with pytest.raises(ValueError, match="bf16-mixed"):
        perf.resolve_precision("bfloat16", "cpu", net)
    with pytest.raises(ValueError, match="true, false or auto"):
        perf.use_channels_last("yes", "32-true", net)
    with pytest.raises(ValueError, match="max-autotune"):
        perf.compile_network(net, "fastest")


@pytest.mark.parametrize(
    "threads",
    [
        pytest.param(1, marks=pytest.mark.xfail(strict=True, reason=(
            "torch 2.14.1 on CPU with one thread: the channels-last backward of ResNet-18 differs from "
            "NCHW far beyond rounding (forward outputs agree); see docs/performance.md. Strict: reports "
            "when a torch release fixes it."
        ))),
        2,
    ],
)  # fmt: skip
def test_channels_last_gives_the_same_outputs_and_gradients(threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _compare_channels_last_with_nchw()
    finally:
        torch.set_num_threads(before)


def _compare_channels_last_with_nchw():
    torch.manual_seed(0)
    nchw = zoo.get_model("resnet18", num_classes=10, in_channels=3, small_input=True)
    fast = zoo.get_model("resnet18", num_classes=10, in_channels=3, small_input=True)
    fast.load_state_dict(nchw.state_dict())
    applied = perf.speed_up(fast, "32-true", channels_last=True)
    assert applied["channels_last"] and fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.state_dict().keys() == nchw.state_dict().keys()
    x = torch.randn(4, 3, 32, 32)
    out_a, out_b = nchw(x), fast(x)
    torch.testing.assert_close(out_b, out_a, rtol=1e-4, atol=1e-5)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    expected = nchw.conv1.weight.grad  # summation order differs: compare at the gradient's scale
    torch.testing.assert_close(fast.conv1.weight.grad, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


def test_compile_gives_the_same_outputs_and_keeps_the_state_dict():
    net = zoo.get_model("lenet5", num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    expected, keys = net(x), list(net.state_dict())
    assert perf.compile_network(net, "default", backend="eager")  # dynamo's tracing; no C++ build in a test
    torch.testing.assert_close(net(x), expected)
    assert list(net.state_dict()) == keys


def failing_backend(graph_module, example_inputs):
    raise RuntimeError("this backend cannot compile anything")


def test_a_failing_compilation_warns_and_falls_back_to_eager():
    net = zoo.get_model("lenet5", num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    expected = net(x)
    assert perf.compile_network(net, "default", backend=failing_backend)
    with pytest.warns(UserWarning, match="torch.compile failed.*training eagerly"):
        out = net(x)
    torch.testing.assert_close(out, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: later calls run eagerly without trying again
        torch.testing.assert_close(net(x), expected)


def test_compile_auto_compiles_on_a_cuda_gpu_and_not_on_a_cpu(monkeypatch):
    assert perf.resolve_compile("auto", "cpu") == (None, "auto: measured slower than eager on a CPU")
    assert perf.resolve_compile("auto", "auto") == (None, "auto: measured slower than eager on a CPU")  # no CUDA here
    assert perf.resolve_compile(None, "gpu") == (None, "perf.compile=null")
    assert perf.resolve_compile("max-autotune", "cpu") == ("max-autotune", "perf.compile=max-autotune, as set")
    with pytest.raises(ValueError, match="perf.compile must be null, auto or one of default"):
        perf.resolve_compile("fastest", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert perf.resolve_compile("auto", "auto") == ("default", "auto: measured faster on a CUDA GPU")
    assert perf.resolve_compile("auto", "gpu") == ("default", "auto: measured faster on a CUDA GPU")
    assert perf.resolve_compile("auto", "cpu") == (None, "auto: measured slower than eager on a CPU")  # asked for the CPU


def test_speed_up_compiles_what_perf_compile_resolves_to(monkeypatch):
    compiled = []
    monkeypatch.setattr(perf, "compile_network", lambda net, mode, device_type: compiled.append((mode, device_type)) or True)
    net = zoo.get_model("lenet5")
    assert perf.speed_up(net, "32-true", "auto", "auto", "cpu")["compile"] is None and compiled == []
    assert perf.speed_up(net, "32-true", "auto", "default", "cpu")["compile"] == "default"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert perf.speed_up(net, "32-true", "auto", "auto", "gpu")["compile"] == "default"
    assert compiled == [("default", "cpu"), ("default", "cuda")]


def test_compile_where_the_platform_cannot_warns_and_stays_eager(monkeypatch):
    monkeypatch.setattr(perf.shutil, "which", lambda name: None)
    net = zoo.get_model("lenet5")
    forward = net.forward
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        assert not perf.compile_network(net, "default", device_type="cpu")
    assert net.forward == forward


def saved_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Bytes of the tensors autograd keeps for the backward pass, and the output."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return total, out


@pytest.mark.parametrize(
    "name, options",
    [("vit_tiny", {"image_size": 32, "small_input": True}), ("densenet121", {"small_input": True})],
)
def test_activation_checkpointing_keeps_results_and_saves_memory(name, options):
    key = "activation_checkpointing" if name.startswith("vit") else "memory_efficient"
    torch.manual_seed(0)
    plain = zoo.get_model(name, num_classes=10, in_channels=3, **options)
    lean = zoo.get_model(name, num_classes=10, in_channels=3, **options, **{key: True})
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    plain_bytes, out_plain = saved_bytes(plain, x)
    lean_bytes, out_lean = saved_bytes(lean, x)
    torch.testing.assert_close(out_lean, out_plain)
    assert lean_bytes < 0.6 * plain_bytes, (lean_bytes, plain_bytes)
    out_plain.sum().backward()
    out_lean.sum().backward()
    for (n, a), b in zip(plain.named_parameters(), lean.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=n)


def first_step_weights(tmp_path, *overrides: str) -> torch.Tensor:
    cfg = compose_config("train", tmp_path, [
        "data.max_shift=0", "trainer.max_steps=1", "trainer.precision=32-true", "logger=[]",
        "callbacks.checkpoint=null", "sched=none", "model.norm=null", *QUIET, *overrides,
    ])  # fmt: skip
    from zoo.cli.build import build_task, build_trainer
    from zoo.data import build_datamodule
    from zoo.data.lightning import for_lightning

    torch.manual_seed(0)  # the same initial weights and shuffling order in every call
    datamodule = build_datamodule(**cfg.data)
    datamodule.setup("fit")
    module = build_task(cfg, datamodule)
    build_trainer(cfg, tmp_path, module).fit(module, datamodule=for_lightning(datamodule))
    return torch.cat([p.detach().flatten() for p in module.net.parameters()])


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    """Two accumulated batches of 32 make the same update as one batch of 64 (LeNet-5
    without batch norm; the sampler's order is the same for both)."""
    large = first_step_weights(tmp_path / "a", "data.batch_size=64")
    accumulated = first_step_weights(tmp_path / "b", "data.batch_size=32", "trainer.accumulate_grad_batches=2")
    single = first_step_weights(tmp_path / "c", "data.batch_size=32")
    torch.testing.assert_close(accumulated, large, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(single, large, rtol=1e-5, atol=1e-6)


def test_bf16_channels_last_training_run_learns(tmp_path):
    """The fast path chosen by ``auto`` on bf16 hardware, set explicitly so any CPU runs it."""
    cfg = compose_config("train", tmp_path, [
        "trainer.precision=bf16-mixed", "perf.channels_last=true", "trainer.max_epochs=3",
        "data.batch_size=64", *QUIET,
    ])  # fmt: skip
    train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["test"]["test/acc"] > 0.9
    ckpt = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    kernels = [v for v in ckpt["state_dict"].values() if v.ndim == 4]
    assert kernels and all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels)
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())
    options = {k: v for k, v in ckpt["hyper_parameters"]["model"].items() if k != "name"}
    net = zoo.get_model("lenet5", **options)  # an NCHW model takes the weights
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})


def test_cpu_bf16_keeps_depthwise_convolutions_in_float32():
    net = zoo.get_model("efficientnet_b0", num_classes=10, in_channels=3)
    dtypes: dict[str, torch.dtype] = {}
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out, name=name: dtypes.__setitem__(name, out.dtype))
    perf.speed_up(net, "bf16-mixed", channels_last=True, accelerator="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(1, 3, 64, 64))
    depthwise = {n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1}
    assert len(depthwise) == 16  # one per MBConv block
    assert all(dtypes[n] == torch.float32 for n in depthwise)
    assert all(dtypes[n] == torch.bfloat16 for n in dtypes.keys() - depthwise)
