"""Fail fast on a non-finite loss without losing the last good checkpoint; determinism."""

import hashlib

import pytest
import torch

from zoo.callbacks import NonFiniteLossError
from zoo.cli.train import train
from zoo.data.digits import DigitsDataModule

from helpers import QUIET, compose_config, run_cli

FAST = ["model=mlp", "model.dropout=0.0", *QUIET]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_poisoned_batch_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, one_thread):
    train(compose_config("train", tmp_path, [*FAST, "trainer.max_epochs=1"]))
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = _digest(last)
    steps_per_epoch = torch.load(last, weights_only=True)["global_step"]

    def poison(self, batch, dataloader_idx):
        images, labels = batch
        return (images * float("nan") if self.trainer.training else images), labels

    monkeypatch.setattr(DigitsDataModule, "on_after_batch_transfer", poison)
    cfg = compose_config("train", tmp_path, [*FAST, "trainer.max_epochs=2", f"ckpt_path={last}"])
    with pytest.raises(NonFiniteLossError, match=rf"train/loss is nan at step {steps_per_epoch} \(epoch 1, batch 0\)"):
        train(cfg)
    assert _digest(last) == before  # nothing was saved after the bad step


def test_an_absurd_learning_rate_exits_1_naming_the_step(tmp_path):
    result = run_cli(
        "zoo-train", *FAST, "optim=sgd", "optim.lr=1e30", "optim.momentum=0", "optim.nesterov=false", "sched=none",
        "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 1
    assert "train/loss is" in result.stderr and "at step" in result.stderr
    assert "Traceback" not in result.stderr


def _weights_after_training(tmp_path, seed: int) -> dict[str, torch.Tensor]:
    overrides = ["model=mlp", "model.dropout=0.5", "trainer.max_epochs=2", "trainer.deterministic=true", f"seed={seed}", *QUIET]
    train(compose_config("train", tmp_path, overrides))
    return torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not(tmp_path, one_thread):
    first = _weights_after_training(tmp_path / "a", seed=7)
    second = _weights_after_training(tmp_path / "b", seed=7)
    other = _weights_after_training(tmp_path / "c", seed=8)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
