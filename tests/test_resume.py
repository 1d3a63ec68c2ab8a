"""A run killed with SIGKILL and resumed ends as an uninterrupted run: the same weights bit
for bit, the same rows in csv/metrics.csv, the same metrics.json; extending a finished run."""

import csv
import json
import subprocess
import sys
import time

import pytest
import torch

from zoo.cli.train import train

from tests.helpers import QUIET, compose_config, run_main

# Shuffling, dropout and augmentation all on; last.ckpt every 4 of the 20 steps per epoch.
# Metrics logged at every step, so the resume step itself holds a killed run's event: logged
# every 2nd step (odd steps only) a purge from the step after the checkpoint dropped the same.
RUN = [
    "model=mlp", "model.dropout=0.3", "data.max_shift=2", "data.batch_size=64", "trainer.max_epochs=2", "seed=5",
    "callbacks.checkpoint.every_n_train_steps=4", "trainer.log_every_n_steps=1", "logger=[csv,tensorboard]", *QUIET,
]  # fmt: skip

# zoo-train with one extra callback that SIGKILLs the process when step `k` is about to
# run, i.e. right after step k's checkpoint was written.
KILLED_RUN = """
import os, signal, sys
import lightning as L
from zoo.cli import build, launch

KILL_AT = int(sys.argv[1])

class Kill(L.Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)

build_callbacks = build.build_callbacks
build.build_callbacks = lambda *a, **k: build_callbacks(*a, **k) + [Kill()]
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


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's view of the run's scalars: ``{tag: [(step, value), ...]}``, read as
    TensorBoard reads them (events after a resume's ``purge_step`` in older files hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(compose_config("train", run_dir, RUN))
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True), run_dir


# Killed right after the checkpoint of step 8, between the checkpoints of steps 8 and 12
# (rows of steps 8 and 9 logged, then lost or dropped), and at the end of the first epoch.
@pytest.mark.parametrize("kill_at", [8, 10, 20], ids=["after-a-checkpoint", "between-checkpoints", "epoch-boundary"])
def test_killed_and_resumed_run_equals_the_uninterrupted_run(tmp_path, uninterrupted, kill_at):
    reference, reference_dir = uninterrupted
    args = [sys.executable, "-c", KILLED_RUN, str(kill_at), *RUN, f"hydra.run.dir={tmp_path}"]
    killed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr  # SIGKILL
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == kill_at // 4 * 4

    time.sleep(1.1)  # TensorBoard orders event files by name, which holds the second they were created
    train(compose_config("train", tmp_path, [*RUN, "resume=true"]))
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == reference["global_step"] == 40
    for key in ("state_dict", "optimizer_states"):
        ours, ref = _tensors(resumed[key]), _tensors(reference[key])
        assert len(ours) == len(ref) > 0
        assert all(torch.equal(a, b) for a, b in zip(ours, ref)), key
    assert resumed["lr_schedulers"] == reference["lr_schedulers"]
    # The history continues across the resume: every row, none twice, the same values.
    assert _rows(tmp_path) == _rows(reference_dir)
    assert _scalars(tmp_path) == _scalars(reference_dir)
    ours, ref = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path, reference_dir))
    assert (ours.pop("resumes"), ref.pop("resumes")) == (1, 0)
    for record in (ours, ref):
        del record["seconds"], record["checkpoint"]  # the time and the run folder differ
    assert ours == ref


def test_a_resumed_csv_keeps_the_rows_before_the_checkpoint_and_drops_the_rest(tmp_path):
    from zoo.loggers import ResumableCSVLogger

    (tmp_path / "csv").mkdir()
    rows = "".join(f"{s // 5},{s},{s / 10}\n" for s in range(10))
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,train/loss_step\n" + rows)
    logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="", resume_step=6)
    logger.log_metrics({"train/loss_step": 9.0, "val/acc": 0.5}, step=6)
    logger.save()
    kept = _rows(tmp_path)
    assert [r["step"] for r in kept] == ["0", "1", "2", "3", "4", "5", "6"]
    assert kept[5]["train/loss_step"] == "0.5" and kept[6]["val/acc"] == "0.5" and kept[0]["val/acc"] == ""
    fresh = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")  # a new run starts a new file
    fresh.log_metrics({"val/acc": 0.1}, step=0)
    fresh.save()
    assert [r["step"] for r in _rows(tmp_path)] == ["0"]


def test_a_finished_run_extends_with_a_step_schedule(tmp_path):
    run = ["model=mlp", "sched=step", "sched.step_size=1", "trainer.max_epochs=1", *QUIET]
    train(compose_config("train", tmp_path, run))
    train(compose_config("train", tmp_path, [*run, "trainer.max_epochs=2", "resume=true"]))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # the second epoch ran
    assert sorted({int(r["epoch"]) for r in _rows(tmp_path) if r["val/acc"]}) == [0, 1]  # both epochs validated
    assert json.loads((tmp_path / "metrics.json").read_text())["resumes"] == 1


def test_a_finished_one_cycle_run_cannot_stretch_and_says_so_in_one_line(tmp_path):
    run = ["model=mlp", "trainer.max_epochs=1", *QUIET]
    train(compose_config("train", tmp_path, run))
    before = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    result = run_main("zoo-train", *run, "trainer.max_epochs=2", "resume=true", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "sched=onecycle schedule was built for 5 optimizer steps and cannot stretch to 10" in line
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == before


def test_without_exact_resume_the_resumed_run_would_differ(tmp_path, uninterrupted, monkeypatch):
    """The test above can fail: without ExactResume the resumed run diverges."""
    from zoo.callbacks import ExactResume

    args = [sys.executable, "-c", KILLED_RUN, "8", *RUN, f"hydra.run.dir={tmp_path}"]
    assert subprocess.run(args, capture_output=True, timeout=300).returncode == -9
    monkeypatch.setattr(ExactResume, "on_load_checkpoint", lambda self, *args: None)
    train(compose_config("train", tmp_path, [*RUN, "resume=true"]))
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    ours, ref = _tensors(resumed["state_dict"]), _tensors(uninterrupted[0]["state_dict"])
    assert not all(torch.equal(a, b) for a, b in zip(ours, ref))
