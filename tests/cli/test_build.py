"""Building a run's objects (zoo.cli.build), each function alone: no training run."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
from tests.helpers import CONFIGS
from lightning.pytorch import callbacks as cb
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from torch import nn

from zoo import perf
from zoo.callbacks import (
    EpochLog,
    ExactResume,
    ModelSummaryWithMACs,
    StopOnNonFiniteLoss,
)
from zoo.checkpoint_io import AtomicCheckpointIO
from zoo.cli import build
from zoo.cli.config import plain
from zoo.errors import ConfigError
from zoo.finetune import FinetuneConfig
from zoo.finetune.callbacks import FrozenBatchNormEval, GradualUnfreezing
from zoo.loggers import ResumableCSVLogger
from zoo.models import get_model
from zoo.tasks import ImageClassifier

RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


def group(path: str):
    """A config group's YAML file as it is (``configs/<path>.yaml``)."""
    return OmegaConf.load(CONFIGS / f"{path}.yaml")


# --- quiet_known_warnings ---------------------------------------------------------------


@pytest.fixture
def lightning_logging(monkeypatch):
    """Lightning's loggers with their handlers and filters restored after the test (and
    the rank-zero ones without filters, as before any quiet_known_warnings call)."""
    for name in ("lightning", *RANK_ZERO_LOGGERS):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "filters", [] if name in RANK_ZERO_LOGGERS else list(logger.filters))


@pytest.fixture
def quiet(lightning_logging):
    """quiet_known_warnings() called once; the warnings shown after it, filters restored afterwards."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        build.quiet_known_warnings()
        yield shown


SILENCED = [
    "The 'train_dataloader' does not have many workers which may be a bottleneck.",
    "Checkpoint directory /runs/a/checkpoints exists and is not empty.",
    (
        "Experiment logs directory /runs/a/csv exists and is not empty. Previous log "
        "files in this directory will be deleted when the new ones are saved!"
    ),
    ("The number of training batches (4) is smaller than the logging interval Trainer(log_every_n_steps=10)."),
    ("isinstance(treespec, LeafSpec) is deprecated, use isinstance(treespec, TreeSpec) and treespec.is_leaf() instead."),
    (
        "You requested to overfit but enabled train dataloader shuffling. We are "
        "turning off the train dataloader shuffling for you."
    ),
    (
        "Precision bf16-mixed is not supported by the model summary.  Estimated model "
        "size in MB will not be accurate. Using 32 bits instead."
    ),
]


@pytest.mark.parametrize("message", SILENCED, ids=range(len(SILENCED)))
def test_each_known_lightning_warning_is_silenced(quiet, message):
    warnings.warn(message, UserWarning, stacklevel=1)
    assert [str(w.message) for w in quiet] == []


def test_other_warnings_still_show(quiet):
    others = [
        "The dataloader has too many workers.",
        "Checkpoint directory /runs/a/checkpoints is missing.",
        "Note: Precision 16-mixed is not supported by the model summary.",  # not at the start
        "isinstance(x, LeafSpec) is deprecated",
    ]
    for message in others:
        warnings.warn(message, UserWarning, stacklevel=1)
    assert [str(w.message) for w in quiet] == others


def test_lightnings_own_console_handler_goes_when_the_root_logger_has_handlers(monkeypatch, tmp_path, lightning_logging):
    root, lightning = logging.getLogger(), logging.getLogger("lightning")
    console = logging.StreamHandler()
    # A StreamHandler subclass: not Lightning's console handler.
    file = logging.FileHandler(tmp_path / "a.log", delay=True)
    other = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(lightning, "handlers", [console, file, other])
    with warnings.catch_warnings():
        build.quiet_known_warnings()
    assert lightning.handlers == [file, other]


def test_lightnings_console_handler_stays_when_the_root_logger_has_none(monkeypatch, lightning_logging):
    lightning = logging.getLogger("lightning")
    console = logging.StreamHandler()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(lightning, "handlers", [console])
    with warnings.catch_warnings():
        build.quiet_known_warnings()
    assert lightning.handlers == [console]


def test_both_rank_zero_loggers_get_one_tip_filter_however_often_it_is_called(quiet):
    build.quiet_known_warnings()  # the second call (the fixture made the first)
    for name in RANK_ZERO_LOGGERS:
        filters = logging.getLogger(name).filters
        assert [type(f) for f in filters].count(build._NoProductTips) == 1, name


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("lightning", logging.INFO, __file__, 1, message, None, None)


def test_the_tip_filter_drops_product_tips_and_the_summary_note_and_keeps_the_rest():
    tips = build._NoProductTips()
    dropped = [
        "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]",
        "Trainer already configured with model summary callbacks: [<class 'X'>]. Skipping.",
    ]
    kept = [
        "GPU available: False, used: False",
        "Note: 💡 Tip: not at the start",
        "The Trainer already configured with model summary callbacks",
        "",
    ]
    assert [tips.filter(_record(m)) for m in dropped] == [False, False]
    assert [tips.filter(_record(m)) for m in kept] == [True, True, True, True]


# --- plain ---------------------------------------------------------------------------


def test_plain_turns_config_nodes_into_resolved_python_containers():
    cfg = OmegaConf.create({"a": 3, "d": {"x": "${a}"}, "l": ["${a}", 2]})
    d, values = plain(cfg.d), plain(cfg.l)
    assert (type(d), d) == (dict, {"x": 3})
    assert (type(values), values) == (list, [3, 2])
    assert plain(cfg) == {"a": 3, "d": {"x": 3}, "l": [3, 2]}


def test_plain_returns_anything_else_as_it_is():
    mapping = {"x": "${a}"}
    assert plain(mapping) is mapping
    assert [plain(v) for v in (None, 3, "s")] == [None, 3, "s"]


# --- fit_model_to_data / fit_data_to_model ------------------------------------------


def test_model_options_left_null_are_taken_from_the_data_and_set_ones_kept():
    model = {"name": "mlp", "num_classes": None, "in_channels": 1, "image_size": None}
    facts = {
        "vocab_size": 50,
        "num_classes": 10,
        "in_channels": 1,
        "image_size": 8,
    }  # the model's not first
    fitted = build.fit_model_to_data(model, facts, "digits")
    assert fitted == {
        "name": "mlp",
        "num_classes": 10,
        "in_channels": 1,
        "image_size": 8,
    }
    assert model == {
        "name": "mlp",
        "num_classes": None,
        "in_channels": 1,
        "image_size": None,
    }


def test_a_model_option_that_contradicts_the_data_is_refused_in_one_line():
    model = {"name": "lenet5", "num_classes": None, "in_channels": 3}
    with pytest.raises(ConfigError) as error:
        build.fit_model_to_data(model, {"num_classes": 10, "in_channels": 1}, "digits")
    assert str(error.value) == (
        "model.in_channels=3 but the data 'digits' has in_channels=1; set model.in_channels=null to take it from the data"
    )


def test_the_data_image_size_follows_a_model_fixed_to_one_and_only_then():
    assert build.fit_data_to_model({"image_size": None, "a": 1}, "lenet5") == {
        "image_size": 32,
        "a": 1,
    }
    assert build.fit_data_to_model({"image_size": 8}, "lenet5") == {"image_size": 8}
    assert build.fit_data_to_model({"name": "dates"}, "lenet5") == {"name": "dates"}
    # No fixed size (or no image model): the data module's default stays, as given.
    for name in ("mlp", "resnet18", "seq2seq_gru"):
        data = {"image_size": None}
        assert build.fit_data_to_model(data, name) is data
        assert data == {"image_size": None}


# --- build_task ------------------------------------------------------------------------


class FakeData:
    """A data module as build_task sees it: its task, its facts, and the check it makes."""

    def __init__(self, task: str = "classification"):
        self.task, self.checked = task, []

    def model_facts(self) -> dict:
        return {"num_classes": 7, "in_channels": 1, "image_size": 32}

    def check_model(self, net, model_cfg) -> None:
        self.checked.append((net, model_cfg))


def task_config(**model):
    return OmegaConf.create(
        {
            "loss": "cross_entropy",
            "task": group("task/classification"),
            "model": {**OmegaConf.to_container(group("model/lenet5")), **model},
            "data": {"name": "digits"},
            "optim": group("optim/sgd"),
            "sched": group("sched/none"),
        }
    )


def test_a_task_is_built_with_the_network_fitted_to_the_data_and_checked_by_it():
    data = FakeData()
    module = build.build_task(task_config(), data, label_smoothing=0.25)
    assert type(module) is ImageClassifier
    fitted = {
        **OmegaConf.to_container(group("model/lenet5")),
        "num_classes": 7,
        "in_channels": 1,
    }
    assert module.hparams.model == fitted  # no image_size: lenet5's config has none
    assert module.net.num_classes == 7
    # A task option wins over the config's 0.0.
    assert module.hparams.label_smoothing == 0.25
    assert module.hparams.loss == "cross_entropy"  # ${loss} resolved
    assert module.hparams.optim == OmegaConf.to_container(group("optim/sgd"))
    assert module.hparams.sched == {"name": "none"}
    assert len(data.checked) == 1
    net, model_cfg = data.checked[0]
    assert net is module.net and model_cfg == fitted


def test_a_model_option_contradicting_the_data_is_refused_naming_the_data():
    with pytest.raises(
        ConfigError,
        match=r"^model\.in_channels=3 but the data 'digits' has in_channels=1;",
    ):
        build.build_task(task_config(in_channels=3), FakeData())


def test_a_dataset_for_another_task_is_refused_naming_both():
    data = FakeData(task="seq2seq")
    with pytest.raises(ConfigError) as error:
        build.build_task(task_config(), data)
    assert str(error.value) == (
        "data 'digits' is for the seq2seq task, but task=classification; "
        "choose a classification dataset or task=seq2seq with a matching model"
    )
    assert data.checked == []


def test_a_model_option_the_network_does_not_take_is_a_config_error_naming_the_model():
    with pytest.raises(ConfigError, match=r"^model 'lenet5': .*unexpected keyword argument 'bogus'"):
        build.build_task(task_config(bogus=1), FakeData())


# --- build_callbacks ---------------------------------------------------------------------


class LossTask:
    """A task whose checkpoint metric is minimised (the real tasks' are all maximised)."""

    monitor, monitor_mode = "val/loss", "min"


def callbacks(
    options: dict,
    has_logger: bool = False,
    run_dir: Path = Path("/runs/a"),
    task=LossTask,
):
    return build.build_callbacks(OmegaConf.create(options), run_dir, has_logger, task)


def checkpoints(options: dict) -> list[cb.ModelCheckpoint]:
    return [c for c in callbacks(options) if isinstance(c, cb.ModelCheckpoint)]


def test_the_default_callbacks_group_builds_each_callback_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    cfg = OmegaConf.merge(
        group("callbacks/default"),
        {
            "checkpoint": {"every_n_train_steps": 50},
            "early_stopping": {"monitor": "val/loss", "mode": "min", "patience": 3},
            "ema": {"decay": 0.9, "update_every_n_steps": 4},
        },
    )
    built = build.build_callbacks(cfg, tmp_path, has_logger=True, task=ImageClassifier)
    assert [type(c) for c in built] == [
        cb.ModelCheckpoint,
        cb.ModelCheckpoint,
        ExactResume,
        cb.EarlyStopping,
        cb.EMAWeightAveraging,
        cb.TQDMProgressBar,
        EpochLog,
        cb.LearningRateMonitor,
        StopOnNonFiniteLoss,
    ]
    best, last, _, stop, ema, bar, _, lr, _ = built
    assert (Path(best.dirpath), best.filename) == (tmp_path / "checkpoints", "best")
    assert (best.monitor, best.mode, best.save_top_k) == ("val/acc", "max", 1)
    assert (best.auto_insert_metric_name, best._enable_version_counter) == (
        False,
        False,
    )
    assert (Path(last.dirpath), last.filename) == (tmp_path / "checkpoints", "last")
    assert (last.monitor, last.save_top_k, last._every_n_train_steps) == (None, 1, 50)
    assert last._enable_version_counter is False
    assert (stop.monitor, stop.mode, stop.patience) == ("val/loss", "min", 3)
    assert ema.update_every_n_steps == 4
    average = ema._kwargs["avg_fn"](torch.tensor(0.0), torch.tensor(1.0), torch.tensor(5))
    assert average.item() == pytest.approx(0.1)  # (1 - decay) * the new value
    assert bar.refresh_rate == 10  # configs/callbacks/default.yaml
    assert lr.logging_interval == "step"


def test_no_checkpoint_means_no_checkpoint_callbacks_and_no_exact_resume():
    for checkpoint in (None, {}):
        built = callbacks({"checkpoint": checkpoint, "progress_bar": "none"})
        assert [type(c) for c in built] == [EpochLog, StopOnNonFiniteLoss]


def test_the_best_checkpoint_follows_the_tasks_metric_unless_told_otherwise():
    def best(**checkpoint):
        (only,) = checkpoints({"checkpoint": {"save_last": False, **checkpoint}, "progress_bar": "none"})
        return only.monitor, only.mode

    assert best() == ("val/loss", "min")  # the task's metric and mode
    assert best(monitor=None, mode=None) == ("val/loss", "min")
    # The task's own metric: the task's mode.
    assert best(monitor="val/loss") == ("val/loss", "min")
    assert best(monitor="val/acc") == ("val/acc", "max")  # another metric: max
    assert best(monitor="val/acc", mode="min") == ("val/acc", "min")  # a set mode wins
    assert best(mode="max") == ("val/loss", "max")


def test_exact_resume_comes_with_the_checkpoints_last_or_not():
    built = callbacks({"checkpoint": {"save_last": False}, "progress_bar": "none"})
    assert [type(c) for c in built] == [
        cb.ModelCheckpoint,
        ExactResume,
        EpochLog,
        StopOnNonFiniteLoss,
    ]
    (best,) = checkpoints({"checkpoint": {"monitor": "val/acc"}, "progress_bar": "none"})
    assert best.filename == "best"  # save_last unset: no last.ckpt


def test_the_last_checkpoint_is_saved_every_n_train_steps_when_set():
    options = {
        "checkpoint": {"save_last": True, "every_n_train_steps": None},
        "progress_bar": "none",
    }
    _, last = checkpoints(options)
    assert (last.filename, last._every_n_train_steps, last._every_n_epochs) == (
        "last",
        0,
        1,
    )
    options["checkpoint"]["every_n_train_steps"] = 7
    _, last = checkpoints(options)
    assert (last.filename, last._every_n_train_steps, last._every_n_epochs) == (
        "last",
        7,
        0,
    )


def bars(options: dict) -> list:
    return [c for c in callbacks(options) if isinstance(c, cb.ProgressBar)]


def test_the_automatic_progress_bar_is_tqdm_on_a_terminal_and_none_elsewhere(
    monkeypatch,
):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    for options in ({}, {"progress_bar": "auto"}):
        (bar,) = bars(options)
        assert (type(bar), bar.refresh_rate) == (cb.TQDMProgressBar, 1)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert bars({}) == [] and bars({"progress_bar": "auto"}) == []


def test_a_named_progress_bar_is_that_bar_at_its_refresh_rate():
    (bar,) = bars({"progress_bar": "tqdm", "refresh_rate": 7})
    assert (type(bar), bar.refresh_rate) == (cb.TQDMProgressBar, 7)
    (bar,) = bars({"progress_bar": "rich", "refresh_rate": 4})
    assert (type(bar), bar.refresh_rate, bar._leave) == (cb.RichProgressBar, 4, True)
    (bar,) = bars({"progress_bar": "rich"})
    assert bar.refresh_rate == 1
    assert bars({"progress_bar": "none"}) == [] and bars({"progress_bar": None}) == []


def test_an_unknown_progress_bar_is_refused_with_the_choices():
    with pytest.raises(ConfigError) as error:
        callbacks({"progress_bar": "fancy"})
    assert str(error.value) == "callbacks.progress_bar must be auto, rich, tqdm or none, got 'fancy'"


def test_the_epoch_log_lr_monitor_and_nonfinite_stop_follow_their_switches():
    def kinds(has_logger=False, **options):
        return [type(c) for c in callbacks({"progress_bar": "none", **options}, has_logger)]

    assert kinds() == [EpochLog, StopOnNonFiniteLoss]  # on by default, no LR monitor
    assert kinds(epoch_log=False) == [StopOnNonFiniteLoss]
    assert kinds(stop_on_nonfinite_loss=False) == [EpochLog]
    assert kinds(lr_monitor=True) == [
        EpochLog,
        StopOnNonFiniteLoss,
    ]  # nothing to log to
    assert kinds(True, lr_monitor=True) == [
        EpochLog,
        cb.LearningRateMonitor,
        StopOnNonFiniteLoss,
    ]
    assert kinds(True, lr_monitor=False) == [EpochLog, StopOnNonFiniteLoss]
    assert kinds(True) == [EpochLog, StopOnNonFiniteLoss]


# --- build_loggers -----------------------------------------------------------------------


def test_no_logger_group_means_no_loggers(tmp_path):
    assert build.build_loggers(None, tmp_path) == []
    assert build.build_loggers(OmegaConf.create({}), tmp_path) == []


def test_the_csv_logger_writes_under_the_run_and_keeps_the_rows_before_the_resume(
    tmp_path,
):
    cfg = OmegaConf.create({"csv": {"flush_logs_every_n_steps": 7}})
    (csv,) = build.build_loggers(cfg, tmp_path, resume_step=5)
    assert type(csv) is ResumableCSVLogger
    assert (Path(csv.log_dir), csv.name, csv.version) == (tmp_path / "csv", "csv", "")
    assert (csv.resume_step, csv._flush_logs_every_n_steps) == (5, 7)
    # `csv:` with no options in YAML
    (csv,) = build.build_loggers(OmegaConf.create({"csv": None}), tmp_path)
    assert csv.resume_step is None


def test_tensorboard_purges_from_the_resume_step_unless_told_otherwise(tmp_path):
    def purge(options, resume_step):
        cfg = OmegaConf.create({"tensorboard": options})
        (board,) = build.build_loggers(cfg, tmp_path, resume_step=resume_step)
        assert type(board) is TensorBoardLogger
        assert (Path(board.log_dir), board.name, board.version) == (
            tmp_path / "tensorboard",
            "tensorboard",
            "",
        )
        assert cfg.tensorboard == options  # the config itself untouched
        return board._kwargs.get("purge_step", "unset")

    assert purge({}, None) == "unset"  # a fresh run
    assert purge({}, 120) == 120
    assert purge({}, 0) == 0
    assert purge({"purge_step": 3}, 120) == 3  # the user's wins
    assert purge({"purge_step": 3}, None) == 3


def test_logger_options_are_copied_not_changed(tmp_path):
    options = {"tensorboard": {}}
    build.build_loggers(options, tmp_path, resume_step=4)
    assert options == {"tensorboard": {}}


@pytest.fixture
def trackers(monkeypatch):
    """mlflow_logger and wandb_logger as recorders of what they were asked for."""
    calls = []

    def recorder(name):
        def make(*args, **kwargs):
            calls.append((name, args, kwargs))
            return name

        return make

    monkeypatch.setattr(build, "mlflow_logger", recorder("mlflow"))
    monkeypatch.setattr(build, "wandb_logger", recorder("wandb"))
    return calls


def test_mlflow_gets_the_run_the_store_and_whether_it_resumes(tmp_path, trackers):
    run = tmp_path / "outputs" / "run"
    cfg = OmegaConf.create({"mlflow": group("logger/mlflow").mlflow})
    options = OmegaConf.to_container(cfg.mlflow)
    assert build.build_loggers(cfg, run) == ["mlflow"]
    build.build_loggers(cfg, run, resume_step=0, store_dir=tmp_path / "store")
    build.build_loggers(cfg, run, resume_step=9)
    assert trackers == [
        ("mlflow", (run, run.parent), {"resume": False, **options}),
        ("mlflow", (run, tmp_path / "store"), {"resume": True, **options}),
        ("mlflow", (run, run.parent), {"resume": True, **options}),
    ]


def test_wandb_gets_the_run_and_its_options_and_loggers_come_in_config_order(tmp_path, trackers):
    cfg = OmegaConf.create({"wandb": group("logger/wandb").wandb, "mlflow": None})
    assert build.build_loggers(cfg, tmp_path, resume_step=3) == ["wandb", "mlflow"]
    assert trackers == [
        ("wandb", (tmp_path,), OmegaConf.to_container(cfg.wandb)),
        ("mlflow", (tmp_path, tmp_path.parent), {"resume": True}),
    ]


def test_an_unknown_logger_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError) as error:
        build.build_loggers(OmegaConf.create({"neptune": {}}), tmp_path)
    assert str(error.value) == "unknown logger 'neptune'; available: csv, tensorboard, mlflow, wandb"


# --- trainer_options -----------------------------------------------------------------------


def test_auto_precision_is_resolved_for_the_network_and_says_why():
    cfg = OmegaConf.create({"accelerator": "cpu", "precision": "auto", "max_epochs": 3})
    net = get_model("lenet5", num_classes=10)
    options, why = build._trainer_options(cfg, net)
    assert options == {"accelerator": "cpu", "precision": "32-true", "max_epochs": 3}
    assert why == "auto: bf16-mixed was not measured faster for LeNet5"
    assert build.trainer_options(cfg, net) == options
    assert cfg.precision == "auto"  # the config itself untouched
    _, why = build._trainer_options(OmegaConf.create({"accelerator": "cpu"}), nn.Linear(2, 2))
    assert why == "auto: bf16-mixed was not measured faster for Linear"  # unset: auto


class FastNet(nn.Module):
    fast_path = True  # a family measured faster in bf16-mixed (zoo.perf)


def test_auto_precision_on_an_auto_accelerator_asks_the_gpu_when_torch_sees_one(
    monkeypatch,
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(perf, "fast_bf16", lambda device_type: device_type == "cuda")
    options, why = build._trainer_options(OmegaConf.create({}), FastNet())
    assert (options, why) == (
        {"precision": "bf16-mixed"},
        "this GPU has native bf16; precision=32 for float32",
    )
    assert build.trainer_options(OmegaConf.create({}), FastNet()) == options
    # accelerator=cpu asks the CPU even where a GPU is there
    cpu = OmegaConf.create({"accelerator": "cpu"})
    options, why = build._trainer_options(cpu, FastNet())
    assert (options["precision"], why) == (
        "32-true",
        "auto: this CPU has no native bf16",
    )


def test_a_set_precision_is_kept_and_said_to_be_set():
    cfg = OmegaConf.create({"accelerator": "cpu", "precision": "bf16-mixed"})
    options, why = build._trainer_options(cfg, nn.Linear(2, 2))
    assert (options["precision"], why) == (
        "bf16-mixed",
        "trainer.precision=bf16-mixed, as set",
    )


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_without_cuda_is_refused_before_lightning_sees_it(monkeypatch, accelerator):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = OmegaConf.create({"accelerator": accelerator, "precision": "32-true"})
    with pytest.raises(
        ConfigError,
        match=rf"^trainer\.accelerator={accelerator} \(trainer=gpu\) needs a CUDA GPU",
    ):
        build.trainer_options(cfg, nn.Linear(2, 2))


def test_an_invalid_precision_is_a_config_error_about_the_trainer():
    cfg = OmegaConf.create({"accelerator": "cpu", "precision": "17-mixed"})
    with pytest.raises(
        ConfigError,
        match=r"^trainer: trainer\.precision must be auto or one of .*; got '17-mixed'$",
    ):
        build.trainer_options(cfg, nn.Linear(2, 2))


# --- build_trainer ---------------------------------------------------------------------------


class Marker(cb.Callback):
    """A command's own callback (zoo-train's signal handling)."""


def trainer_config(**parts):
    cfg = {
        "task": {"name": "classification"},
        "optim": {"name": "sgd", "lr": 0.1},
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "precision": "auto",
            "max_epochs": 1,
        },
        "callbacks": {"checkpoint": None, "progress_bar": "none"},
        "logger": None,
    }
    for key, value in parts.items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) and value else value
    return OmegaConf.create(cfg)


@pytest.fixture
def lenet():
    """The task module build_trainer gets: an image classifier over LeNet-5."""
    return ImageClassifier(model={"name": "lenet5", "num_classes": 10}, optim={"name": "sgd", "lr": 0.1}, sched={"name": "none"})


def test_the_trainer_gets_the_run_folder_atomic_saves_and_no_logger_or_bar(tmp_path, lenet, caplog):
    extra = Marker()
    with caplog.at_level(logging.INFO, logger="zoo"):
        trainer = build.build_trainer(trainer_config(), tmp_path, lenet, extra_callbacks=[extra])
    assert trainer.default_root_dir == str(tmp_path)
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    assert trainer.logger is None and trainer.loggers == []
    assert trainer.progress_bar_callback is None
    ours = [c for c in trainer.callbacks if isinstance(c, (EpochLog, StopOnNonFiniteLoss, Marker, cb.ModelSummary))]
    assert [type(c) for c in ours] == [
        EpochLog,
        StopOnNonFiniteLoss,
        Marker,
        ModelSummaryWithMACs,
    ]
    assert ours[2] is extra
    assert (trainer.max_epochs, trainer.precision) == (1, "32-true")
    first = next(r.getMessage() for r in caplog.records if r.name == "zoo")
    assert first == (
        "device cpu, precision 32-true (auto: bf16-mixed was not measured faster for LeNet5), "
        f"{torch.get_num_threads()} threads, run folder {tmp_path}"
    )


def test_only_the_first_process_says_where_it_runs(tmp_path, lenet, caplog, monkeypatch):
    monkeypatch.setattr(build, "rank_zero", lambda: False)
    with caplog.at_level(logging.INFO, logger="zoo"):
        build.build_trainer(trainer_config(), tmp_path, lenet)
    assert not [r for r in caplog.records if r.getMessage().startswith("device ")]


def test_the_trainer_shows_the_bar_and_logs_to_the_loggers_it_was_given(tmp_path, lenet, monkeypatch):
    cfg = trainer_config(
        callbacks={"progress_bar": "tqdm", "lr_monitor": True},
        logger={"csv": {}},
        trainer={"enable_model_summary": False},
    )
    trainer = build.build_trainer(cfg, tmp_path, lenet, resume_step=6)
    assert type(trainer.progress_bar_callback) is cb.TQDMProgressBar
    assert [type(x) for x in trainer.loggers] == [ResumableCSVLogger]
    assert trainer.logger.resume_step == 6
    kinds = [type(c) for c in trainer.callbacks]
    assert cb.LearningRateMonitor in kinds  # there is a logger
    assert not [k for k in kinds if issubclass(k, cb.ModelSummary)]  # summary off


def test_the_trainer_checkpoints_by_the_configured_tasks_metric(tmp_path, lenet):
    cfg = trainer_config(callbacks={"checkpoint": {"save_last": False}})
    trainer = build.build_trainer(cfg, tmp_path, lenet)
    assert (trainer.checkpoint_callback.monitor, trainer.checkpoint_callback.mode) == (
        "val/acc",
        "max",
    )
    assert Path(trainer.checkpoint_callback.dirpath) == tmp_path / "checkpoints"


def test_the_trainer_checkpoints_by_the_metric_of_the_module_it_trains(tmp_path):
    class LossTask(ImageClassifier):
        monitor, monitor_mode = "val/loss", "min"

    module = LossTask(model={"name": "lenet5", "num_classes": 10}, optim={"name": "sgd", "lr": 0.1}, sched={"name": "none"})
    trainer = build.build_trainer(trainer_config(callbacks={"checkpoint": {"save_last": False}}), tmp_path, module)
    assert (trainer.checkpoint_callback.monitor, trainer.checkpoint_callback.mode) == ("val/loss", "min")


def test_the_finetune_callbacks_come_from_the_config_given_not_from_the_run_config(tmp_path, lenet):
    cfg = trainer_config(finetune={"mode": "gradual", "weights": "w.pth", "unfreeze_epochs": [1]})
    kinds = [type(c) for c in build.build_trainer(cfg, tmp_path, lenet).callbacks]  # parsed once, by the command
    assert GradualUnfreezing not in kinds and FrozenBatchNormEval not in kinds


def test_the_trainer_includes_the_finetune_modes_callbacks(tmp_path, lenet):
    finetune = {
        "mode": "gradual",
        "weights": "w.pth",
        "unfreeze_epochs": [1],
        "lr_backbone": 0.01,
    }
    cfg = trainer_config(optim={"weight_decay": 0.003})
    trainer = build.build_trainer(cfg, tmp_path, lenet, finetune=FinetuneConfig.from_dict(finetune))
    kinds = [type(c) for c in trainer.callbacks]
    assert kinds.count(GradualUnfreezing) == 1 and kinds.count(FrozenBatchNormEval) == 1
    assert kinds.index(StopOnNonFiniteLoss) < kinds.index(GradualUnfreezing)  # added to the run's own callbacks
    assert kinds.index(FrozenBatchNormEval) < kinds.index(ModelSummaryWithMACs)
    (gradual,) = [c for c in trainer.callbacks if isinstance(c, GradualUnfreezing)]
    assert (gradual.unfreeze_epochs, gradual.lr, gradual.weight_decay) == (
        [1],
        0.01,
        0.003,
    )


def test_the_mlflow_store_is_under_the_output_folder(tmp_path, lenet, trackers):
    build.build_trainer(trainer_config(logger={"mlflow": {}}), tmp_path, lenet)
    paths = {"output_dir": str(tmp_path / "runs")}
    build.build_trainer(
        trainer_config(logger={"mlflow": {}}, paths=paths),
        tmp_path,
        lenet,
        resume_step=2,
    )
    assert trackers == [
        ("mlflow", (tmp_path, Path("outputs")), {"resume": False}),
        ("mlflow", (tmp_path, tmp_path / "runs"), {"resume": True}),
    ]


def test_the_perf_switches_and_the_accelerator_reach_speed_up(tmp_path, lenet, monkeypatch):
    calls = []
    monkeypatch.setattr(build, "speed_up", lambda *args: calls.append(args) or {"precision": args[1], "channels_last": 0, "compile": 0})
    devices = []
    monkeypatch.setattr(
        build,
        "accelerator_type",
        lambda accelerator: devices.append(accelerator) or "cpu",
    )
    build.build_trainer(trainer_config(), tmp_path, lenet)
    perf_options = {"channels_last": True, "compile": "max-autotune"}
    cfg = trainer_config(perf=perf_options)
    del cfg.trainer.accelerator  # unset: Lightning's auto
    build.build_trainer(cfg, tmp_path, lenet)
    assert calls == [
        (lenet.net, "32-true", "auto", None, "cpu"),
        (lenet.net, "32-true", True, "max-autotune", "auto"),
    ]
    assert devices == ["cpu", "auto"]  # what the first line names


def test_the_perf_switches_are_applied_to_the_network(tmp_path, lenet):
    conv = next(m for m in lenet.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    build.build_trainer(trainer_config(), tmp_path, lenet)  # auto at 32-true: NCHW
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    build.build_trainer(trainer_config(perf={"channels_last": True}), tmp_path, lenet)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_bad_perf_and_trainer_options_are_config_errors_naming_their_group(tmp_path, lenet):
    with pytest.raises(ConfigError, match=r"^perf: perf\.channels_last must be true, false or auto"):
        build.build_trainer(trainer_config(perf={"channels_last": "sideways"}), tmp_path, lenet)
    with pytest.raises(ConfigError, match=r"^trainer: .*unexpected keyword argument 'bogus'"):
        build.build_trainer(trainer_config(trainer={"bogus": 1}), tmp_path, lenet)
