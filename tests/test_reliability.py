"""Fail fast on a non-finite loss without losing the last good checkpoint; determinism."""

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from zoo.callbacks import NonFiniteLossError
from zoo.checkpoint import load_lightning_checkpoint
from zoo.checkpoint_io import AtomicCheckpointIO
from zoo.cli.train import train
from zoo.data.digits import DigitsDataModule

from tests.helpers import QUIET, compose_config, run_main

FAST = ["model=mlp", "model.dropout=0.0", *QUIET]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_poisoned_batch_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, one_thread):
    train(compose_config("train", tmp_path, [*FAST, "sched=none", "trainer.max_epochs=1"]))
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = _digest(last)
    steps_per_epoch = torch.load(last, weights_only=True)["global_step"]

    def poison(self, batch, dataloader_idx):
        images, labels = batch
        return (images * float("nan") if self.trainer.training else images), labels

    monkeypatch.setattr(DigitsDataModule, "on_after_batch_transfer", poison)
    cfg = compose_config("train", tmp_path, [*FAST, "sched=none", "trainer.max_epochs=2", f"ckpt_path={last}"])
    with pytest.raises(NonFiniteLossError, match=rf"train/loss is nan at step {steps_per_epoch} \(epoch 1, batch 0\)"):
        train(cfg)
    assert _digest(last) == before  # nothing was saved after the bad step


def test_an_absurd_learning_rate_exits_1_naming_the_step(tmp_path):
    result = run_main(
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


def test_checkpoints_are_written_by_rename_so_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch, one_thread):
    """Checkpoints go to a temporary file beside last.ckpt, renamed into place; if that last
    step never happens (a kill, a full disk), last.ckpt is still the previous, complete file."""
    constant_lr = [*FAST, "sched=none"]  # a one-cycle schedule cannot be extended by an epoch
    train(compose_config("train", tmp_path, [*constant_lr, "trainer.max_epochs=1"]))
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = _digest(last)

    best = tmp_path / "checkpoints" / "best.ckpt"
    best_before = _digest(best)
    rename, renamed = os.replace, []

    def fail_checkpoints(source, destination, *args, **kwargs):
        # Only a checkpoint's rename fails: config.yaml and the log are renamed into place
        # too, earlier, and failing those would stop the run before any checkpoint is saved.
        if Path(destination).suffix != ".ckpt":
            return rename(source, destination, *args, **kwargs)
        renamed.append(Path(destination))
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", fail_checkpoints)
    cfg = compose_config("train", tmp_path, [*constant_lr, "trainer.max_epochs=2", f"ckpt_path={last}"])
    with pytest.raises(OSError, match="simulated crash"):
        train(cfg)
    assert len(renamed) == 1 and renamed[0].parent == last.parent  # the first checkpoint of epoch 2 was reached
    assert (_digest(last), _digest(best)) == (before, best_before)
    assert torch.load(last, weights_only=True)["global_step"] > 0
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary left


BAD_INPUT = {
    "dataset root that does not exist": (["data=mnist", "data.root=/nonexistent/zoo-data"], "/nonexistent/zoo-data/MNIST/raw"),
    "empty image folder": (["data=imagefolder", "data.root={tmp}/images", "data.image_size=32"], "no class folders in"),
    "batch larger than the data with drop_last": (
        ["model=mlp", "data.batch_size=5000", "data.drop_last=true"], "data.batch_size=5000 is larger than the 1257",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_data_input_exits_1_with_a_clear_message(tmp_path, case):
    overrides, expected = BAD_INPUT[case]
    (tmp_path / "images" / "train").mkdir(parents=True)
    result = run_main("zoo-train", *[o.format(tmp=tmp_path) for o in overrides], f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_eval_refuses_truncated_and_foreign_checkpoints(tmp_path):
    torch.save({"w": torch.randn(50, 50)}, tmp_path / "foreign.ckpt")
    (tmp_path / "truncated.ckpt").write_bytes((tmp_path / "foreign.ckpt").read_bytes()[:500])
    for name, expected in (("foreign.ckpt", "not a zoo training checkpoint"), ("truncated.ckpt", "truncated or corrupt")):
        result = run_main("zoo-eval", f"ckpt_path={tmp_path / name}", f"hydra.run.dir={tmp_path / 'eval'}")
        assert result.returncode == 1, name
        assert str(tmp_path / name) in result.stderr and expected in result.stderr
        assert "Traceback" not in result.stderr


def test_a_corrupt_image_in_a_folder_exits_1_naming_the_file(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "images" / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), color=(40 * i, 0, 0)).save(tmp_path / "images" / "train" / name / f"{i}.png")
    corrupt = tmp_path / "images" / "train" / "b" / "broken.png"
    corrupt.write_bytes(b"\x89PNG not really an image")
    result = run_main(
        "zoo-train", "model=mlp", "sched=none", "data=imagefolder", f"data.root={tmp_path / 'images'}", "data.image_size=8",
        "data.num_workers=0", "data.batch_size=8", "data.augment=false", "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}", *QUIET,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot read image {corrupt}" in result.stderr and "Traceback" not in result.stderr


def _other_filesystem_tmpdir(tmp_path) -> Path:
    """A TMPDIR on another filesystem than the run folder where the machine has one (a tmpfs
    at /dev/shm), so that a temporary file put there could only be copied, not renamed."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        return Path(tempfile.mkdtemp(prefix="zoo-test-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="zoo-test-", dir=tmp_path))


def test_killed_while_writing_last_ckpt_leaves_the_old_or_the_new_file(tmp_path):
    """zoo-train with TMPDIR on another filesystem, SIGKILLed while last.ckpt is being
    written, three times over, each time resuming in the same folder: every last.ckpt left
    loads, nothing is left in TMPDIR, and the next run clears the killed writer's leftovers."""
    tmpdir = _other_filesystem_tmpdir(tmp_path)
    run_dir = tmp_path / "run"
    script = Path(sys.executable).parent / "zoo-train"
    args = [
        str(script), "model=mlp", "model.hidden_sizes=[1024,1024]", "sched=none", "trainer.max_epochs=50",
        "callbacks.checkpoint.every_n_train_steps=1", "resume=true", f"hydra.run.dir={run_dir}", *QUIET,
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    checkpoints = run_dir / "checkpoints"
    steps = []
    try:
        for _ in range(3):
            process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            temporary = f".last.ckpt.{process.pid}.tmp"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and process.poll() is None:
                if checkpoints.is_dir() and {temporary, "last.ckpt"} <= set(os.listdir(checkpoints)):
                    break  # caught rewriting an existing last.ckpt
                time.sleep(0.0005)
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert process.returncode == -signal.SIGKILL, "the run ended before a checkpoint write was caught"
            steps.append(load_lightning_checkpoint(checkpoints / "last.ckpt")["global_step"] if (checkpoints / "last.ckpt").exists() else 0)
            assert list(tmpdir.iterdir()) == []
        assert steps == sorted(steps) and steps[-1] > 0  # each run resumed from the one before
        leftovers = [p.name for p in checkpoints.iterdir() if p.name.endswith(".tmp")]
        assert len(leftovers) <= 1  # only the last killed writer's: each run cleared the one before
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _save_forever(path: str, blobs: list[torch.Tensor]) -> None:
    """Write distinguishable checkpoints to ``path`` until killed. The tensors come from the
    parent: a forked child must not compute (torch's thread pool does not survive a fork)."""
    io = AtomicCheckpointIO()
    version = 0
    while True:
        version += 1
        io.save_checkpoint({"version": version, "blob": blobs[version % 2]}, path)


def test_atomic_checkpoint_io_survives_kills_at_random_moments(tmp_path):
    """Killed at 20 random moments while it rewrites a 8 MB checkpoint, the writer always
    leaves a file that loads completely, as the last finished version."""
    import multiprocessing

    path = tmp_path / "last.ckpt"
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    blobs = [torch.full((2_000_000,), float(parity)) for parity in (0, 1)]
    for _ in range(20):
        writer = context.Process(target=_save_forever, args=(str(path), blobs))
        writer.start()
        while not path.exists():
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        ckpt = torch.load(path, weights_only=True)
        assert torch.equal(ckpt["blob"], blobs[ckpt["version"] % 2])
        path.unlink()
        for leftover in tmp_path.glob(".last.ckpt.*.tmp"):
            leftover.unlink()
