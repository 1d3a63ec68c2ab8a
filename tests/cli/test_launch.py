"""zoo-train, zoo-eval and zoo-models through the real configs."""

import csv
import json
import os
import re

import pytest
import torch
import yaml

import zoo
from zoo.errors import ConfigError
from zoo.cli.train import train
from zoo.cli.models import model_rows
from zoo.models import MODELS, ImageModel
from zoo.models.factory import build_on_meta

from tests.helpers import CONFIGS, QUIET, accepts, compose_config, model_fingerprint, run_cli, run_main

MODEL_CONFIGS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


def test_every_model_config_names_a_registered_model_and_vice_versa():
    names = {yaml.safe_load((CONFIGS / "model" / f"{m}.yaml").read_text())["name"] for m in MODEL_CONFIGS}
    assert names == set(MODEL_CONFIGS)
    assert set(zoo.list_models()) == names


def test_model_config_holds_only_what_differs_from_the_constructor(model_name):
    """Each key of configs/model/<name>.yaml changes the model it builds (null keys are
    taken from the data); dropping it would build something else."""
    model = model_name
    options = yaml.safe_load((CONFIGS / "model" / f"{model}.yaml").read_text())
    set_here = {k: v for k, v in options.items() if k != "name" and v is not None}
    built = model_fingerprint(build_on_meta(MODELS.get(model), **set_here))
    for key in set_here:
        without = {k: v for k, v in set_here.items() if k != key}
        assert model_fingerprint(build_on_meta(MODELS.get(model), **without)) != built, f"{key} repeats the default"


def test_any_constructor_argument_is_an_override_and_an_unknown_one_is_one_line(tmp_path):
    cfg = compose_config("train", tmp_path, ["model=resnet18", "model.zero_init_residual=true"])
    assert cfg.model.zero_init_residual is True  # not in configs/model/resnet18.yaml
    result = run_cli("zoo-train", "model.no_such_option=1", "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path}", *QUIET)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no_such_option" in result.stderr and len(result.stderr.strip().splitlines()) == 1


SEQ2SEQ_TEST_METRICS = {"test/acc", "test/bleu", "test/exact_match", "test/loss"}


def test_fast_dev_run_for_each_model_family(tmp_path, family_model):
    """Image models on the bundled digits, sequence models on the reversal task; the smallest
    variant of each family (every config builds in the test above)."""
    model = family_model
    data = "digits" if isinstance(build_on_meta(MODELS.get(model)), ImageModel) else "reverse"
    overrides = [f"model={model}", f"data={data}", "trainer.fast_dev_run=true", "data.batch_size=4", *QUIET]
    if accepts(model, "small_input"):  # 32 px digits through an ImageNet stem
        overrides.append("model.small_input=true")
    cfg = compose_config("train", tmp_path, overrides)
    accuracy = train(cfg)
    assert 0.0 <= accuracy <= 1.0
    record = json.loads((tmp_path / "metrics.json").read_text())
    metrics = {"test/acc", "test/acc_top5", "test/loss"} if data == "digits" else SEQ2SEQ_TEST_METRICS
    assert record["model"] == model and set(record["test"]) == metrics  # exactly: none missing, none stale


def test_multirun_sweeps_write_one_folder_per_job(tmp_path):
    result = run_cli(
        "zoo-train", "-m", "optim=sgd,adamw", "model=mlp", "trainer.fast_dev_run=true",
        f"hydra.sweep.dir={tmp_path}", *QUIET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads((tmp_path / job / "metrics.json").read_text()) for job in ("0", "1")]
    assert "adamw" in (tmp_path / "1" / "config.yaml").read_text()
    # The sweep's table: one row per job, read from the job's own files, the best marked.
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["overrides"], r["status"]) for r in rows] == [
        ("0", "optim=sgd", "done"),
        ("1", "optim=adamw", "done"),
    ]
    for row, record in zip(rows, records):
        assert float(row["test/acc"]) == pytest.approx(record["test"]["test/acc"])
        assert float(row["best_val"]) == pytest.approx(record["best_val"]["score"]) and row["monitor"] == "val/acc"
    best = max(range(2), key=lambda i: records[i]["best_val"]["score"])
    assert [r["best"] for r in rows] == ["*" if i == best else "" for i in range(2)]
    assert "| * |" in (tmp_path / "summary.md").read_text()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train")
    result = run_main("zoo-train", "trainer.max_epochs=3", f"hydra.run.dir={run_dir}", *QUIET)
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_short_training_run_learns_and_writes_the_run_folder(trained_run):
    run_dir, result = trained_run
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["test"]["test/acc"] > 0.8  # chance is 0.1
    assert record["epochs"] == 3 and record["model"] == "lenet5" and record["data"] == "digits"
    for path in ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "csv/metrics.csv", "curves.png"):
        assert (run_dir / path).is_file(), path
    assert "test/acc" in result.stdout  # the final metrics table


def test_eval_reproduces_the_training_runs_test_metrics(trained_run, tmp_path):
    run_dir, _ = trained_run
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["test_weights"] == "last" and record["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    result = run_main("zoo-eval", f"ckpt_path={record['checkpoint']}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    trained = record["test"]
    evaluated = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert evaluated.keys() == trained.keys()
    for key in trained:
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key


def test_test_weights_chooses_the_checkpoint_the_test_split_measures(tmp_path):
    """``last`` tests the weights training ended with, ``best`` the best validation score's:
    with a learning rate so large that training diverges after its first epochs, the two differ."""
    overrides = ["trainer.max_epochs=4", "sched=none", "optim.lr=5", "callbacks.stop_on_nonfinite_loss=false", *QUIET]
    results = {}
    for weights in ("last", "best"):
        run_dir = tmp_path / weights
        train(compose_config("train", run_dir, [*overrides, f"test_weights={weights}"]))
        record = json.loads((run_dir / "metrics.json").read_text())
        assert record["test_weights"] == weights
        assert record["checkpoint"] == str(run_dir / "checkpoints" / f"{weights}.ckpt")
        results[weights] = record["test"]["test/acc"]
    assert results["best"] != results["last"], results


def test_the_paths_group_moves_data_and_run_folders_in_one_place():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        overrides = ["paths.data_dir=/datasets", "paths.output_dir=/runs", "paths.multirun_dir=/sweeps"]
        for data in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
            cfg = compose("train", overrides=[f"data={data}", *overrides], return_hydra_config=True)
            assert cfg.data.root == "/datasets", data
        assert cfg.hydra.run.dir.startswith("/runs/") and cfg.hydra.sweep.dir.startswith("/sweeps/")
        assert compose("eval", overrides=overrides, return_hydra_config=True).hydra.run.dir.startswith("/runs/eval/")
        default = compose("train", overrides=["data=mnist"], return_hydra_config=True)
        assert default.data.root == "data" and default.hydra.run.dir.startswith("outputs/")


BAD_INPUT = {
    "unknown model config": (["model=resnt"], "Could not find 'model/resnt'", "lenet5"),
    "unknown model name": (["model.name=lenet"], "Unknown model 'lenet'. Did you mean: lenet5", "mlp"),
    "unknown dataset": (["data.name=digitz"], "Unknown dataset 'digitz'", "cifar10"),
    "unknown optimizer": (["optim.name=adamm"], "Unknown optimizer 'adamm'", "rmsprop"),
    "unknown scheduler": (["sched.name=cosin"], "Unknown scheduler 'cosin'", "onecycle"),
    "unknown fine-tune config": (["finetune=freez"], "Could not find 'finetune/freez'", "partial"),
    "unknown fine-tune mode": (["finetune.mode=freez"], "finetune.mode must be one of", "gradual"),
    "wrong type": (["trainer.max_epochs=ten"], "max_epochs", "ten"),
    "unknown key": (["trainer.max_epoch=3"], "max_epoch", "not in"),
    "num_classes mismatch": (["model.num_classes=5"], "model.num_classes=5 but the data 'digits' has num_classes=10", ""),
    "image size mismatch": (["model=mlp", "model.image_size=16"], "image_size=16", "image_size=32"),
    "image the model cannot take": (["data.image_size=28"], "expects 32x32 images", "set data.image_size"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_exits_1_with_a_clear_message(tmp_path, case):
    overrides, *expected = BAD_INPUT[case]
    result = run_main("zoo-train", *overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()  # refused before training


def test_full_error_shows_the_traceback(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = run_cli("zoo-train", "model.name=lenet", f"hydra.run.dir={tmp_path}", env=env)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_eval_of_a_missing_checkpoint_names_the_path(tmp_path):
    result = run_main("zoo-eval", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1 and str(tmp_path / "nope.ckpt") in result.stderr


def test_zoo_models_lists_parameters_and_macs(capsys):
    """LeNet-5 as built by default (1x32x32 input, Table I's partial C3 table, 10 classes),
    counted by hand: C1 6*28*28*25, C3 16*10*10*6*25 (the partial table is a masked full
    convolution, so all 150 inputs per map are multiplied), C5 120*400, F6 120*84, out 84*10;
    parameters: C1 156, C3 1,516 (60 connections of 25 weights + 16 biases), C5 48,120,
    F6 10,164, out 850."""
    macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 120 * 84 + 84 * 10
    params = 156 + (60 * 25 + 16) + 48120 + 10164 + 850
    rows = {name: (p, m) for name, p, m, _ in model_rows("lenet5")}
    assert rows == {"lenet5": (params, macs)} == {"lenet5": (60806, 416520)}
    result = run_main("zoo-models", "mlp")
    assert result.returncode == 0 and "mlp" in result.stdout and "lenet5" not in result.stdout


def test_checkpoints_load_with_weights_only_and_hold_plain_hyperparameters(trained_run):
    run_dir, _ = trained_run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["name"] == "lenet5"
    assert ckpt["datamodule_hyper_parameters"]["name"] == "digits"


def test_tensorboard_logger_and_early_stopping(tmp_path):
    cfg = compose_config(
        "train", tmp_path,
        ["model=mlp", "logger=[csv,tensorboard]", "callbacks=early_stopping", "callbacks.early_stopping.patience=1",
         "trainer.max_epochs=30", "optim.lr=1e-9", *QUIET],
    )  # fmt: skip
    train(cfg)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "curves.png").is_file()
    # With a learning rate of 1e-9 nothing improves: early stopping ends the run early.
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] < 30


def test_a_task_the_data_does_not_serve_is_refused(tmp_path):
    cfg = compose_config("train", tmp_path, ["task.name=seq2seq", *QUIET])
    with pytest.raises(ConfigError, match="data 'digits' is for the classification task, but task=seq2seq"):
        train(cfg)


# Runs a command's entry point with the given arguments in a fresh interpreter and reports
# which heavy libraries it imported.
_IMPORTS_PROBE = """
import json, sys
from importlib.metadata import entry_points
(entry,) = entry_points(group="console_scripts", name=sys.argv[1])
sys.argv = sys.argv[1:]
try:
    entry.load()()
except SystemExit:
    pass
print(json.dumps({m: m in sys.modules for m in ("torch", "lightning")}))
"""


@pytest.mark.parametrize("command", ["zoo-train", "zoo-eval", "zoo-predict", "zoo-translate", "zoo-export"])
def test_help_is_the_projects_page_and_imports_neither_torch_nor_lightning(command):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _IMPORTS_PROBE, command, "--help"], capture_output=True, text=True, timeout=120)
    page, imported = result.stdout.rsplit("\n", 2)[0], json.loads(result.stdout.rsplit("\n", 2)[1])
    assert imported == {"torch": False, "lightning": False}
    assert page.startswith(f"{command}: ") and "== Examples ==" in page and "Documentation: docs/" in page
    assert "powered by Hydra" not in page
    examples = page.split("== Examples ==")[1].split("== More ==")[0].strip().splitlines()
    assert len(examples) >= 5 and all(line.startswith(command) for line in examples)
    if command == "zoo-train":  # the groups and their choices, read from configs/
        assert "model: alexnet, densenet121" in page and "optim: adam, adam_ref" in page


def test_zoo_models_imports_no_lightning():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _IMPORTS_PROBE, "zoo-models", "lenet5"], capture_output=True, text=True, timeout=120)
    assert "lenet5" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"torch": True, "lightning": False}


def test_off_a_terminal_the_log_has_one_line_per_epoch_instead_of_a_progress_bar(tmp_path):
    result = run_cli("zoo-train", "model=mlp", "trainer.max_epochs=2", "sched=none", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stdout + result.stderr and "it/s" not in result.stdout + result.stderr  # no bar
    assert (result.stdout + result.stderr).count("GPU available") == 1  # Lightning's lines once, not twice
    log = (tmp_path / "train.log").read_text()
    lines = re.findall(r"\[zoo\]\[INFO\] - epoch (\d)/2: (.*), ([\d.]+) s$", log, flags=re.M)
    assert [int(epoch) for epoch, _, _ in lines] == [1, 2]
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for epoch, (_, values, _) in enumerate(lines):
        shown = dict(part.rsplit(" ", 1) for part in values.split(", "))
        assert list(shown) == ["train/acc", "train/loss", "val/acc", "val/acc_top5", "val/loss", "lr"]
        for key, column in (("val/acc", "val/acc"), ("train/loss", "train/loss_epoch")):
            logged = [float(r[column]) for r in rows if r[column] and int(r["epoch"]) == epoch]
            assert float(shown[key]) == pytest.approx(logged[0], abs=5e-5), (epoch, key)
    assert re.search(r"\[zoo\]\[INFO\] - test/acc \S+, test/acc_top5 \S+, test/loss \S+ \(last weights\)", log)


def test_the_model_summary_counts_macs_and_the_frozen_split(tmp_path):
    from zoo.callbacks import split_line
    from zoo.bench.profiling import count_macs

    result = run_main("zoo-train", "model=mlp", "trainer.max_epochs=1", "sched=none", "callbacks.progress_bar=none",
                      f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    log = (tmp_path / "train.log").read_text()
    model_cfg = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["model"]
    net = build_on_meta(zoo.get_model, **model_cfg)
    macs, size = count_macs(net), net.default_image_size
    assert f"MACs per forward pass of the example input (1x1x{size}x{size}): {macs:,}" in log
    assert re.search(rf"\n{round(2 * macs / 1e3)} K\s+Total Flops", log)  # Lightning's table: 2 FLOPs per MAC
    assert "parameters: " in log and " 0 frozen" in log and "already configured" not in log
    quiet = run_main("zoo-train", "model=mlp", "trainer.fast_dev_run=true", "trainer.enable_model_summary=false",
                     "callbacks.progress_bar=none", f"hydra.run.dir={tmp_path / 'quiet'}")  # fmt: skip
    assert quiet.returncode == 0 and "MACs per forward pass" not in (tmp_path / "quiet" / "train.log").read_text()

    model = zoo.get_model("lenet5")
    for p in model.c1.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.c1.parameters())
    total = sum(p.numel() for p in model.parameters())
    modules = sum(1 for m in model.modules() if any(True for _ in m.parameters(recurse=False)))
    assert split_line(model) == (
        f"parameters: {total - frozen:,} trainable, {frozen:,} frozen (1 of {modules} modules with parameters frozen)"
    )


def test_errors_from_outside_are_one_line_naming_their_file_or_library():
    """OS errors name their file, library errors their library, out of memory says so; a
    bug of ours (a plain RuntimeError) is not turned into a line: its traceback helps."""
    from PIL import UnidentifiedImageError
    from yaml import YAMLError

    from zoo.cli.entry import outside_message

    assert outside_message(OSError(28, "No space left on device", "/runs/a/metrics.json")) == (
        "/runs/a/metrics.json: No space left on device"
    )
    assert outside_message(OSError(18, "Invalid cross-device link", "/a", None, "/b")) == "/a -> /b: Invalid cross-device link"
    assert outside_message(PermissionError(13, "Permission denied", "x" * 300)) == f"{'x' * 100}...{'x' * 100}: Permission denied"
    assert outside_message(MemoryError()) == "out of memory: an allocation failed"
    assert outside_message(UnidentifiedImageError("cannot identify image file 'a.png'")) == (
        "image: cannot identify image file 'a.png'"
    )
    assert outside_message(YAMLError("mapping values are not allowed here")) == "YAML: mapping values are not allowed here"
    assert outside_message(RuntimeError("shape mismatch")) is None
    assert outside_message(KeyError("a")) is None


@pytest.mark.parametrize(
    ("command", "args", "compositions"),
    [
        ("zoo-predict", [], 1),  # refused after composing: ckpt_path is required
        ("zoo-translate", ["ckpt_path=missing.ckpt"], 1),
        ("zoo-export", [], 1),
        ("zoo-eval", ["ckpt_path=missing.ckpt"], 1),
        ("zoo-predict", ["hydra.job.name=p"], 2),  # Hydra's own settings: Hydra's rule
        ("zoo-predict", ["--config-name", "predict"], 2),
        ("zoo-train", ["data.batch_size=0"], 2),  # a config group may ask for a multirun
    ],
)
def test_the_inference_commands_compose_their_config_once(monkeypatch, tmp_path, command, args, compositions):
    """Hydra composes twice, first only to read ``hydra.mode``; the inference commands, whose
    configs never set it, take their mode from the command line and compose once."""
    from hydra._internal.hydra import Hydra

    calls = []
    compose = Hydra.compose_config
    monkeypatch.setattr(Hydra, "compose_config", lambda self, *a, **k: calls.append(1) or compose(self, *a, **k))
    monkeypatch.chdir(tmp_path)
    result = run_main(command, *args, *(["hydra.run.dir=."] if command == "zoo-train" else []))
    assert result.returncode == 1 and "Error:" in result.stderr  # refused by the command, after Hydra composed
    assert len(calls) == compositions


def test_no_config_file_of_the_inference_commands_sets_the_run_mode():
    """What :data:`zoo.cli.launch.COMPOSED_ONCE` rests on: the commands' own files and every
    option of the groups they compose leave ``hydra.mode`` unset."""
    from zoo.cli.launch import COMPOSED_ONCE

    files = []
    for command in COMPOSED_ONCE:
        primary = CONFIGS / f"{command}.yaml"
        groups = [next(iter(d)) for d in yaml.safe_load(primary.read_text())["defaults"] if isinstance(d, dict)]
        files += [primary, *(f for g in groups if (CONFIGS / g).is_dir() for f in (CONFIGS / g).glob("*.yaml"))]
    assert len(files) > 30  # eval's trainer, paths and model groups were read
    assert [f for f in files if "mode" in ((yaml.safe_load(f.read_text()) or {}).get("hydra") or {})] == []
    assert "mode" in yaml.safe_load((CONFIGS / "hparams_search" / "digits_optuna.yaml").read_text())["hydra"]  # the check reads a mode


@pytest.mark.parametrize(("command", "page", "listings"), [
    ("zoo-predict", "--help", 0), ("zoo-train", "--help", 1), ("zoo-eval", "--help", 1), ("zoo-export", "--hydra-help", 1),
])  # fmt: skip
def test_help_pages_are_hydras_with_only_the_config_groups_they_show_listed(monkeypatch, command, page, listings):
    """The page is the one Hydra writes, letter for letter; the config groups (a copy of Hydra's
    config store per group) are listed only where the template shows them."""
    from hydra._internal.hydra import Hydra

    from zoo.cli import launch

    listed = []
    format_groups = Hydra.format_config_groups
    monkeypatch.setattr(Hydra, "format_config_groups", lambda self, *a, **k: listed.append(1) or format_groups(self, *a, **k))
    ours = run_main(command, page)
    assert ours.returncode == 0 and len(listed) == listings
    monkeypatch.setattr(Hydra, "get_help", launch._hydra_get_help)  # Hydra's own: every field filled
    hydras = run_main(command, page)
    assert len(listed) == listings + 2
    assert ours.stdout == hydras.stdout and ours.stdout.count("\n") > 10
