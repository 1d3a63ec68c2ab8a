"""A resumed run trains with its own config (zoo.cli.resume): ``resume=true`` alone continues
it exactly; a command line that changes what it trained with is refused in one line before
anything in the run folder is written; what a resume may change is recorded beside it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

from zoo.callbacks import StopOnSignal
from zoo.cli.resume import ABSENT, MAY_CHANGE, differences
from zoo.models import get_model

from tests.helpers import QUIET, run_main

LENET = {"activation": "relu", "pool": "max", "c3_table": "full", "norm": "batch"}  # configs/model/lenet5.yaml


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _ok(*args: str) -> None:
    result = run_main("zoo-train", *args, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


@pytest.fixture(scope="module")
def freeze_runs(tmp_path_factory):
    """A freeze run of LeNet-5 from a weights file, trained through (``whole``) and stopped
    by SIGTERM at step 7 of 10, mid-epoch (``stopped``)."""
    base = tmp_path_factory.mktemp("freeze")
    torch.save(get_model("lenet5", **LENET).state_dict(), base / "lenet5.pth")
    run = ["finetune=freeze", f"finetune.weights={base / 'lenet5.pth'}", "trainer.max_epochs=2", "optim=adamw", *QUIET]
    _ok(*run, f"hydra.run.dir={base / 'whole'}")

    original = StopOnSignal.on_train_batch_end if hasattr(StopOnSignal, "on_train_batch_end") else None

    def stop_at_7(self, trainer, *args):
        if original is not None:
            original(self, trainer, *args)
        if trainer.global_step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StopOnSignal, "on_train_batch_end", stop_at_7, raising=False)
        stopped = run_main("zoo-train", *run, f"hydra.run.dir={base / 'stopped'}")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    return base / "whole", base / "stopped"


def test_resume_true_alone_continues_a_freeze_run_exactly(freeze_runs):
    whole, stopped = freeze_runs
    config_before = (stopped / "config.yaml").read_bytes()
    record_before = _digest(stopped / ".hydra")
    _ok(f"hydra.run.dir={stopped}", "resume=true")  # no finetune=freeze, no weights, no epochs

    ours, ref = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (stopped, whole))
    assert ours["global_step"] == ref["global_step"] == 10
    assert ours["state_dict"].keys() == ref["state_dict"].keys()
    assert all(torch.equal(ours["state_dict"][k], ref["state_dict"][k]) for k in ref["state_dict"])
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (stopped, whole)]
    assert metrics[0]["test"] == metrics[1]["test"] and metrics[0]["resumes"] == 1
    assert (stopped / "config.yaml").read_bytes() == config_before  # the run's first config stays
    assert _digest(stopped / ".hydra") == record_before
    assert yaml.safe_load((stopped / "config.resume-1.yaml").read_text())["changed"] == {}


def test_a_resume_that_changes_what_the_run_trained_with_is_one_line_and_writes_nothing(freeze_runs):
    whole, _ = freeze_runs
    before = _digest(whole)
    result = run_main("zoo-train", f"hydra.run.dir={whole}", "resume=true", "finetune=full", "optim.lr=0.5", "seed=7")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    # The group's choice first, then every other key in order, each with the run's value and the new one.
    assert f"resume: the command line changes what run {whole} trained with: finetune.mode freeze -> full; " in line
    assert "optim.lr 0.001 -> 0.5; seed 42 -> 7" in line
    assert "a resume may only change trainer.max_epochs, trainer.max_steps," in line
    assert _digest(whole) == before and not (whole / ".lock").exists()


def test_allowed_changes_are_recorded_per_resume_and_repeated_overrides_are_accepted(tmp_path):
    run = ["model=mlp", "sched=step", "sched.step_size=1", "optim.lr=0.02", "trainer.max_epochs=1", *QUIET]
    _ok(*run, f"hydra.run.dir={tmp_path}")
    first = _digest(tmp_path / ".hydra"), (tmp_path / "config.yaml").read_bytes()
    _ok(f"hydra.run.dir={tmp_path}", "resume=true", "trainer.max_epochs=2", "model=mlp", "optim.lr=0.02")
    _ok(f"hydra.run.dir={tmp_path}", "resume=true", "trainer.max_epochs=3", "logger=[csv,tensorboard]")

    assert (_digest(tmp_path / ".hydra"), (tmp_path / "config.yaml").read_bytes()) == first
    one, two = (yaml.safe_load((tmp_path / f"config.resume-{n}.yaml").read_text()) for n in (1, 2))
    assert one["overrides"] == ["resume=true", "trainer.max_epochs=2", "model=mlp", "optim.lr=0.02"]
    assert one["changed"] == {"trainer.max_epochs": [1, 2]}
    assert two["changed"] == {"trainer.max_epochs": [1, 3], "logger.tensorboard": [None, {}]}  # absent before
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2  # three epochs ran
    assert (tmp_path / "tensorboard").is_dir()


def test_differences_name_each_changed_added_and_removed_key():
    old = {"a": {"b": 1, "c": [1, 2]}, "d": {}, "e": None}
    new = {"a": {"b": 1, "c": [1, 3]}, "d": {"x": 0}, "f": 2}
    assert differences(old, new) == {
        "a.c": ([1, 2], [1, 3]), "d": ({}, ABSENT), "d.x": (ABSENT, 0), "e": (None, ABSENT), "f": (ABSENT, 2),
    }  # fmt: skip
    assert differences(old, old) == {}
    assert "trainer.max_epochs" in MAY_CHANGE and "optim" not in MAY_CHANGE
