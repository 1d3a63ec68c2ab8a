"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""

import subprocess
import sys

import pytest
import torch

from zoo.cli.train import train

from helpers import QUIET, compose_config

# Shuffling, dropout and augmentation all on; last.ckpt every 4 of the 20 steps per epoch.
RUN = [
    "model=mlp", "model.dropout=0.3", "data.max_shift=2", "data.batch_size=64", "trainer.max_epochs=2", "seed=5",
    "callbacks.checkpoint.every_n_train_steps=4", "~logger", *QUIET,
]  # fmt: skip

# zoo-train with one extra callback that SIGKILLs the process when step `k` is about to
# run, i.e. right after step k's checkpoint was written.
KILLED_RUN = """
import os, signal, sys
import lightning as L
from zoo.cli import common, launch

KILL_AT = int(sys.argv[1])

class Kill(L.Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)

build_callbacks = common.build_callbacks
common.build_callbacks = lambda *a, **k: build_callbacks(*a, **k) + [Kill()]
sys.argv = ["zoo-train", *sys.argv[2:]]
launch.train()
"""


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for key in sorted(tree, key=str) for t in _tensors(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    return []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(compose_config("train", run_dir, RUN))
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.parametrize("kill_at", [8, 20], ids=["mid-epoch", "epoch-boundary"])
def test_killed_and_resumed_run_equals_the_uninterrupted_run(tmp_path, uninterrupted, kill_at):
    args = [sys.executable, "-c", KILLED_RUN, str(kill_at), *RUN, f"hydra.run.dir={tmp_path}"]
    killed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr  # SIGKILL
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == kill_at

    train(compose_config("train", tmp_path, [*RUN, "resume=true"]))
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == uninterrupted["global_step"] == 40
    for key in ("state_dict", "optimizer_states"):
        ours, ref = _tensors(resumed[key]), _tensors(uninterrupted[key])
        assert len(ours) == len(ref) > 0
        assert all(torch.equal(a, b) for a, b in zip(ours, ref)), key
    assert resumed["lr_schedulers"] == uninterrupted["lr_schedulers"]


def test_without_exact_resume_the_resumed_run_would_differ(tmp_path, uninterrupted, monkeypatch):
    """The test above can fail: without ExactResume the resumed run diverges."""
    from zoo.callbacks import ExactResume

    args = [sys.executable, "-c", KILLED_RUN, "8", *RUN, f"hydra.run.dir={tmp_path}"]
    assert subprocess.run(args, capture_output=True, timeout=300).returncode == -9
    monkeypatch.setattr(ExactResume, "on_load_checkpoint", lambda self, *args: None)
    train(compose_config("train", tmp_path, [*RUN, "resume=true"]))
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    ours, ref = _tensors(resumed["state_dict"]), _tensors(uninterrupted["state_dict"])
    assert not all(torch.equal(a, b) for a, b in zip(ours, ref))
