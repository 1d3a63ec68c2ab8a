"""The measuring parts of the benchmarks (zoo.bench.timing): they must measure what they say."""

from __future__ import annotations

import mmap
import os
import re
import subprocess
import sys
import types
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
import zoo.bench.timing
from zoo.bench.timing import (
    Setting, TrainStep, _rss_child, _status_kib, _synchronize, busy_warning, compiled_or_eager, cuda_peak_mib,
    load_average, median_ratio, peak_rss_mib, round_ratios, spread, synthetic_batch, time_interleaved,
)  # fmt: skip


@pytest.mark.parametrize("setting", [Setting(), Setting("bf16", channels_last=True), Setting("16")])
def test_a_train_step_trains(setting):
    inputs, targets = synthetic_batch(8, 3, 32, 10)
    step = TrainStep(zoo.get_model("lenet5", num_classes=10, in_channels=3), inputs, targets, setting)
    before = [p.detach().clone() for p in step.model.parameters()]
    losses = [float(step()) for _ in range(20)]
    assert losses[-1] < losses[0]  # the same batch again and again: the loss must fall
    assert all(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()))
    assert step.scaler.is_enabled() == (setting.precision == "16")
    assert step.inputs.is_contiguous(memory_format=torch.channels_last) == setting.channels_last


def test_settings_validate_and_label_themselves():
    assert Setting("bf16", True, "default").label == "bf16 channels_last compile(default)"
    with pytest.raises(ValueError, match="precision"):
        Setting("fp8")


def test_interleaved_timing_tells_a_slow_step_from_a_fast_one():
    big, small = torch.randn(400, 400), torch.randn(20, 20)
    seconds = time_interleaved({"slow": lambda: big @ big, "fast": lambda: small @ small}, rounds=5, steps_per_round=3)
    assert set(seconds) == {"slow", "fast"} and all(len(v) == 5 for v in seconds.values())
    assert median_ratio(seconds["fast"], seconds["slow"]) > 2
    # Round by round, paired as timed: 3/1, 1/2, 8/4. A varying reference tells the pairing
    # apart: sorted pairs give 1.5, reversed pairs 0.75, a ratio of the medians 3/2 = 1.5.
    assert round_ratios([1.0, 2.0, 4.0], [3.0, 1.0, 8.0]) == [3.0, 0.5, 2.0]
    assert median_ratio([1.0, 2.0, 4.0], [3.0, 1.0, 8.0]) == 2.0


def test_interleaved_timing_takes_each_round_per_step_after_an_untimed_warmup(monkeypatch):
    """On a fake clock where the k-th call of a step takes k times its unit: the warmup is not
    timed, each round is the mean of its steps, candidates alternate and CUDA is synchronised
    after the warmup and after every timed block."""
    clock, events = [0.0], []

    def step(name, unit):
        calls = []

        def run():
            calls.append(name)
            clock[0] += len(calls) * unit
            events.append(name)

        return run

    monkeypatch.setattr(zoo.bench.timing, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: events.append(f"synchronize {device}"))
    seconds = time_interleaved(
        {"a": step("a", 1.0), "b": step("b", 10.0)}, rounds=2, steps_per_round=3, warmup=1, device="cuda:1"
    )
    # a's calls 2-4 take 2 + 3 + 4 s, calls 5-7 take 5 + 6 + 7 s: 3 s and 6 s a step; b ten times that.
    assert seconds == {"a": [3.0, 6.0], "b": [30.0, 60.0]}
    block = ["a"] * 3 + ["synchronize cuda:1"] + ["b"] * 3 + ["synchronize cuda:1"]
    assert events == ["a", "b", "synchronize cuda:1", *block, *block]


def test_interleaved_timing_defaults_to_7_rounds_of_5_steps_after_2_warmup_steps():
    calls = []
    seconds = time_interleaved({"only": lambda: calls.append(1)})
    assert (len(seconds["only"]), len(calls)) == (7, 2 + 7 * 5)


def test_round_ratios_refuse_timings_of_unequal_rounds():
    with pytest.raises(ValueError):
        round_ratios([1.0, 2.0, 4.0], [3.0, 1.0])


@pytest.mark.parametrize("values, expected", [
    ([3.0, 3.0, 3.0], 0.0),
    ([4.0, 6.0, 5.0], 0.4),
    ([5.0, 4.0, 9.0], 1.0),  # over the median 5, not the mean 6
    ([2.0, 10.0, 4.0, 6.0], 1.6),  # an even count: the median is 5
])  # fmt: skip
def test_spread_is_max_minus_min_over_the_median(values, expected):
    assert spread(values) == expected


def test_load_average_is_the_one_minute_figure_or_none_where_the_os_has_none(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (2.5, 1.5, 0.5))
    assert load_average() == 2.5

    def unavailable():
        raise OSError("no load figures here")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert load_average() is None
    monkeypatch.delattr(os, "getloadavg")  # Windows
    assert load_average() is None


@pytest.mark.parametrize("load, cores, cpu_count, expected", [
    (2.0, 2, 8, None),  # exactly one process a core: not beyond
    (2.1, 2, 8, "load average 2.1 on 2 cores"),  # the cores asked for, not the machine's
    (6.0, None, 8, None),  # by default the machine's cores
    (8.5, None, 8, "load average 8.5 on 8 cores"),
    (1.5, None, None, "load average 1.5 on 1 cores"),  # a machine that does not say: one core
    (None, 1, 1, None),  # no load figure, no warning
])  # fmt: skip
def test_a_machine_loaded_beyond_its_cores_is_called_busy(monkeypatch, load, cores, cpu_count, expected):
    monkeypatch.setattr(zoo.bench.timing, "load_average", lambda: load)
    monkeypatch.setattr(os, "cpu_count", lambda: cpu_count)
    warning = expected and f"figures unreliable: machine busy ({expected} before timing)"
    assert busy_warning(cores) == warning


def _tiny_network() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 5))  # 3x4x4 images, 5 classes


class _TwoHeads(nn.Module):
    """A network with an auxiliary head, as GoogLeNet trains: ``forward`` gives (logits, aux logits)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())  # (B, 16)
        self.fc = nn.Linear(16, 5)
        self.aux = nn.Linear(16, 5)

    def forward(self, x):
        features = self.features(x)
        return self.fc(features), self.aux(features)


def test_a_synthetic_batch_is_normal_noise_and_uniform_labels_fixed_by_the_seed():
    inputs, targets = synthetic_batch(6, 2, 5, 3, seed=7)
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(inputs, torch.randn(6, 2, 5, 5, generator=generator))
    assert torch.equal(targets, torch.randint(3, (6,), generator=generator))
    assert torch.equal(synthetic_batch(6, 2, 5, 3)[0], synthetic_batch(6, 2, 5, 3, seed=0)[0])
    assert not torch.equal(synthetic_batch(6, 2, 5, 3)[0], inputs)


@pytest.mark.parametrize("setting, label", [
    (Setting(), "fp32 NCHW eager"),
    (Setting("16", channels_last=True), "16 channels_last eager"),
    (Setting("bf16", compile="max-autotune"), "bf16 NCHW compile(max-autotune)"),
])  # fmt: skip
def test_a_setting_is_labelled_by_precision_memory_format_and_compilation(setting, label):
    assert setting.label == label


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_step_puts_the_network_and_the_batch_on_its_device_in_its_memory_format(channels_last):
    # The meta device stands in for an accelerator: anything left on the CPU shows.
    inputs, targets = synthetic_batch(2, 3, 4, 5)
    step = TrainStep(_tiny_network().eval(), inputs, targets, Setting(channels_last=channels_last), device="meta")
    meta = torch.device("meta")
    assert {p.device for p in step.model.parameters()} == {step.inputs.device, step.targets.device} == {meta}
    assert step.model[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert step.inputs.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert step.model.training


def test_a_step_is_an_sgd_update_with_momentum_on_cross_entropy():
    """Two steps against the update written out: buffer b = 0.9 b + g (b = g at first), p -= 1e-3 b."""
    inputs, targets = synthetic_batch(4, 3, 4, 5)
    model = _tiny_network()
    reference = _tiny_network()
    reference.load_state_dict(model.state_dict())
    step = TrainStep(model, inputs, targets)
    buffers = [torch.zeros_like(p) for p in reference.parameters()]
    for _ in range(2):
        loss = nn.functional.cross_entropy(reference(inputs), targets)
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        with torch.no_grad():
            for p, b, g in zip(reference.parameters(), buffers, grads):
                p.sub_(1e-3 * b.mul_(0.9).add_(g))
        torch.testing.assert_close(step(), loss.detach())
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)  # the rounding: 2e-8; no momentum: 3e-4


def test_a_step_trains_the_main_head_of_a_network_with_auxiliary_heads():
    inputs, targets = synthetic_batch(4, 3, 4, 5)
    model = _TwoHeads()
    main, aux = (nn.functional.cross_entropy(logits, targets).detach() for logits in model(inputs))
    assert abs(main - aux) > 0.01  # the heads tell apart
    step = TrainStep(model, inputs, targets)
    model.aux.weight.grad = torch.ones_like(model.aux.weight)  # a gradient left over from elsewhere
    aux_weight = model.aux.weight.detach().clone()
    torch.testing.assert_close(step(), main)
    # The loss never reaches the auxiliary head: its gradient is released between steps
    # (zero_grad(set_to_none=True), as a training run does), not kept as zeros.
    assert model.aux.weight.grad is None and torch.equal(model.aux.weight, aux_weight)


def test_a_step_compiles_the_network_only_when_asked(monkeypatch):
    compiled = []

    def fake_compile(model, *, mode):  # records instead of compiling, which takes seconds
        compiled.append((model, mode))
        return nn.Identity()

    monkeypatch.setattr(torch, "compile", fake_compile)
    inputs, targets = synthetic_batch(2, 3, 4, 5)
    eager = TrainStep(_tiny_network(), inputs, targets, Setting("bf16"))
    assert eager.forward is eager.model and compiled == []
    fast = TrainStep(_tiny_network(), inputs, targets, Setting("bf16", compile="max-autotune"))
    assert compiled == [(fast.model, "max-autotune")] and fast.forward is not fast.model
    assert isinstance(fast.forward, nn.Identity)


@pytest.mark.parametrize("precision, dtype", [("32", None), ("bf16", torch.bfloat16), ("16", torch.float16)])
def test_autocast_covers_a_step_at_its_precision_and_fp32_not_at_all(precision, dtype):
    inputs, targets = synthetic_batch(2, 3, 4, 5)
    step = TrainStep(_tiny_network(), inputs, targets, Setting(precision))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an fp32 autocast on the CPU warns that it disables itself
        with step.autocast():
            autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    assert autocast == dtype


def test_cuda_is_synchronised_on_its_own_device_and_nothing_else_is(monkeypatch):
    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", synchronised.append)
    for device in ("cpu", "meta", "cuda:1", "cuda"):
        _synchronize(torch.device(device))
    assert synchronised == [torch.device("cuda", 1), torch.device("cuda")]


@pytest.mark.parametrize("device, before, peak, expected", [
    pytest.param(None, 5 * 2**20 + 123, 17 * 2**19 + 123, 3.5, id="cuda by default"),
    pytest.param("cuda:1", 2**30, 2**30 + 3 * 2**19, 1.5, id="cuda:1"),
])  # fmt: skip
def test_cuda_peak_memory_is_the_peak_while_the_step_runs_above_what_was_allocated_before(
    monkeypatch, device, before, peak, expected
):
    events = []

    def recorder(name, value=None):
        def call(device):
            events.append((name, device))
            return value

        return call

    monkeypatch.setattr(zoo.bench.timing, "_synchronize", recorder("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", recorder("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", recorder("allocated", before))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", recorder("peak", peak))
    arguments = () if device is None else (device,)
    assert cuda_peak_mib(lambda: events.append("step"), *arguments) == expected
    cuda = torch.device(device or "cuda")
    assert events == [
        ("synchronize", cuda), ("reset", cuda), ("allocated", cuda), "step", ("synchronize", cuda), ("peak", cuda)
    ]  # fmt: skip


def test_status_fields_are_read_from_proc_self_status():
    assert (_status_kib("Pid"), _status_kib("PPid")) == (os.getpid(), os.getppid())
    with pytest.raises(KeyError) as error:
        _status_kib("VmNoSuchField")
    assert error.value.args == ("VmNoSuchField",)


def test_the_memory_child_reports_its_peak_above_its_size_before_building(monkeypatch, one_thread):
    """What the child of peak_rss_mib does, run here against a fake /proc: reset the peak, read
    the resident size, build and step, then put (peak - size before) / 1024 MiB."""
    events, figures = [], []
    status = {"VmRSS": 300_000, "VmHWM": 300_000 + 5 * 1024 + 512}  # kB: the peak 5.5 MiB above
    clear_refs = types.SimpleNamespace(write_text=lambda text: events.append(("clear_refs", text)))
    monkeypatch.setattr(zoo.bench.timing, "CLEAR_REFS", clear_refs)

    def read(field):
        events.append(("read", field))
        return status[field]

    def build():
        events.append(("build on threads", torch.get_num_threads()))
        return lambda: events.append("step")

    monkeypatch.setattr(zoo.bench.timing, "_status_kib", read)
    _rss_child(build, 2, 3, types.SimpleNamespace(put=figures.append))
    assert figures == [5.5]
    assert events == [
        ("clear_refs", "5"), ("read", "VmRSS"), ("build on threads", 3), "step", "step", ("read", "VmHWM")
    ]  # fmt: skip


def _allocating_step(mib: int):
    # A mapping of its own, every page touched: the pages come from the kernel and go back to
    # it when the mapping closes, whatever the allocator of this (long-lived) test process
    # keeps. A torch tensor here once reused pages a freed one had left resident (figure 0).
    kept, one_mib = mmap.mmap(-1, mib * 2**20), b"\1" * 2**20
    for _ in range(mib):
        kept.write(one_mib)
    return lambda: kept[0]


def test_the_memory_child_counts_what_the_build_allocates_and_not_the_earlier_peaks(one_thread):
    # Here, in this process: a peak of 128 MiB just freed, which the reset of VmHWM must forget.
    _allocating_step(128)  # kept by nothing: unmapped at once
    figures = []
    _rss_child(partial(_allocating_step, 64), 1, 1, types.SimpleNamespace(put=figures.append))
    assert 63 < figures[0] < 72, figures


def test_peak_rss_of_a_fresh_process_counts_what_the_build_allocates_and_not_the_start_up():
    # torch.ones pickles without this module: the child imports only torch and zoo.bench.timing.
    mib = peak_rss_mib(partial(torch.ones, 100 * 2**18), steps=0)
    assert 99 < mib < 115, mib  # the interpreter and torch, hundreds of MiB, are left out


def test_a_failed_memory_measurement_fails_at_once_with_the_exit_code():
    # int("...") raises in the child before it puts a figure (the parent used to wait 30 min).
    with pytest.raises(RuntimeError, match=r"^the memory measurement process failed with exit code 1$"):
        peak_rss_mib(partial(int, "not a number"))


def test_peak_rss_needs_linux_proc(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo.bench.timing, "CLEAR_REFS", tmp_path / "clear_refs")
    message = r"^peak_rss_mib reads Linux's /proc/self/status; use a CUDA device elsewhere$"
    with pytest.raises(RuntimeError, match=message):
        peak_rss_mib(partial(int, "1"))


class _FakeStep:
    def __init__(self, error: Exception | None):
        self.error, self.calls = error, 0

    def __call__(self):
        self.calls += 1
        if self.error:
            raise self.error


def _step_builder(error: Exception | None = None):
    """A step builder that records what it builds; a compiled step raises ``error``."""
    built = []

    def build(setting):
        built.append((setting, _FakeStep(error if setting.compile else None)))
        return built[-1][1]

    return build, built


def test_an_eager_setting_is_built_once_and_not_tried():
    build, built = _step_builder(RuntimeError("never raised"))
    step = compiled_or_eager(build, Setting("bf16", channels_last=True))
    assert [s for s, _ in built] == [Setting("bf16", True)] and step is built[0][1] and step.calls == 0


def test_a_compiled_step_that_runs_is_kept():
    build, built = _step_builder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = compiled_or_eager(build, Setting("16", compile="default"))
    assert [s for s, _ in built] == [Setting("16", compile="default")] and step is built[0][1] and step.calls == 1


def test_a_compiled_step_that_fails_warns_once_and_is_rebuilt_eager_at_the_same_precision_and_format():
    build, built = _step_builder(RuntimeError("no backend for this op"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = compiled_or_eager(build, Setting("bf16", True, "max-autotune"))
    message = "torch.compile failed (RuntimeError: no backend for this op); running eagerly"
    assert [(w.category, str(w.message)) for w in caught] == [(UserWarning, message)]
    assert [s for s, _ in built] == [Setting("bf16", True, "max-autotune"), Setting("bf16", True, None)]
    assert step is built[1][1] and (built[0][1].calls, step.calls) == (1, 0)


def test_the_gpu_checks_cifar_run_times_the_recipes_network_on_cifar_shaped_batches():
    """scripts/gpu_check.sh's CIFAR-10 row, run on the CPU with a tiny batch: the network is
    the one the resnet18_cifar10 recipe trains (its model options), fed 3x32x32 images."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_perf.py"
    args = ["--suite", "cifar", "--rounds", "1", "--steps-per-round", "1", "--warmup", "0", "--batch-size", "2"]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "## resnet18_cifar10 recipe: resnet18 {'small_input': True}, batch 2, 3x32x32" in result.stdout
    assert re.search(r"resnet18 CIFAR-10 training step, fp32\s+\d+\s+[\d.]+\s+\d+%", result.stdout)
