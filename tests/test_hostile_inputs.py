"""Hostile and careless input through the real command lines, one table.

Each case runs a console script's entry point in this process (the process boundary is
tested where it is the subject: signals, file-size limits, tests/test_signals.py) and
must end with its exit code (1 unless said), one ``Error:`` line naming the cause, no
traceback, nothing executed from a file, the files of a finished run beside the case
untouched, and the files the case names (``untouched``) byte for byte as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from zoo.callbacks import EpochLog
from zoo.cli.train import train
from zoo import files
from zoo.files import RunLock, this_process

from tests.helpers import QUIET, compose_config, run_cli, run_main

SENTINEL = "zoo-hostile-code-ran"


@dataclass(frozen=True)
class Case:
    command: str
    args: tuple[str, ...]
    expected: str  # a part of the error line (of the output, for a case that must succeed or is stopped)
    setup: Callable[[Path, Path], None] | None = None  # (case folder, finished run folder)
    code: int = 1  # the exit status: 1 for an error, 0 for input that must now work
    untouched: tuple[str, ...] = ()  # folders or files ({case}, {run}) whose bytes must not change
    patch: Callable[[pytest.MonkeyPatch], None] | None = None  # e.g. a signal sent mid-training
    seconds: float | None = None  # a bound on the time (hangs)
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the command ({case} formatted)
    forbidden: tuple[str, ...] = ()  # text that must not appear in the output (terminal escapes)


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


_HELD: list[RunLock] = []  # locks a case holds while its command runs (released after it)


def _copy_run(name: str, drop: tuple[str, ...] = (), status: str | None = None) -> Callable[[Path, Path], None]:
    """A copy of the finished run as ``{case}/<name>``, less ``drop``, its metrics.json's status set."""

    def setup(case: Path, run: Path) -> None:
        shutil.copytree(run, case / name)
        for item in drop:
            target = case / name / item
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if status:
            record = json.loads((case / name / "metrics.json").read_text())
            (case / name / "metrics.json").write_text(json.dumps({**record, "status": status}))

    return setup


def _live_run(case: Path, run: Path) -> None:
    """A copy of the finished run that a live run (a lock this process holds) is writing."""
    _copy_run("live", status="interrupted")(case, run)
    _HELD.append(RunLock(case / "live").acquire())


def _sweep_with_a_job(case: Path, run: Path) -> None:
    shutil.copytree(run, case / "sweep" / "0")


def _restarted_container(case: Path, run: Path) -> None:
    """A lock left by a run before a container restart, naming the pid this process has now."""
    (case / "restarted").mkdir()
    owner = {**this_process(), "start": this_process()["start"] - 100}
    (case / "restarted" / ".lock").write_text(json.dumps(owner))


def _alias_bomb(case: Path, run: Path) -> None:
    """444 bytes of YAML whose aliases expand to 387 million values (nine levels of nine)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (case / "conf" / "extra").mkdir(parents=True)
    (case / "conf" / "extra" / "bomb.yaml").write_text("\n".join(lines) + "\n")  # +extra=bomb: over a minute, unguarded


def _sigterm_at_step(step: int) -> Callable[[pytest.MonkeyPatch], None]:
    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        def send(self, trainer, *args):
            if trainer.global_step == step:
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(EpochLog, "on_train_batch_end", send, raising=False)

    return patch


def _torchvision_file(case: Path, name: str, file: str) -> None:
    """Random weights in torchvision's format under its cache name (``TORCH_HOME={case}``)."""
    import torchvision

    path = case / "hub" / "checkpoints" / file
    path.parent.mkdir(parents=True)
    torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), path)


def _bomb(path: Path) -> None:
    """A 1x1 PNG whose header declares 100,000 x 100,000 pixels (under 100 bytes)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", 100_000, 100_000) + bytes(data[24:29])
    data[16:24] = header[4:12]
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))


def _looped_images(case: Path, run: Path) -> None:
    _images(case, ("cat", "dog"))
    os.symlink(".", case / "images" / "train" / "cat" / "again")  # a loop
    os.symlink("..", case / "images" / "train" / "dog" / "up")  # a loop through the parent: the walk grew exponentially
    os.symlink(".", case / "images" / "train" / "dog" / "same")


def _pairs(name: str, end: str = "\n", n: int = 40) -> Callable[[Path, Path], None]:
    def setup(case: Path, run: Path) -> None:
        (case / name).write_bytes("".join(f"ein {i} .\tone {i} .{end}" for i in range(n)).encode())

    return setup


def _store(make: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    """An ``mlflow.db`` made by ``make`` where ``paths.output_dir={case}/out`` puts the local store."""

    def setup(case: Path, run: Path) -> None:
        (case / "out").mkdir()
        make(case / "out" / "mlflow.db")

    return setup


def _other_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()


def _crafted_program(name: str = "model.pt2") -> Callable[[Path, Path], None]:
    """A torch.export program one of whose weights is a pickle that would create the sentinel."""

    def setup(case: Path, run: Path) -> None:
        from tests.test_safe_readers import poison_program

        from zoo.export import export_program

        export_program(torch.nn.Linear(4, 2), torch.randn(2, 4), case / "good.pt2")
        poison_program(case / "good.pt2", case / name, case / SENTINEL)

    return setup


def _edited(edit: Callable[[dict], None]) -> Callable[[Path, Path], dict]:
    def make(case: Path, run: Path) -> dict:
        ckpt = _finished_checkpoint(run)
        edit(ckpt)
        return ckpt

    return make


TRAIN = ("model=mlp", "trainer.max_epochs=1", *QUIET)
SHORT = (*TRAIN, "sched=none", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
FOLDER = ("data=imagefolder", "data.root={case}/images", "data.image_size=8", "data.num_workers=0")
GRU = ("model=seq2seq_gru", "model.hidden=16", "model.emb_dim=8", "trainer.max_epochs=1", "sched=none", *QUIET)
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
    # Run folders: nothing a user made is overwritten, and a refused run writes nothing.
    "a finished run's folder without resume": Case(
        "zoo-train", (*TRAIN, "hydra.run.dir={run}"), "run folder {run} holds a finished run; resume=true continues it",
    ),
    "a started run's folder (checkpoints, no metrics.json)": Case(
        "zoo-train", (*TRAIN, "hydra.run.dir={case}/started"), "run folder {case}/started holds a started run",
        _copy_run("started", drop=("metrics.json",)), untouched=("{case}/started",),
    ),
    "an interrupted run's folder without resume": Case(
        "zoo-train", (*TRAIN, "hydra.run.dir={case}/stopped"), "holds an interrupted run; resume=true continues it",
        _copy_run("stopped", status="interrupted"), untouched=("{case}/stopped",),
    ),
    "a live run's folder, even with resume=true (its .hydra/ untouched)": Case(
        "zoo-train", (*TRAIN, "resume=true", "hydra.run.dir={case}/live"), "run folder {case}/live is in use by another run (pid",
        _live_run, untouched=("{case}/live",),
    ),
    "resume and overwrite at once": Case(
        "zoo-train", (*TRAIN, "resume=true", "overwrite=true", "hydra.run.dir={run}"), "resume=true continues the run in the folder and overwrite=true replaces it: give one",
    ),
    "a sweep into a folder whose jobs ran": Case(
        "zoo-train", ("-m", *TRAIN, "seed=1,2", "hydra.sweep.dir={case}/sweep"), "sweep folder {case}/sweep holds a started sweep",
        _sweep_with_a_job, untouched=("{case}/sweep",),
    ),
    "a run folder that is a file": Case(
        "zoo-train", (*TRAIN, "hydra.run.dir={case}/afile"), "{case}/afile: File exists",
        lambda case, run: (case / "afile").write_text("mine\n"), untouched=("{case}/afile",),
    ),
    "a run folder under a file": Case(
        "zoo-train", (*TRAIN, "hydra.run.dir={case}/afile/run"), "{case}/afile/run: Not a directory",
        lambda case, run: (case / "afile").write_text("mine\n"), untouched=("{case}/afile",),
    ),
    "a lock of a restarted container naming our pid": Case(
        "zoo-train", (*SHORT, "hydra.run.dir={case}/restarted"), "run folder: {case}/restarted", _restarted_container, code=0,
    ),
    "SIGTERM mid-training": Case(
        "zoo-train", ("model=mlp", "sched=none", "trainer.max_epochs=2", *QUIET, "hydra.run.dir={case}/term"),
        "SIGTERM: stopped at step 3, saved in {case}/term/checkpoints/last.ckpt; resume with: zoo-train", patch=_sigterm_at_step(3), code=143,
    ),
    # Hydra's own errors and the config files a user brings.
    "an unknown config option": Case("zoo-train", ("model=resnet9000x",), "Could not find 'model/resnet9000x' Available options in 'model': alexnet, densenet121,"),
    "an override Hydra cannot parse": Case("zoo-train", (*TRAIN, "optim.lr=[1"), "no viable alternative at input '[1'"),
    "an override key of 300 characters": Case("zoo-train", (*TRAIN, "+" + "k" * 300 + "=1"), "File name too long"),
    "a YAML alias bomb in --config-dir": Case(
        "zoo-train", ("--config-dir", "{case}/conf", "+extra=bomb", *TRAIN), "{case}/conf/extra/bomb.yaml expands to over 100,000 values",
        _alias_bomb, seconds=20,
    ),
    "a config file that is not YAML in --config-dir": Case(
        "zoo-train", ("--config-dir={case}/conf", *TRAIN), "config file {case}/conf/broken.yaml is not valid YAML",
        lambda case, run: (case / "conf").mkdir() or (case / "conf" / "broken.yaml").write_text("a: [1\n"),
    ),
    "a log file Hydra cannot open (hydra.job.name with a folder)": Case(
        "zoo-train", (*TRAIN, "hydra.job.name=nope/x", "hydra.run.dir={case}/run"), "{case}/run/nope/x.log: No such file or directory",
    ),  # fails after the folder is claimed: the claim must still be released
    "trainer=gpu on a machine without one": Case("zoo-train", (*TRAIN, "trainer=gpu"), "needs a CUDA GPU, and torch finds none"),
    # Awkward data: refused before training in one line, or read as it should be.
    "an image over Pillow's pixel limit in a training folder": Case(
        "zoo-train", (*TRAIN, "sched=none", *FOLDER, "data.batch_size=4"),
        "image {case}/images/train/dog/bomb.png is 10,000,000,000 pixels, over the limit of 89,478,485",
        lambda case, run: _images(case, ("cat", "dog")) or _bomb(case / "images" / "train" / "dog" / "bomb.png"),
    ),
    "symbolic-link loops in an image folder": Case(
        "zoo-train", (*SHORT, *FOLDER, "data.batch_size=4"), "skipped 3 symbolic link loop(s)", _looped_images, code=0, seconds=90,
    ),
    "a final training batch of one (digits at batch 8)": Case(
        "zoo-train", (*TRAIN, "data.batch_size=8", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"), "run folder:", code=0,
    ),
    "a test fraction of 0 on a TSV": Case(
        "zoo-train", (*GRU, "data=parallel_tsv", "data.path={case}/pairs.tsv", "data.test_fraction=0"),
        "data.test_fraction=0 leaves the test split empty: the 40 pairs of {case}/pairs.tsv would split into train 38, val 2, test 0",
        _pairs("pairs.tsv"),
    ),
    "a TSV with CR-only line ends": Case(
        "zoo-train", (*GRU, "data=parallel_tsv", "data.path={case}/mac.tsv"), "run folder:", _pairs("mac.tsv", "\r"), code=0,
    ),
    "a validation fraction of 0 on the digits": Case(
        "zoo-train", (*TRAIN, "data.val_fraction=0"),
        "data.val_fraction=0 leaves the val split empty: the 1,797 images would split into train 1,437, val 0, test 360",
    ),
    "a validation fraction of 0 on an image folder": Case(
        "zoo-train", (*TRAIN, *FOLDER, "data.val_fraction=0"),
        "data.val_fraction=0 leaves the val split empty: the 8 training images would split into train 8, val 0",
        lambda case, run: _images(case, ("cat", "dog")),
    ),
    "a generated test split of size 0": Case(
        "zoo-train", (*GRU, "data=copy", "data.test_size=0"), "data.test_size=0 leaves the test split empty",
    ),
    # Experiment trackers: fail fast, in one line, leaving the store as it was.
    "an MLflow server that refuses connections": Case(
        "zoo-train", (*TRAIN, "logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9"),
        "logger=mlflow: cannot reach the tracking server http://127.0.0.1:9 (Connection refused)", seconds=60,
    ),
    "an MLflow URI of an unknown scheme": Case(
        "zoo-train", (*TRAIN, "logger=mlflow", "logger.mlflow.tracking_uri=foo://bar"), "logger=mlflow: tracking store foo://bar:",
    ),
    "a corrupt mlflow.db": Case(
        "zoo-train", (*TRAIN, "logger=mlflow", "paths.output_dir={case}/out"), "mlflow.db as an MLflow store (file is not a database)",
        _store(lambda db: db.write_bytes(random.Random(1).randbytes(4096))), untouched=("{case}/out",),
    ),
    "an mlflow.db of another program": Case(
        "zoo-train", (*TRAIN, "logger=mlflow", "paths.output_dir={case}/out", "resume=true"),
        "is an SQLite database but not an MLflow store (its tables: notes)", _store(_other_sqlite), untouched=("{case}/out",),
    ),
    "an mlflow.db that is a folder": Case(
        "zoo-train", (*TRAIN, "logger=mlflow", "paths.output_dir={case}/out"), "mlflow.db is a folder, not an MLflow store file",
        _store(lambda db: db.mkdir()),
    ),
    "W&B asked to be online with no server": Case(
        "zoo-train", (*TRAIN, "logger=wandb", "logger.wandb.offline=false"),
        "logger=wandb: cannot reach the W&B server http://127.0.0.1:9 (Connection refused); log offline",
        env=(("WANDB_API_KEY", "0" * 40), ("WANDB_BASE_URL", "http://127.0.0.1:9"), ("WANDB_CONFIG_DIR", "{case}/wbc")), seconds=60,
    ),
    "W&B log_model=all on an offline run": Case(
        "zoo-train", (*TRAIN, "logger=wandb", "logger.wandb.log_model=all"),
        "logger=wandb: log_model=all uploads checkpoints, which an offline run cannot", env=(("HOME", "{case}"),),
    ),
    "debug=fast on an image folder with every other setting the default": Case(
        "zoo-train", ("debug=fast", "data=imagefolder", "data.root={case}/images", "callbacks.progress_bar=none"),
        "run folder: {case}/run", code=0, setup=lambda case, run: _images(case, ("ants", "bees", "wasps")),
    ),
    "a debug flag that is not a boolean": Case(
        "zoo-train", ("debug=limit", *TRAIN, "sched.debug=yes"), "sched.debug must be true or false, got 'yes'",
    ),
    "W&B log_model=true on an offline run keeps the checkpoint for wandb sync": Case(
        "zoo-train", (*TRAIN, "logger=[csv,wandb]", "logger.wandb.log_model=true"), "run folder: {case}/run", code=0,
        env=(("HOME", "{case}"), ("WANDB_DATA_DIR", "{case}/wd")),
    ),
    "an MLflow artifact folder that is a file: one warning, the run kept": Case(
        "zoo-train", (*TRAIN, "logger=[csv,mlflow]", "paths.output_dir={case}/out"),
        "logger=mlflow: could not log config.yaml (Not a directory", code=0,
        setup=lambda case, run: ((case / "out").mkdir(), (case / "out" / "mlartifacts").write_text("x")),
    ),
    "an explicit image size beside torchvision weights is used, with one warning": Case(
        "zoo-train", ("model=resnet18", "finetune=freeze", "finetune.weights=ResNet18_Weights.IMAGENET1K_V1", "data.image_size=112",
                      "data.batch_size=2", *SHORT[1:], "trainer.precision=32-true"),
        "data.image_size=112 is used; the weights ResNet18_Weights.IMAGENET1K_V1 were trained at 224", code=0,
        setup=lambda case, run: _torchvision_file(case, "resnet18", "resnet18-f37072fd.pth"), env=(("TORCH_HOME", "{case}"),),
    ),
    # Exported programs and models are not checkpoints, and nothing in them runs.
    "zoo-predict of a crafted .pt2": Case(
        "zoo-predict", ("ckpt_path={case}/model.pt2", "inputs={run}/curves.png"),
        "is a torch.export program (.pt2), not a checkpoint or weights file", _crafted_program(),
    ),
    "zoo-eval of a crafted .pt2": Case(
        "zoo-eval", ("ckpt_path={case}/model.pt2",), "is a torch.export program (.pt2), not a checkpoint or weights file",
        _crafted_program(),
    ),
    "fine-tuning weights that are a crafted .pt2": Case(
        "zoo-train", (*TRAIN, "finetune=freeze", "finetune.weights={case}/model.pt2"),
        "is a torch.export program (.pt2), not a checkpoint or weights file", _crafted_program(),
    ),
    "a crafted .pt2 renamed .pth": Case(
        "zoo-predict", ("ckpt_path={case}/model.pth", "inputs={run}/curves.png"), "a zip archive without torch.save's data.pkl",
        _crafted_program("model.pth"),
    ),
    "zoo-predict of an ONNX file": Case(
        "zoo-predict", ("ckpt_path={case}/model.onnx", "inputs={run}/curves.png"),
        "is an ONNX model (.onnx), not a checkpoint or weights file", _write("model.onnx", lambda c, r: b"\x08\x07 onnx"),
    ),
    # Sizes are checked against the weights before anything is allocated.
    "hyperparameters that say image_size=3000": Case(
        "zoo-predict", (f"ckpt_path={CKPT}", "inputs={run}/curves.png"),
        "its weights do not fit the network its hyperparameters describe (net.features.1.0.weight is (256, 1024) in its weights, (256, 9000000)",
        _write("file.ckpt", _edited(lambda k: k["hyper_parameters"]["model"].update(image_size=3000))), seconds=30,
    ),
    "a data state that says image_size=3000": Case(
        "zoo-predict", (f"ckpt_path={CKPT}", "inputs={run}/curves.png"), "its data settings do not fit its network: MLP expects 32x32 images",
        _write("file.ckpt", _edited(lambda k: k["zoo_inputs"].update(image_size=3000))),
    ),
    "fine-tuning weights whose data state says image_size=3000": Case(
        "zoo-train", (*TRAIN, "finetune=freeze", f"finetune.weights={CKPT}"), "its network takes 32-pixel images but its data settings say 3000",
        _write("file.ckpt", _edited(lambda k: k["zoo_inputs"].update(image_size=3000))),
    ),
    # Outputs: refused before any work where they cannot be written; files from checkpoints printed safely.
    "zoo-export out= under a regular file": Case(
        "zoo-export", ("ckpt_path={run}/checkpoints/last.ckpt", "format=torch_export", "out={case}/file/m.pt2"),
        "cannot write {case}/file/m.pt2: {case}/file is a file, not a folder", lambda c, r: (c / "file").write_text("x"),
        untouched=("{case}/file",),
    ),
    "zoo-predict csv= a folder": Case(
        "zoo-predict", ("ckpt_path={run}/checkpoints/last.ckpt", "inputs={run}/curves.png", "csv={case}"),
        "cannot write {case}: it is a folder; give a file name",
    ),
    "zoo-predict device=cuda without a GPU": Case(
        "zoo-predict", ("ckpt_path={run}/checkpoints/last.ckpt", "inputs={run}/curves.png", "device=cuda"), "device=cuda needs a CUDA GPU",
    ),
    "class names holding terminal escape codes": Case(
        "zoo-predict", (f"ckpt_path={CKPT}", "inputs={run}/curves.png", "top_k=10"), "\\x1b[2J\\x1b[31mcat",
        _write("file.ckpt", _edited(lambda k: k["zoo_inputs"].update(class_names=["\x1b[2J\x1b[31mcat", *map(str, range(1, 10))]))),
        code=0, forbidden=("\x1b",),
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


def test_the_table_holds_at_least_60_cases():
    assert len(CASES) >= 60


def _untouched(case: Case, values: dict[str, Path]) -> dict[str, dict[str, str]]:
    paths = [Path(p.format(**values)) for p in ("{run}", *case.untouched)]
    return {str(p): _digest(p) if p.is_dir() else {p.name: hashlib.sha256(p.read_bytes()).hexdigest()} for p in paths}


@pytest.mark.parametrize("name", CASES)
def test_hostile_input_gets_one_line_and_its_exit_code(name, finished_run, seq2seq_checkpoint, tmp_path, monkeypatch):
    case = CASES[name]
    values = {"case": tmp_path, "run": finished_run, "seq": seq2seq_checkpoint}
    if case.setup:
        case.setup(tmp_path, finished_run)
    if case.patch:
        case.patch(monkeypatch)
    args = [a.format(**values) for a in case.args]
    if case.command in ("zoo-train", "zoo-eval") and not any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    before = _untouched(case, values)
    started = time.monotonic()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
        env.update({"HYDRA_FULL_ERROR": "0", **{k: v.format(**values) for k, v in case.env}})
        result = run_main(case.command, *args, env=env)
        seconds = time.monotonic() - started
        output = result.stdout + result.stderr
        assert result.returncode == case.code, output[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        if case.code == 1:
            assert len(errors) == 1, output[-3000:]
            assert case.expected.format(**values) in errors[0]
        else:
            assert not errors and case.expected.format(**values) in output, output[-3000:]
        assert "Traceback" not in output and "weights_only=False" not in output
        assert not any(text in output for text in case.forbidden)
        assert not (tmp_path / SENTINEL).exists()  # nothing in a file ran
        assert _untouched(case, values) == before
        assert case.seconds is None or seconds < case.seconds
        assert not files._held  # every folder the command claimed is released, however it ended
        if case.command == "zoo-train" and case.code == 1:  # a refused or failed run leaves no orphan folder
            assert not (tmp_path / "run").exists(), sorted(p.name for p in (tmp_path / "run").rglob("*"))
    finally:
        while _HELD:
            _HELD.pop().release()


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
