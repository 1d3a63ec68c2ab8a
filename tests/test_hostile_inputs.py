"""Hostile and careless input through the real command lines, one table.

Each case runs a console script in a fresh process, as a user would, and must end with
exit code 1, one ``Error:`` line naming the cause, no traceback, nothing executed from a
file, and the files of another run (a finished run beside the case) untouched.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from zoo.cli.train import train

from helpers import QUIET, compose_config, run_cli

SENTINEL = "zoo-hostile-code-ran"


@dataclass(frozen=True)
class Case:
    command: str
    args: tuple[str, ...]
    expected: str  # a part of the error line
    setup: Callable[[Path, Path], None] | None = None  # (case folder, finished run folder)


class Evil:
    """A pickle that would create a file if it were ever unpickled without restriction."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def _finished_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def _write(name: str, make: Callable[[Path, Path], object]) -> Callable[[Path, Path], None]:
    def setup(case: Path, run: Path) -> None:
        content = make(case, run)
        if isinstance(content, bytes):
            (case / name).write_bytes(content)
        elif content is not None:
            torch.save(content, case / name)

    return setup


def _images(case: Path, classes: tuple[str, ...], corrupt: bool = False) -> None:
    for split in ("train", "test"):
        for c in classes:
            (case / "images" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), color=(60 * i, 30, 0)).save(case / "images" / split / c / f"{i}.png")
    if corrupt:
        (case / "images" / "train" / classes[-1] / "broken.png").write_bytes(b"\x89PNG not an image")


def _with_import_target(case: Path, run: Path) -> dict:
    ckpt = _finished_checkpoint(run)
    ckpt["hyper_parameters"]["_target_"] = "os.system"
    return ckpt


def _resume_folder_with_garbage(case: Path, run: Path) -> None:
    (case / "resumed" / "checkpoints").mkdir(parents=True)
    (case / "resumed" / "checkpoints" / "last.ckpt").write_bytes(random.Random(0).randbytes(4096))


def _held_folder(case: Path, run: Path) -> None:
    (case / "held").mkdir()
    (case / "held" / ".lock").write_text(f"{os.getpid()}\n")  # this test process: alive


TRAIN = ("model=mlp", "trainer.max_epochs=1", *QUIET)
CKPT = "{case}/file.ckpt"

CASES: dict[str, Case] = {
    # Resuming goes through zoo.checkpoint before Lightning sees the file.
    "resume from a truncated checkpoint": Case(
        "zoo-train", (*TRAIN, f"ckpt_path={CKPT}"), "is not a readable checkpoint (truncated or corrupt?)",
        _write("file.ckpt", lambda case, run: (run / "checkpoints" / "last.ckpt").read_bytes()[:3000]),
    ),
    "resume from an empty file": Case(
        "zoo-train", (*TRAIN, f"ckpt_path={CKPT}"), "is empty (0 bytes)", _write("file.ckpt", lambda c, r: b""),
    ),
    "resume from random bytes": Case(
        "zoo-train", (*TRAIN, f"ckpt_path={CKPT}"), "is not a readable checkpoint",
        _write("file.ckpt", lambda c, r: random.Random(0).randbytes(5000)),
    ),
    "resume from a folder": Case(
        "zoo-train", (*TRAIN, "ckpt_path={case}/folder.ckpt"), "is a folder, not a checkpoint file",
        lambda case, run: (case / "folder.ckpt").mkdir(),
    ),
    "resume from a missing file": Case("zoo-train", (*TRAIN, "ckpt_path={case}/nothing.ckpt"), "checkpoint not found"),
    "resume from a malicious pickle": Case(
        "zoo-train", (*TRAIN, f"ckpt_path={CKPT}"), "names posix.system, which only code could build",
        _write("file.ckpt", lambda case, run: {"state_dict": {}, "hyper_parameters": Evil(case / SENTINEL)}),
    ),
    "resume from a checkpoint naming an import target": Case(
        "zoo-train", (*TRAIN, f"ckpt_path={CKPT}"), "names import targets in its hyperparameters (hyper_parameters._target_)",
        _write("file.ckpt", _with_import_target),
    ),
    "resume another architecture's checkpoint": Case(
        "zoo-train", ("model=lenet5", "trainer.max_epochs=1", *QUIET, "ckpt_path={run}/checkpoints/last.ckpt"),
        "was saved from mlp and does not fit this run's model",
    ),
    "resume from weights without a training state": Case(
        "zoo-train", (*TRAIN, f"ckpt_path={CKPT}"), "holds weights but not a training run's state",
        _write("file.ckpt", lambda case, run: {
            k: v for k, v in _finished_checkpoint(run).items() if k in ("state_dict", "hyper_parameters")
        }),
    ),
    "resume=true over a corrupt last.ckpt": Case(
        "zoo-train", (*TRAIN, "resume=true", "hydra.run.dir={case}/resumed"), "is not a readable checkpoint",
        _resume_folder_with_garbage,
    ),
    # Values that cannot train.
    "zero batch size": Case("zoo-train", (*TRAIN, "data.batch_size=0"), "data.batch_size must be an integer >= 1, got 0"),
    "negative batch size": Case("zoo-train", (*TRAIN, "data.batch_size=-4"), "data.batch_size must be an integer >= 1, got -4"),
    "negative epochs": Case("zoo-train", ("model=mlp", "trainer.max_epochs=-3"), "trainer.max_epochs must be an integer >= 1"),
    "zero epochs": Case("zoo-train", ("model=mlp", "trainer.max_epochs=0"), "trainer.max_epochs=0 trains nothing"),
    "zero steps": Case("zoo-train", (*TRAIN, "trainer.max_steps=0"), "trainer.max_steps=0 trains nothing"),
    "one-cycle schedule shorter than its phases": Case(
        "zoo-train", (*TRAIN, "trainer.max_steps=4"), "needs at least 5 optimizer steps, this run has 4",
    ),
    "learning rate that is not a number": Case("zoo-train", (*TRAIN, "optim.lr=abc"), "optim.lr must be a number, got 'abc'"),
    "schedule option of the wrong kind": Case(
        "zoo-train", (*TRAIN, "sched.pct_start=[1]"), "sched.pct_start must be a number, got [1]",
    ),
    "negative seed": Case("zoo-train", (*TRAIN, "seed=-1"), "seed must be an integer from 0 to 2**32 - 1"),
    "unknown model": Case("zoo-train", ("model.name=resnet9000", "trainer.max_epochs=1"), "Unknown model 'resnet9000'"),
    "unknown model argument": Case("zoo-train", (*TRAIN, "model.widht=3"), "widht"),
    "unknown test_weights": Case("zoo-train", (*TRAIN, "test_weights=middle"), "test_weights must be last or best"),
    # Data that cannot train.
    "image folder with one class": Case(
        "zoo-train", (*TRAIN, "data=imagefolder", "data.root={case}/images", "data.image_size=8", "data.num_workers=0"),
        "has 1 class folder (cat); classification needs at least 2",
        lambda case, run: _images(case, ("cat",)),
    ),
    "corrupt image read by two workers": Case(
        "zoo-train",
        (*TRAIN, "sched=none", "data=imagefolder", "data.root={case}/images", "data.image_size=8",
         "data.num_workers=2", "data.batch_size=4", "data.augment=false"),
        "cannot read image {case}/images/train/dog/broken.png",
        lambda case, run: _images(case, ("cat", "dog"), corrupt=True),
    ),  # fmt: skip
    "dataset root that does not exist": Case(
        "zoo-train", (*TRAIN, "data=imagefolder", "data.root={case}/none", "data.image_size=8"), "image folder not found",
    ),
    # A folder that another live run holds.
    "run folder held by a live run": Case(
        "zoo-train", (*TRAIN, "hydra.run.dir={case}/held"), "is in use by another run (pid", _held_folder,
    ),
    # The other commands: mandatory arguments and the same door for every file.
    "zoo-predict without arguments": Case("zoo-predict", (), "ckpt_path is required"),
    "zoo-translate without arguments": Case("zoo-translate", (), "ckpt_path and text are required"),
    "zoo-export without arguments": Case("zoo-export", (), "ckpt_path is required"),
    "zoo-eval of a malicious pickle": Case(
        "zoo-eval", (f"ckpt_path={CKPT}",), "names posix.system",
        _write("file.ckpt", lambda case, run: {"state_dict": {}, "hyper_parameters": Evil(case / SENTINEL)}),
    ),
    "zoo-predict of a truncated checkpoint": Case(
        "zoo-predict", (f"ckpt_path={CKPT}", "inputs={run}/curves.png"), "is not a readable checkpoint",
        _write("file.ckpt", lambda case, run: (run / "checkpoints" / "last.ckpt").read_bytes()[:3000]),
    ),
    "zoo-export of a file that is not a checkpoint": Case(
        "zoo-export", ("ckpt_path={run}/metrics.json",), "is not a readable checkpoint",
    ),
    # Unbounded input: refused before decoding, whatever the shell made of it.
    "zoo-translate of a 10,000-character line": Case(
        "zoo-translate", ("ckpt_path={seq}", "text=" + "a" * 10_000), "10001 tokens long (with <eos>), over the limit",
    ),
    "zoo-translate of 10,000 unquoted digits": Case(
        "zoo-translate", ("ckpt_path={seq}", "text=" + "7" * 10_000), "10001 tokens long (with <eos>), over the limit",
    ),
    "zoo-predict of a 10,000-character line": Case(
        "zoo-predict", ("ckpt_path={seq}", "text=" + "b" * 10_000), "10001 tokens long (with <eos>), over the limit",
    ),
    "fine-tuning weights that are a malicious pickle": Case(
        "zoo-train", (*TRAIN, "finetune=freeze", "finetune.weights={case}/weights.pt"), "names posix.system",
        _write("weights.pt", lambda case, run: {"fc.weight": Evil(case / SENTINEL)}),
    ),
}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished training run that no case may touch (and whose files some cases damage copies of)."""
    run = tmp_path_factory.mktemp("finished")
    train(compose_config("train", run, [*TRAIN, "sched=none"]))  # in-process: the cases are the subject
    return run


@pytest.fixture(scope="module")
def seq2seq_checkpoint(tmp_path_factory) -> Path:
    """A barely trained sequence-to-sequence checkpoint, for the commands that decode text."""
    run = tmp_path_factory.mktemp("seq2seq")
    train(compose_config("train", run, [
        "model=seq2seq_gru", "data=reverse", "sched=none", "data.train_size=32", "data.val_size=8",
        "data.test_size=8", "model.hidden=16", "model.emb_dim=8", "trainer.max_epochs=1", *QUIET,
    ]))  # fmt: skip
    return run / "checkpoints" / "last.ckpt"


def test_the_table_holds_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", CASES)
def test_hostile_input_gets_one_line_and_exit_1(name, finished_run, seq2seq_checkpoint, tmp_path):
    case = CASES[name]
    if case.setup:
        case.setup(tmp_path, finished_run)
    args = [a.format(case=tmp_path, run=finished_run, seq=seq2seq_checkpoint) for a in case.args]
    if case.command in ("zoo-train", "zoo-eval") and not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    before = _digest(finished_run)
    result = run_cli(case.command, *args, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert case.expected.format(case=tmp_path, run=finished_run) in errors[0]
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    assert not (tmp_path / SENTINEL).exists()  # nothing in a file ran
    assert _digest(finished_run) == before


def test_the_traceback_is_there_when_asked_for(tmp_path):
    result = run_cli("zoo-train", *TRAIN, "data.batch_size=0", f"hydra.run.dir={tmp_path}", env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "data.batch_size must be an integer >= 1" in result.stderr


def test_two_runs_started_together_write_separate_folders(tmp_path):
    """The default run folder is unique to the microsecond: two runs started at once both
    finish, each in its own folder with its own config and metrics."""
    import subprocess
    import sys

    script = Path(sys.executable).parent / "zoo-train"
    args = [str(script), *TRAIN, "sched=none", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    processes = [subprocess.Popen([*args, f"seed={seed}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-1500:] for _, err in outputs]
    folders = sorted(p.parent for p in (tmp_path / "outputs").rglob("metrics.json"))
    assert len(folders) == 2
    seeds = sorted(int(line.split(":")[1]) for f in folders for line in (f / "config.yaml").read_text().splitlines() if line.startswith("seed:"))
    assert seeds == [1, 2]
    assert all((f / "checkpoints" / "last.ckpt").is_file() and not (f / ".lock").exists() for f in folders)
    shutil.rmtree(tmp_path / "outputs")
