"""What a training run's log says (zoo.callbacks, zoo.cli.build): the epoch line's learning rate
per parameter group, the first line (device, precision and why, threads, run folder), the MACs
of the input the data feeds, and no Lightning noise (its test table, its summary's precision warning)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from zoo import perf
from zoo.callbacks import data_example, learning_rates
from zoo.cli.train import train
from zoo.models import get_model
from zoo.models.factory import build_on_meta
from zoo.bench.profiling import count_macs

from tests.helpers import QUIET, compose_config, run_main

LENET = {"activation": "relu", "pool": "max", "c3_table": "full", "norm": "batch"}  # configs/model/lenet5.yaml
SHORT = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "data.batch_size=8", "sched=none"]  # fmt: skip


class Named(nn.Module):
    def __init__(self, names: dict[str, str]):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
        self.names = names

    def param_group_names(self) -> dict[str, str]:
        return self.names


def test_one_rate_is_one_number_and_several_are_named_head_first():
    module = Named({"a.weight": "backbone", "a.bias": "backbone", "b.weight": "head", "b.bias": "head"})
    groups = [{"params": [module.a.weight], "lr": 1e-5}, {"params": [module.a.bias], "lr": 1e-5},
              {"params": [], "lr": 0.5}, {"params": [module.b.weight, module.b.bias], "lr": 1e-3}]  # fmt: skip
    optimizer = torch.optim.SGD(groups, lr=0.1)
    assert learning_rates(optimizer, module) == "lr head 0.001, backbone 1e-05"  # the empty group left out
    for group in optimizer.param_groups:
        group["lr"] = 0.02
    assert learning_rates(optimizer, module) == "lr 0.02"  # equal rates: one number, as before
    unnamed = torch.optim.SGD([{"params": [module.c.weight], "lr": 0.1}, {"params": [module.c.bias], "lr": 0.01}])
    assert learning_rates(unnamed, nn.Sequential(module.c)) == "lr pg1 0.1, pg2 0.01"  # Lightning's LR monitor names


def test_the_classifier_names_its_groups_by_the_stage_rates_it_was_given():
    from zoo.tasks import ImageClassifier

    model, optim = {"name": "lenet5", **LENET}, {"name": "sgd", "lr": 0.1}
    assert ImageClassifier(model, optim).param_group_names() == {}  # one rate: nothing to name
    module = ImageClassifier(model, optim, stage_lrs={"head": 1e-3, "backbone": 1e-5, "c5": 1e-3})
    names = module.param_group_names()
    assert {n.split(".")[1]: names[n] for n in names} == {
        "c1": "backbone", "c3": "backbone", "c5": "c5", "f6": "backbone", "classifier": "head"}  # fmt: skip
    assert set(names) == {n for n, _ in module.net.named_parameters(prefix="net")}


@pytest.fixture
def lenet_weights(tmp_path) -> Path:
    torch.save(get_model("lenet5", num_classes=10, **LENET).state_dict(), tmp_path / "lenet5.pth")
    return tmp_path / "lenet5.pth"


def _epoch_lrs(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "zoo" and r.getMessage().startswith("epoch ")]
    return [re.fullmatch(r"epoch \d+/\d+: .*, (lr [^:]*?), [\d.]+ s", line).group(1) for line in lines]


@pytest.mark.parametrize(
    "mode, options, expected",
    [
        ("partial", [], ["lr head 0.001, backbone 1e-05"] * 2),  # f6 at lr_backbone, the new classifier at lr_head
        ("freeze", [], ["lr 0.001"] * 2),  # the head alone trains
        ("gradual", ["finetune.unfreeze_epochs=[1]"], ["lr 0.001", "lr head 0.001, backbone 1e-05"]),  # f6 joins at 1
    ],
)  # fmt: skip
def test_the_epoch_line_names_each_groups_rate_when_they_differ(
    tmp_path, lenet_weights, mode, options, expected, caplog, one_thread
):
    run = tmp_path / "run"
    overrides = [f"finetune={mode}", f"finetune.weights={lenet_weights}", *options, "trainer.max_epochs=2", *SHORT,
                 *QUIET]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="zoo"):
        train(compose_config("train", run, overrides))
    assert _epoch_lrs(caplog) == expected


def test_the_first_line_says_device_precision_and_why_threads_and_run_folder_and_lightning_is_quiet(tmp_path):
    run = tmp_path / "run"
    result = run_main("zoo-train", "trainer.max_epochs=1", *SHORT, *QUIET, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    log = (run / "train.log").read_text()
    first = [line.split(" - ", 1)[1] for line in log.splitlines() if "[zoo][INFO]" in line][0]
    assert first == (
        f"device cpu, precision 32-true (auto: bf16-mixed was not measured faster for LeNet5), "
        f"{torch.get_num_threads()} threads, run folder {run}"
    )
    output = result.stdout + result.stderr
    assert "Test metric" not in output and "DataLoader 0" not in output  # Lightning's table of the line below
    assert re.search(r"\[zoo\]\[INFO\] - test/acc \S+, test/acc_top5 \S+, test/loss \S+ \(last weights\)", log)


def test_bf16_on_a_cpu_says_why_and_the_summary_does_not_warn(tmp_path, monkeypatch, recwarn, one_thread):
    monkeypatch.setattr(perf, "fast_bf16", lambda device_type: True)  # as on a CPU with AVX-512 BF16 or AMX
    run = tmp_path / "run"
    result = run_main("zoo-train", "debug=fast", "model=resnet18", "model.small_input=true", "data.image_size=8",
                      "data.batch_size=4", "callbacks.progress_bar=none", f"hydra.run.dir={run}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    log = (run / "train.log").read_text()
    assert "device cpu, precision bf16-mixed (this CPU has native bf16; precision=32 for float32), " in log
    assert "Total Flops" in log  # the summary was printed, without its warning
    said = [str(w.message) for w in recwarn] + [result.stdout + result.stderr + log]
    assert not [text for text in said if "not supported by the model summary" in text]


def _macs_line(run: Path) -> str:
    (line,) = re.findall(r"MACs per forward pass .*", (run / "train.log").read_text())
    return line


def test_the_macs_line_counts_the_input_the_data_feeds(tmp_path, one_thread):
    lines, macs = {}, {}
    for size in (16, 24):
        run = tmp_path / str(size)
        result = run_main("zoo-train", "debug=fast", "model=resnet18", f"data.image_size={size}", "data.batch_size=8",
                          "callbacks.progress_bar=none", f"hydra.run.dir={run}")  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        lines[size] = _macs_line(run)
        macs[size] = count_macs(build_on_meta(get_model, name="resnet18", num_classes=10, in_channels=1), (1, 1, size, size))
    assert macs[16] < macs[24]
    for size in (16, 24):  # not the network's own 1x1x224x224 example
        assert lines[size] == f"MACs per forward pass of the example input (1x1x{size}x{size}): {macs[size]:,}"


def test_the_example_input_is_the_datas_only_when_it_gives_both_channels_and_size():
    image_net = build_on_meta(get_model, name="lenet5", num_classes=10)
    text_net = build_on_meta(get_model, name="seq2seq_gru", src_vocab_size=9, tgt_vocab_size=9)
    own = [tuple(x.shape) for x in image_net.example_inputs()]
    cases = [
        (image_net, SimpleNamespace(in_channels=3, image_size=40), [(1, 3, 40, 40)]),
        (image_net, SimpleNamespace(in_channels=3, image_size=None), own),  # not resolved yet: the net's own
        (image_net, SimpleNamespace(in_channels=None, image_size=40), own),
        (image_net, SimpleNamespace(), own),  # a data module that says nothing
        (text_net, SimpleNamespace(in_channels=3, image_size=40), [tuple(x.shape) for x in text_net.example_inputs()]),
    ]
    for net, datamodule, shapes in cases:
        inputs = data_example(datamodule, net)
        assert [tuple(x.shape) for x in inputs] == shapes, (type(net).__name__, datamodule)
    assert data_example(SimpleNamespace(in_channels=3, image_size=40), image_net)[0].device.type == "meta"
