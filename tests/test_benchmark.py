"""The measuring parts of the benchmarks (zoo.benchmark): they must measure what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

import zoo
from zoo.benchmark import Setting, TrainStep, median_ratio, peak_rss_mib, round_ratios, synthetic_batch, time_interleaved


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
    seconds = time_interleaved({"slow": lambda: big @ big, "fast": lambda: small @ small}, rounds=3, steps_per_round=3)
    assert set(seconds) == {"slow", "fast"} and all(len(v) == 3 for v in seconds.values())
    assert median_ratio(seconds["fast"], seconds["slow"]) > 2
    # Round by round, paired as timed: 3/1, 1/2, 8/4. A varying reference tells the pairing
    # apart: sorted pairs give 1.5, reversed pairs 0.75, a ratio of the medians 3/2 = 1.5.
    assert round_ratios([1.0, 2.0, 4.0], [3.0, 1.0, 8.0]) == [3.0, 0.5, 2.0]
    assert median_ratio([1.0, 2.0, 4.0], [3.0, 1.0, 8.0]) == 2.0


def _allocating_step(mib: int):
    kept = torch.ones(mib * 2**18)  # float32: mib MiB, touched
    return lambda: kept.add_(1)


def test_peak_rss_of_a_fresh_process_sees_what_the_step_allocates():
    small = peak_rss_mib(partial(_allocating_step, 1), steps=1)
    large = peak_rss_mib(partial(_allocating_step, 300), steps=1)
    assert small < 50 and 290 < large < 350, (small, large)


def test_the_gpu_checks_cifar_run_times_the_recipes_network_on_cifar_shaped_batches():
    """scripts/gpu_check.sh's CIFAR-10 row, run on the CPU with a tiny batch: the network is
    the one the resnet18_cifar10 recipe trains (its model options), fed 3x32x32 images."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_perf.py"
    args = ["--suite", "cifar", "--rounds", "1", "--steps-per-round", "1", "--warmup", "0", "--batch-size", "2"]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "## resnet18_cifar10 recipe: resnet18 {'small_input': True}, batch 2, 3x32x32" in result.stdout
    assert re.search(r"resnet18 CIFAR-10 training step, fp32\s+\d+\s+[\d.]+\s+\d+%", result.stdout)
