"""SIGTERM (a scheduler's notice) and Ctrl-C stop zoo-train with a resumable last.ckpt,
metrics.json saying so, a resume command, and exit status 128 + the signal's number."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zoo.callbacks import EpochLog
from zoo.cli.train import train

from tests.helpers import QUIET, compose_config

# 1,257 training images at the digits' batch of 256: 5 steps an epoch; step 7 is mid-epoch 2.
RUN = ["model=mlp", "sched=none", "trainer.max_epochs=2", *QUIET]
SIGNAL_AT = 7


def _signal_at(monkeypatch, signum: int, step: int = SIGNAL_AT) -> None:
    """Send ``signum`` to this process after optimizer step ``step``, as a scheduler would mid-batch."""

    def send(self, trainer, *args):
        if trainer.global_step == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(EpochLog, "on_train_batch_end", send, raising=False)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_records_it_and_exits_128_plus_its_number(tmp_path, monkeypatch, caplog, signum):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    _signal_at(monkeypatch, signum)
    with pytest.raises(SystemExit) as stopped:
        train(compose_config("train", tmp_path, RUN))
    assert stopped.value.code == 128 + signum
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert {k: record[k] for k in ("status", "signal", "step", "checkpoint")} == {
        "status": "interrupted", "signal": signal.Signals(signum).name, "step": SIGNAL_AT,
        "checkpoint": str(tmp_path / "checkpoints" / "last.ckpt"),
    }  # fmt: skip
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == SIGNAL_AT
    said = [r.getMessage() for r in caplog.records if "resume with" in r.getMessage()]
    assert said == [
        f"{signal.Signals(signum).name}: stopped at step {SIGNAL_AT}, saved in {tmp_path}/checkpoints/last.ckpt; "
        f"resume with: zoo-train {' '.join(RUN)} hydra.run.dir={tmp_path} resume=true"
    ]
    assert not (tmp_path / ".lock").exists()  # the folder is free for the resume
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers before the run are back


def test_the_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    train(compose_config("train", whole, RUN))
    with monkeypatch.context() as patch:
        _signal_at(patch, signal.SIGTERM)
        with pytest.raises(SystemExit):
            train(compose_config("train", interrupted, RUN))
    train(compose_config("train", interrupted, [*RUN, "resume=true"]))
    expected = _weights(whole)
    assert all(torch.equal(value, expected[key]) for key, value in _weights(interrupted).items())
    record = json.loads((interrupted / "metrics.json").read_text())
    assert record["status"] == "finished" and record["resumes"] == 1
    assert record["test"] == json.loads((whole / "metrics.json").read_text())["test"]


def test_sigterm_from_outside_the_process_exits_143(tmp_path):
    """The process boundary is the subject: a job scheduler sees 143, not 0, and the log
    holds every epoch that finished."""
    script = Path(sys.executable).parent / "zoo-train"
    process = subprocess.Popen(
        [str(script), "model=mlp", "sched=none", "trainer.max_epochs=200", *QUIET, f"hydra.run.dir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log = tmp_path / "train.log"
    deadline = time.monotonic() + 300
    while not (log.is_file() and "epoch 2/200" in log.read_text()) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    record = json.loads((tmp_path / "metrics.json").read_text())
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    step, progress = last["global_step"], last["loops"]["fit_loop"]["epoch_progress"]["current"]
    assert (record["status"], record["signal"], record["step"]) == ("interrupted", "SIGTERM", step)
    # 5 steps an epoch (1,257 images at 256): step // 5 epochs trained, the last of them still
    # validating if the signal came right after its last step. Every epoch the loop completed
    # is in the log, and no other; the one it was ending (processed, not completed) may be in
    # it or not, as the signal fell.
    assert step >= 10 and progress["processed"] in {step // 5, (step - 1) // 5}
    epochs = [int(line.split(" - epoch ")[1].split("/")[0]) for line in log.read_text().splitlines() if "[zoo][INFO] - epoch " in line]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) in {progress["completed"], progress["processed"]}, (
        step, progress,
    )  # fmt: skip
    assert f"hydra.run.dir={tmp_path} resume=true" in log.read_text()
