"""The ``debug`` config group (configs/debug/): every option finishes on the default run and on a
small image folder, in-process; a schedule too long for a debug run gives way in one line, and
without ``debug=`` the same run is refused exactly as before."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.optim import lr_scheduler

from zoo.errors import ConfigError
from zoo.optim import build_scheduler

from tests.helpers import CONFIGS, QUIET, compose_config, run_main

OPTIONS = ["fast", "overfit", "limit", "profiler"]
FALLBACK = (
    "debug run: sched=onecycle needs at least 5 optimizer steps and this run has 3; "
    "training at a constant learning rate instead"
)
REFUSAL = (
    "scheduler 'onecycle': the one-cycle schedule (sched=onecycle, pct_start=0.25) needs at least 5 optimizer "
    "steps, this run has 3; train longer (trainer.max_epochs, trainer.max_steps, more data) or choose "
    "sched=cosine or sched=none"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """210 images of 3 classes in <root>/train (no val/ or test/: split from train), PNG and JPEG."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("ants", "bees", "wasps"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(70):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / c / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def _zoo_train(run: Path, *args: str) -> str:
    result = run_main("zoo-train", *args, "callbacks.progress_bar=none", f"hydra.run.dir={run}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return (run / "train.log").read_text()


def test_the_group_is_in_the_defaults_list_and_the_help():
    assert sorted(p.stem for p in (CONFIGS / "debug").glob("*.yaml")) == ["default", *sorted(OPTIONS)]
    help_text = run_main("zoo-train", "--help").stdout
    assert "debug: default, fast, limit, overfit, profiler" in help_text and "zoo-train debug=fast" in help_text


def test_each_option_sets_what_it_says_and_marks_the_schedule(tmp_path):
    plain = compose_config("train", tmp_path, [])
    assert "debug" not in plain.sched and not plain.trainer.fast_dev_run and plain.trainer.profiler is None
    expected = {
        "fast": {"fast_dev_run": True},
        "overfit": {"overfit_batches": 3, "max_epochs": 20},
        "limit": {"limit_train_batches": 3, "limit_val_batches": 2, "limit_test_batches": 2, "max_epochs": 3},
        "profiler": {"profiler": "simple", "max_epochs": 1},
    }
    for option, settings in expected.items():
        cfg = compose_config("train", tmp_path, [f"debug={option}", "sched=cosine"])
        assert {k: cfg.trainer[k] for k in settings} == settings, option
        assert cfg.sched.debug is True and cfg.sched.name == "cosine", option  # on whichever schedule is chosen


# The default run (LeNet-5 on digits), each option as it is: what Lightning and zoo-train write.
@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_finishes_on_the_default_run(tmp_path, option, one_thread, recwarn):
    extra = ["data.batch_size=32"] if option == "overfit" else []  # 20 epochs of 3 batches: smaller batches, as fast
    log = _zoo_train(tmp_path, f"debug={option}", *extra, "trainer.enable_model_summary=false")
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "finished" and 0 <= record["test"]["test/acc"] <= 1
    epochs = log.count("[zoo][INFO] - epoch ")
    assert "debug run:" not in log  # the digits give every option enough steps for the one-cycle schedule
    assert not [w for w in recwarn if "overfit" in str(w.message)]  # Lightning's note that it stops shuffling
    if option == "fast":  # Lightning writes no checkpoint and logs nowhere; metrics.json is still written
        assert epochs == 1 and not list(tmp_path.glob("checkpoints/*.ckpt")) and not (tmp_path / "csv").exists()
        assert record["checkpoint"] is None
        return
    step = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert (epochs, step) == {"overfit": (20, 60), "limit": (3, 9), "profiler": (1, 5)}[option]
    assert ("FIT Profiler Report" in log) == (option == "profiler")


# A folder of 210 images: 189 training images are 3 batches of 64 (data=imagefolder's batch size);
# data.image_size is left to be inferred: LeNet-5's architecture takes 32-pixel images only.
@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_finishes_on_a_210_image_folder(tmp_path, folder, option, one_thread):
    args = ["data=imagefolder", f"data.root={folder}", "data.num_workers=0"]
    extra = ["data.batch_size=16"] if option == "overfit" else []  # 20 epochs of 3 batches; as fast with fewer images
    log = _zoo_train(tmp_path, f"debug={option}", *args, *extra, *QUIET)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "finished"
    # One epoch of 3 steps is too short for the one-cycle schedule: a constant rate, said once.
    assert log.count(FALLBACK) == (option == "profiler")
    assert log.count("debug run:") == (option == "profiler")
    if option == "profiler":
        assert "lr 0.1, " in log  # optim.lr throughout (the one-cycle schedule would start at 0.1 / 25)


def test_without_debug_the_short_run_is_refused_exactly_as_before(tmp_path, folder):
    args = ["data=imagefolder", f"data.root={folder}", "data.num_workers=0", *QUIET]
    result = run_main("zoo-train", "trainer.max_epochs=1", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [f"Error: {REFUSAL}"]


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)


def test_the_schedule_falls_back_only_when_debug_and_only_when_too_short(caplog):
    onecycle = {"name": "onecycle", "pct_start": 0.25}
    with caplog.at_level(logging.INFO, logger="zoo"):
        assert build_scheduler(_optimizer(), total_steps=3, steps_per_epoch=3, debug=True, **onecycle) is None
    assert [r.getMessage() for r in caplog.records] == [FALLBACK]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zoo"):
        built = build_scheduler(_optimizer(), total_steps=5, steps_per_epoch=5, debug=True, **onecycle)  # just enough
    assert isinstance(built["scheduler"], lr_scheduler.OneCycleLR) and not caplog.records
    with pytest.raises(ConfigError) as err:
        build_scheduler(_optimizer(), total_steps=3, steps_per_epoch=3, **onecycle)
    assert str(err.value) == REFUSAL
    with pytest.raises(ConfigError, match="needs at least 5 optimizer steps, this run has 4"):
        build_scheduler(_optimizer(), total_steps=4, steps_per_epoch=4, debug=False, **onecycle)
    with pytest.raises(ConfigError, match="sched.debug must be true or false, got 'yes'"):
        build_scheduler(_optimizer(), total_steps=3, steps_per_epoch=3, debug="yes", **onecycle)
