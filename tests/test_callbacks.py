"""zoo.callbacks hook by hook, on stand-in trainers: the values each hook reads and writes."""

from __future__ import annotations

import logging
import random
import signal
import types

import pytest
import torch
from torch import nn
from torchmetrics import MeanMetric

from zoo.callbacks import (
    EpochLog,
    ExactResume,
    Interrupted,
    ModelSummaryWithMACs,
    NonFiniteLossError,
    StopOnNonFiniteLoss,
    StopOnSignal,
    split_line,
)


def _checkpoint_callback(monitor, best_model_path="", dirpath=None):
    return types.SimpleNamespace(monitor=monitor, best_model_path=best_model_path, dirpath=dirpath)


def _trainer(**fields):
    defaults = {
        "checkpoint_callbacks": [], "global_step": 7, "current_epoch": 2, "is_global_zero": True,
        "fit_loop": types.SimpleNamespace(epoch_loop=types.SimpleNamespace(
            batch_idx=3, batch_progress=types.SimpleNamespace(is_last_batch=False),
        )),
        "train_dataloader": None, "state": types.SimpleNamespace(fn="fit"),
    }  # fmt: skip
    return types.SimpleNamespace(**{**defaults, **fields})


# Non-finite loss


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_names_the_value_step_epoch_batch_and_the_last_checkpoint(bad):
    trainer = _trainer(checkpoint_callbacks=[
        _checkpoint_callback("val/acc", "run/checkpoints/best.ckpt"),  # monitored: not the last checkpoint
        _checkpoint_callback(None, ""),  # the last-checkpoint callback before it saved anything
        _checkpoint_callback(None, "run/checkpoints/last.ckpt"),
    ])  # fmt: skip
    with pytest.raises(NonFiniteLossError) as raised:
        StopOnNonFiniteLoss().on_before_backward(trainer, None, torch.tensor([1.0, bad]).sum())
    assert str(raised.value) == (
        f"train/loss is {bad} at step 7 (epoch 2, batch 3); training stopped before applying it. "
        "Last good checkpoint: run/checkpoints/last.ckpt"
    )


def test_a_non_finite_loss_before_any_checkpoint_says_none_was_written():
    trainer = _trainer(checkpoint_callbacks=[_checkpoint_callback(None, "")])
    with pytest.raises(NonFiniteLossError, match=r"Last good checkpoint: none written yet$"):
        StopOnNonFiniteLoss().on_before_backward(trainer, None, torch.tensor(float("nan")))


def test_a_finite_loss_passes_even_at_the_largest_float():
    StopOnNonFiniteLoss().on_before_backward(_trainer(), None, torch.tensor(torch.finfo(torch.float32).max))


# Signals


def test_interrupted_names_the_signal_and_keeps_the_step():
    stop = Interrupted(signal.SIGTERM, 12)
    assert (str(stop), stop.signum, stop.step) == ("interrupted by SIGTERM", signal.SIGTERM, 12)


def _noted(stop: StopOnSignal, signum: int) -> None:
    """``stop._note(signum)``, where it must only note: a KeyboardInterrupt is this test's
    failure, not pytest's own interruption (which would end the whole run)."""
    try:
        stop._note(signum, None)
    except KeyboardInterrupt:
        pytest.fail(f"{signal.Signals(signum).name} stopped at once instead of being noted")


def test_a_noted_signal_is_kept_with_one_warning_and_a_second_ctrl_c_stops_at_once(caplog):
    stop = StopOnSignal()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        _noted(stop, signal.SIGTERM)
        _noted(stop, signal.SIGINT)  # after a SIGTERM, a first Ctrl-C is only noted
    assert stop.signum == signal.SIGINT
    assert [r.getMessage() for r in caplog.records] == [
        "SIGTERM received: stopping after this batch (Ctrl-C again to stop at once)",
        "SIGINT received: stopping after this batch (Ctrl-C again to stop at once)",
    ]
    with pytest.raises(KeyboardInterrupt):
        stop._note(signal.SIGINT, None)


def test_a_sigterm_after_a_ctrl_c_is_noted_not_an_immediate_stop():
    stop = StopOnSignal()
    _noted(stop, signal.SIGINT)
    _noted(stop, signal.SIGTERM)
    assert stop.signum == signal.SIGTERM


def test_handling_installs_the_handlers_and_puts_the_previous_ones_back():
    before = {s: signal.getsignal(s) for s in StopOnSignal.SIGNALS}
    stop = StopOnSignal()
    with stop.handling() as handling:
        assert handling is stop
        assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == [stop._note, stop._note]
    assert {s: signal.getsignal(s) for s in StopOnSignal.SIGNALS} == before


def test_a_noted_signal_saves_last_ckpt_in_the_last_checkpoints_folder_and_raises_with_the_step():
    saved = []
    trainer = _trainer(
        checkpoint_callbacks=[_checkpoint_callback("val/acc", dirpath="run/best"), _checkpoint_callback(None, dirpath="run/ck")],
        save_checkpoint=saved.append, global_step=41,
    )  # fmt: skip
    stop = StopOnSignal()
    stop.on_train_batch_end(trainer, None)  # nothing noted: nothing happens
    assert saved == []
    stop.signum = signal.SIGTERM
    with pytest.raises(Interrupted) as raised:
        stop.on_train_batch_end(trainer, None)
    assert saved == ["run/ck/last.ckpt"]
    assert (raised.value.signum, raised.value.step) == (signal.SIGTERM, 41)


def test_without_a_last_checkpoint_a_signal_stops_with_no_step():
    saved = []
    trainer = _trainer(checkpoint_callbacks=[_checkpoint_callback(None, dirpath=None)], save_checkpoint=saved.append)
    stop = StopOnSignal()
    stop.signum = signal.SIGINT
    with pytest.raises(Interrupted) as raised:
        stop.on_train_batch_end(trainer, None)
    assert (saved, raised.value.signum, raised.value.step) == ([], signal.SIGINT, None)


@pytest.mark.parametrize("hook", ["on_validation_batch_end", "on_test_batch_end", "on_train_batch_start"])
def test_outside_a_finished_training_batch_a_signal_stops_without_saving(hook):
    stop = StopOnSignal()
    getattr(stop, hook)(_trainer(), None, None, 0)  # nothing noted
    stop.signum = signal.SIGTERM
    with pytest.raises(Interrupted) as raised:
        getattr(stop, hook)(_trainer(), None, None, 0)
    assert (raised.value.signum, raised.value.step) == (signal.SIGTERM, None)


# Exact resume


class _Loader:
    def __init__(self, position):
        self.position, self.loaded = position, []

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.loaded.append(state)


class _WithMetric(nn.Module):
    def __init__(self):
        super().__init__()
        self.mean = MeanMetric()
        self.layer = nn.Linear(1, 1)


def test_exact_resume_puts_back_the_generators_the_loader_position_the_metrics_and_counts_the_resume():
    module = _WithMetric()
    module.mean.update(torch.tensor([1.0, 5.0]))
    module.mean.update(torch.tensor(3.0))
    torch.manual_seed(3), random.seed(4)
    callback, checkpoint = ExactResume(), {}
    callback.resumes = 2
    callback.on_save_checkpoint(_trainer(train_dataloader=_Loader(17)), module, checkpoint)
    expected = (torch.rand(3), random.random())

    state = checkpoint[ExactResume.KEY]
    assert state["train_loader"] == {"position": 17}
    assert state["resumes"] == 2
    assert state["metrics"]["mean"]["updates"] == 2
    assert {k: v.tolist() for k, v in state["metrics"]["mean"]["states"].items()} == {"mean_value": 9.0, "weight": 3.0}

    torch.manual_seed(0), random.seed(0)
    fresh, resumed = _WithMetric(), ExactResume()
    resumed.on_load_checkpoint(_trainer(), fresh, checkpoint)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert resumed.resumes == 3
    assert (fresh.mean.compute().item(), fresh.mean.update_count) == (3.0, 2)

    loader = _Loader(0)
    resumed.on_train_start(_trainer(train_dataloader=loader), fresh)
    resumed.on_train_start(_trainer(train_dataloader=loader), fresh)  # the position is used once
    assert loader.loaded == [{"position": 17}]


@pytest.mark.parametrize("fn", ["test", "validate", "predict"])
def test_at_an_epochs_end_the_metrics_are_not_saved_and_only_fit_counts_as_a_resume(fn):
    module = _WithMetric()
    module.mean.update(torch.tensor(2.0))
    trainer = _trainer()
    trainer.fit_loop.epoch_loop.batch_progress.is_last_batch = True
    checkpoint = {}
    ExactResume().on_save_checkpoint(trainer, module, checkpoint)
    assert checkpoint[ExactResume.KEY]["metrics"] == {}
    assert "train_loader" not in checkpoint[ExactResume.KEY]  # a loader without state_dict

    tested = ExactResume()
    tested.on_load_checkpoint(_trainer(state=types.SimpleNamespace(fn=fn)), _WithMetric(), checkpoint)
    assert tested.resumes == 0


def test_a_checkpoint_without_the_state_changes_nothing_and_an_old_one_counts_its_first_resume():
    callback, module = ExactResume(), _WithMetric()
    torch.manual_seed(5)
    callback.on_load_checkpoint(_trainer(), module, {})
    drawn = torch.rand(2)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(2))
    assert callback.resumes == 0
    state = {"torch": torch.get_rng_state(), "python": [3, list(random.getstate()[1]), None]}  # written before "resumes"
    callback.on_load_checkpoint(_trainer(), _WithMetric(), {ExactResume.KEY: state})
    assert callback.resumes == 1


def test_without_cuda_a_saved_cuda_state_is_not_restored(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", calls.append)
    state = {"torch": torch.get_rng_state(), "python": [3, list(random.getstate()[1]), None], "cuda": ["c"]}
    ExactResume().on_load_checkpoint(_trainer(), _WithMetric(), {ExactResume.KEY: state})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ExactResume().on_load_checkpoint(_trainer(), _WithMetric(), {ExactResume.KEY: state})
    del state["cuda"]
    ExactResume().on_load_checkpoint(_trainer(), _WithMetric(), {ExactResume.KEY: state})
    assert calls == [["c"]]


# Epoch lines


def test_the_epoch_line_has_the_epoch_means_validation_rate_and_seconds_and_is_written_once(caplog, monkeypatch):
    clock = iter([100.0, 100.0, 112.25])
    monkeypatch.setattr("zoo.callbacks.time.monotonic", lambda: next(clock))
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.05)
    trainer = _trainer(
        current_epoch=1, max_epochs=3, optimizers=[optimizer],
        callback_metrics={"val/loss": torch.tensor(0.5), "train/loss_step": 9.0, "train/loss_epoch": 0.25,
                          "train/acc": 0.875, "test/acc": 1.0, "lr-SGD": 0.05},
    )  # fmt: skip
    epoch_log = EpochLog()
    with caplog.at_level(logging.INFO, logger="zoo"):
        epoch_log.on_train_epoch_start(trainer, nn.Linear(1, 1))  # nothing pending: no line
        epoch_log.on_train_epoch_end(trainer, nn.Linear(1, 1))
        epoch_log.on_train_end(trainer, nn.Linear(1, 1))
        epoch_log.on_train_end(trainer, nn.Linear(1, 1))
    assert [r.getMessage() for r in caplog.records] == [
        "epoch 2/3: train/acc 0.8750, train/loss 0.2500, val/loss 0.5000, lr 0.05, 12.2 s"
    ]


def test_the_epoch_line_without_a_known_length_or_optimizer_and_not_on_other_ranks(caplog):
    trainer = _trainer(current_epoch=0, max_epochs=-1, optimizers=[], callback_metrics={"train/loss": 1.0})
    epoch_log = EpochLog()
    with caplog.at_level(logging.INFO, logger="zoo"):
        epoch_log.on_train_epoch_end(trainer, nn.Linear(1, 1))
        trainer.is_global_zero = False
        epoch_log.on_train_end(trainer, nn.Linear(1, 1))
        trainer.is_global_zero = True
        epoch_log.on_train_end(trainer, nn.Linear(1, 1))
        trainer.max_epochs = None
        epoch_log.on_train_epoch_end(trainer, nn.Linear(1, 1))
        epoch_log.on_train_end(trainer, nn.Linear(1, 1))
    assert [r.getMessage().rsplit(",", 1)[0] for r in caplog.records] == ["epoch 1: train/loss 1.0000"] * 2


# The model summary


class _ScaledLinear(nn.Module):
    """A module with a parameter of its own beside a child that has parameters."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))
        self.linear = nn.Linear(2, 2)


def test_the_split_line_counts_trainable_and_frozen_parameters_and_the_modules_holding_only_frozen_ones():
    net = nn.Sequential(nn.Linear(3, 2), nn.Sequential(nn.Linear(2, 4), nn.ReLU()), nn.Linear(4, 1, bias=False), _ScaledLinear())
    for p in net[1].parameters():
        p.requires_grad_(False)
    net[0].bias.requires_grad_(False)  # half frozen: not a frozen module
    net[3].scale.requires_grad_(False)  # its own parameter frozen, its child's not: a frozen module
    assert split_line(net) == "parameters: 16 trainable, 16 frozen (2 of 5 modules with parameters frozen)"


class _Summary(ModelSummaryWithMACs):
    """The summary with Lightning's own table recorded instead of printed."""

    def __init__(self, **options):
        super().__init__(**options)
        self.tables = []

    def summarize(self, *args, **kwargs):
        self.recorded = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ModelSummaryWithMACs.__mro__[1], "summarize", lambda _, *a, **k: self.recorded.append((a, k)))
            super().summarize(*args, **kwargs)
        self.tables.append(self.recorded)


def _summary_run(summary, is_global_zero=True):
    from zoo.data.digits import DigitsDataModule
    from zoo.tasks import TASKS

    task = TASKS.get("classification")(
        model={"name": "lenet5", "num_classes": 10, "in_channels": 1}, optim={"name": "sgd", "lr": 0.1},
        sched={"name": "none"},
    )  # fmt: skip
    data = DigitsDataModule(image_size=32)
    trainer = types.SimpleNamespace(is_global_zero=is_global_zero, datamodule=data, lightning_module=task, strategy=None)
    summary.on_fit_start(trainer, task)
    return task


def test_the_summary_gives_lightning_twice_the_macs_as_flops_and_logs_the_macs_and_split(caplog, monkeypatch):
    summary = _Summary(max_depth=1)
    monkeypatch.setattr("zoo.bench.profiling.count_macs", lambda net, inputs: 416_520)
    with caplog.at_level(logging.INFO, logger="zoo"):
        task = _summary_run(summary)
    [[(args, kwargs)]] = summary.tables  # Lightning's own call, with its figures and ours
    assert (args[1], args[2], args[5], kwargs) == (60_806, 60_806, 833_040, {})
    assert [r.getMessage() for r in caplog.records] == [
        "MACs per forward pass of the example input (1x1x32x32): 416,520", split_line(task)
    ]


def test_the_summary_counts_nothing_when_off_or_on_another_rank(caplog, monkeypatch):
    counted = []
    monkeypatch.setattr("zoo.bench.profiling.count_macs", lambda net, inputs: counted.append(1) or 5)
    for summary, rank_zero in [(_Summary(max_depth=0), True), (_Summary(max_depth=1), False)]:
        with caplog.at_level(logging.INFO, logger="zoo"):
            caplog.clear()
            _summary_run(summary, rank_zero)
            summary.summarize("table", 1, 1, 0.0, {}, 7)
        assert summary.tables[0][0][0][-1] == 7  # Lightning's own count, not twice None
        assert [r.getMessage() for r in caplog.records] == []
    assert counted == []


def test_the_macs_line_names_each_example_inputs_shape(caplog):
    summary = _Summary(max_depth=1)
    summary._macs, summary._example = 12, ((2, 7), (2, 5, 3))
    with caplog.at_level(logging.INFO, logger="zoo"):
        summary.summarize("table", 1, 1, 0.0, {}, 0, precision="bf16-mixed")
    assert [r.getMessage() for r in caplog.records] == ["MACs per forward pass of the example input (2x7, 2x5x3): 12"]
    [[(args, kwargs)]] = summary.tables
    assert (args[-1], kwargs) == (24, {"precision": "bf16-mixed"})  # Lightning's own options passed on


def test_one_epoch_of_one_is_numbered_1_of_1(caplog):
    trainer = _trainer(current_epoch=0, max_epochs=1, optimizers=[], callback_metrics={})
    epoch_log = EpochLog()
    with caplog.at_level(logging.INFO, logger="zoo"):
        epoch_log.on_train_epoch_end(trainer, nn.Linear(1, 1))
        epoch_log.on_train_end(trainer, nn.Linear(1, 1))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["epoch 1/1"]


def test_an_optimizer_whose_groups_hold_no_parameters_has_no_rate():
    from zoo.callbacks import learning_rates

    optimizer = types.SimpleNamespace(param_groups=[{"params": [], "lr": 0.1}])
    assert learning_rates(optimizer, nn.Linear(1, 1)) == ""
