"""Freezing, learning rates by stage, the summary table and the callbacks, on small models."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.errors import ZooError
from zoo.finetune import (
    FinetuneConfig, FrozenBatchNormEval, GradualUnfreezing, apply_finetuning, finetune_callbacks, stage_keys,
)  # fmt: skip
from zoo.models.pretrained import load_into, load_pretrained
from zoo.optim import parameter_lrs
from zoo.models import get_model
from zoo.tasks import ImageClassifier

RESNET = {"name": "resnet18", "num_classes": 10, "in_channels": 1, "small_input": True}


def _config(**options) -> FinetuneConfig:
    return FinetuneConfig.from_dict({"weights": "pretrained.pth", **options})


def _frozen(net: nn.Module) -> list[str]:
    return [name for name, m in net.stages() if not any(p.requires_grad for p in m.parameters())]


def _trainable(net: nn.Module) -> list[str]:
    return [name for name, m in net.stages() if all(p.requires_grad for p in m.parameters())]


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    with torch.device("meta"):  # requires_grad and shapes are all these tests look at
        return get_model(**{k: v for k, v in RESNET.items() if k != "name"}, name="resnet18")


def _fresh(net: nn.Module) -> nn.Module:
    net.requires_grad_(True)
    return net


def test_freeze_leaves_only_the_head_trainable(resnet):
    apply_finetuning(_fresh(resnet), _config(mode="freeze"), None)
    assert _frozen(resnet) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert _trainable(resnet) == ["head"]


BACKBONE = ["stem", "layer1", "layer2", "layer3", "layer4"]


@pytest.mark.parametrize("k, frozen", [(0, []), (2, BACKBONE[:2]), (-2, BACKBONE[:4]), (5, BACKBONE)])
def test_partial_freezes_exactly_the_first_k_stages(resnet, k, frozen):
    apply_finetuning(_fresh(resnet), _config(mode="partial", freeze_stages=k), None)
    assert _frozen(resnet) == frozen
    names = [n for n, _ in resnet.stages()]
    assert _trainable(resnet) == [n for n in names if n not in frozen]


@pytest.mark.parametrize("k", [6, -7])
def test_partial_refuses_a_stage_count_out_of_range_listing_the_stages(resnet, k):
    with pytest.raises(ConfigError, match="stem, layer1, layer2, layer3, layer4, head"):
        apply_finetuning(_fresh(resnet), _config(mode="partial", freeze_stages=k), None)


def test_full_and_none_freeze_nothing(resnet):
    for mode in ("full", "none"):
        apply_finetuning(_fresh(resnet), _config(mode=mode), None)
        assert _frozen(resnet) == []


def test_freeze_modules_freezes_by_name_prefix_in_any_model(resnet):
    apply_finetuning(_fresh(resnet), _config(mode="none", freeze_modules=["layer1", "fc.bias"]), None)
    frozen = {n for n, p in resnet.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in resnet.named_parameters() if n.startswith("layer1.")} | {"fc.bias"}
    with pytest.raises(ConfigError, match="no parameters under 'layer9'.*layer1"):
        apply_finetuning(_fresh(resnet), _config(freeze_modules=["layer9"]), None)


def test_freeze_modules_freezes_a_seq2seq_encoder():
    net = get_model("seq2seq_gru", src_vocab_size=12, tgt_vocab_size=12, emb_dim=8, hidden=16)
    apply_finetuning(net, FinetuneConfig.from_dict({"freeze_modules": ["encoder"]}), None)
    params = dict(net.named_parameters())
    assert params and all(not p.requires_grad for n, p in params.items() if n.startswith("encoder."))
    assert all(p.requires_grad for n, p in params.items() if not n.startswith("encoder."))
    with pytest.raises(ConfigError, match="stages of image models"):
        apply_finetuning(net, _config(mode="freeze"), None)


def test_the_summary_table_is_logged_with_trainable_and_frozen_counts(caplog):
    net = get_model("lenet5", num_classes=10)
    with caplog.at_level(logging.INFO, logger="zoo.finetune"):
        apply_finetuning(net, _config(mode="partial", freeze_stages=2, lr_backbone=1e-5, lr_head=1e-3), None)
    cells = [line.split() for line in caplog.text.splitlines()]
    rows = {c[0]: c[1:] for c in cells if c and c[0] in ("c1", "c3", "c5", "f6", "head", "total")}
    count = lambda ps: f"{sum(p.numel() for p in ps):,}"  # noqa: E731
    assert rows["c1"] == ["0", count(net.c1.parameters()), "-"]
    assert rows["c5"] == [count(net.c5.parameters()), "0", "1e-05"]
    assert rows["head"] == [count(net.classifier.parameters()), "0", "0.001"]
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert rows["total"] == [count(trainable), count(p for p in net.parameters() if not p.requires_grad)]


def test_optimizer_param_groups_carry_the_configured_learning_rates(one_thread):
    config = _config(mode="partial", freeze_stages=3, lr_backbone=1e-5, lr_head=1e-3)
    optim = {"name": "adamw", "lr": 0.1, "weight_decay": 0.05}
    task = ImageClassifier(model=RESNET, optim=optim, sched=None, **config.task_options())
    apply_finetuning(task.net, config, None)
    optimizer = task.configure_optimizers()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    net = task.net
    assert all(lr_of[id(p)] == 1e-3 for p in net.fc.parameters())
    assert all(lr_of[id(p)] == 1e-5 for p in [*net.layer3.parameters(), *net.layer4.parameters()])
    assert not any(id(p) in lr_of for m in (net.conv1, net.layer1, net.layer2) for p in m.parameters())
    assert sorted({g["lr"] for g in optimizer.param_groups}) == [1e-5, 1e-3]  # optim.lr is used by no one
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(net.fc.weight)] == 0.05 and decay[id(net.fc.bias)] == 0.0  # the no-decay split stays
    assert task.hparams.stage_lrs == {"backbone": 1e-5, "head": 1e-3}  # saved: checkpoints rebuild it


def test_reinit_stages_train_in_every_mode_at_the_head_rate(resnet, one_thread):
    apply_finetuning(_fresh(resnet), _config(mode="freeze", reinit_stages=["layer4"]), None)
    assert _frozen(resnet) == ["stem", "layer1", "layer2", "layer3"] and _trainable(resnet) == ["layer4", "head"]
    apply_finetuning(_fresh(resnet), _config(mode="partial", freeze_stages=-1, reinit_stages=["layer4"]), None)
    assert _frozen(resnet) == ["stem", "layer1", "layer2", "layer3"]

    config = _config(mode="full", lr_backbone=1e-5, lr_head=1e-3, reinit_stages=["layer4"])
    assert config.stage_lrs() == {"backbone": 1e-5, "head": 1e-3, "layer4": 1e-3}
    task = ImageClassifier(model=RESNET, optim={"name": "adamw", "lr": 0.1}, sched=None, **config.task_options())
    lr_of = {id(p): g["lr"] for g in task.configure_optimizers().param_groups for p in g["params"]}
    net = task.net
    assert all(lr_of[id(p)] == 1e-3 for p in [*net.layer4.parameters(), *net.fc.parameters()])
    assert all(lr_of[id(p)] == 1e-5 for p in [*net.conv1.parameters(), *net.layer3.parameters()])

    gradual = _config(mode="gradual", unfreeze_epochs=[1, 2], reinit_stages=["layer4"])
    callback = next(c for c in finetune_callbacks(gradual, {}) if isinstance(c, GradualUnfreezing))
    module = type("Module", (), {"net": _fresh(resnet)})()
    callback.freeze_before_training(module)
    assert _trainable(resnet) == ["layer4", "head"]
    assert [name for _, name, _ in callback._schedule(module)] == ["layer3", "layer2"]  # layer4 is not waited for


def test_parameter_lrs_prefer_a_stage_name_to_backbone():
    net = get_model("lenet5")
    lrs = parameter_lrs(net, {"backbone": 1e-5, "c1": 1e-4}, prefix="net.")
    assert lrs["net.c1.0.weight"] == 1e-4 and lrs["net.c5.0.weight"] == 1e-5 and "net.classifier.1.weight" not in lrs


def test_config_is_validated_with_messages_that_say_what_is_allowed():
    with pytest.raises(ConfigError, match="finetune=freeze fine-tunes pretrained weights: set finetune.weights"):
        FinetuneConfig.from_dict({"mode": "freeze"})
    with pytest.raises(ConfigError, match="finetune.mode must be one of none, freeze, partial, full, gradual"):
        _config(mode="frozen")
    with pytest.raises(ConfigError, match="finetune.adapt_channels must be one of sum, repeat"):
        _config(adapt_channels="mean")
    with pytest.raises(ConfigError, match="unknown finetune option"):
        _config(lr_heads=1e-3)
    with pytest.raises(ConfigError, match="positive learning rate"):
        _config(lr_head=0)
    with pytest.raises(ConfigError, match="positive learning rate or null, got 'fast'"):
        _config(lr_backbone="fast")
    with pytest.raises(ConfigError, match="whole number of stages"):
        _config(mode="partial", freeze_stages=1.5)
    assert _config(mode="freeze", lr_backbone=1e-5, lr_head=1e-3).stage_lrs() == {"head": 1e-3}
    assert _config(mode="none", lr_backbone=1e-5, lr_head=1e-3).task_options() == {}  # plain training


def test_frozen_batch_norms_stay_in_eval_mode_when_lightning_calls_train(one_thread):
    net = get_model("lenet5", num_classes=10, norm="batch")
    apply_finetuning(net, _config(mode="partial", freeze_stages=2), None)  # c1, c3 frozen
    net.train()  # what Lightning does at every epoch start and after validation
    FrozenBatchNormEval()._apply(net)
    assert not net.c1[1].training and not net.c3[1].training
    assert net.f6[1].training and net.c1[0].training  # trainable norms, and other layers, train
    frozen, trained = net.c3[1].running_mean.clone(), net.f6[1].running_mean.clone()
    net(torch.randn(4, 1, 32, 32))
    assert torch.equal(frozen, net.c3[1].running_mean)
    assert not torch.equal(trained, net.f6[1].running_mean)
    assert finetune_callbacks(_config(mode="none"), {}) == []
    callbacks = finetune_callbacks(_config(mode="gradual"), {})
    assert [type(c) for c in callbacks] == [GradualUnfreezing, FrozenBatchNormEval]


def test_gradual_unfreezing_adds_groups_that_follow_a_running_schedule():
    from types import SimpleNamespace

    from zoo.optim import build_optimizer

    net = get_model("lenet5", num_classes=10, norm="batch")
    callback = GradualUnfreezing([1, 3], lr=1e-5, weight_decay=0.05)
    module = SimpleNamespace(net=net)
    callback.freeze_before_training(module)
    optimizer = build_optimizer(net.named_parameters(), "adamw", lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    module.trainer = SimpleNamespace(optimizers=[optimizer], lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)])
    assert len(optimizer.param_groups) == 2 and not any(p.requires_grad for p in net.f6.parameters())

    callback.finetune_function(module, 0, optimizer)
    assert len(optimizer.param_groups) == 2
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    callback.finetune_function(module, 1, optimizer)  # f6, the stage next to the head
    assert all(p.requires_grad for p in net.f6.parameters()) and not any(p.requires_grad for p in net.c5.parameters())
    new = optimizer.param_groups[2:]
    assert {id(p) for g in new for p in g["params"]} == {id(p) for p in net.f6.parameters()}
    assert sorted(g["weight_decay"] for g in new) == [0.0, 0.05]  # the linear weight decays, BN and biases not
    assert all(g["initial_lr"] == pytest.approx(1e-5) for g in new) and len(scheduler.base_lrs) == 4
    scheduler.step()
    head, added = optimizer.param_groups[0], optimizer.param_groups[2]
    assert added["lr"] / 1e-5 == pytest.approx(head["lr"] / 1e-3)  # the same cosine, scaled
    callback.finetune_function(module, 2, optimizer)  # nothing due at epoch 2; f6 is not added twice
    assert len(optimizer.param_groups) == 4


def test_the_summary_table_is_aligned_text_with_its_header(caplog):
    """The exact lines a user reads: stage names left-aligned, numbers right-aligned, '-' for
    a frozen stage's rate and 'optim.lr' where no stage rate is set."""
    net = get_model("lenet5", num_classes=10)
    with caplog.at_level(logging.INFO, logger="zoo.finetune"):
        apply_finetuning(net, _config(mode="partial", freeze_stages=1, lr_head=1e-3), None)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    rows = [("stage", "trainable", "frozen", "lr"), ("c1", "0", f"{count(net.c1):,}", "-")]
    rows += [(n, f"{count(m):,}", "0", "optim.lr") for n, m in (("c3", net.c3), ("c5", net.c5), ("f6", net.f6))]
    rows += [("head", f"{count(net.classifier):,}", "0", "0.001")]
    rows += [("total", f"{count(net) - count(net.c1):,}", f"{count(net.c1):,}", "")]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    expected = ["  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]) for r in rows]
    assert caplog.records[-1].getMessage().splitlines() == [
        "fine-tuning (finetune=partial, weights: none):", *expected,
    ]  # fmt: skip


def test_pretrained_weights_load_with_each_option_before_freezing(caplog):
    """apply_finetuning hands every loading option to the loader: channels summed into a
    1-channel first conv, the head reset although the class count fits, a stage re-initialised."""
    from zoo.models.pretrained import Pretrained

    source = get_model("lenet5", num_classes=10, in_channels=3)
    net = get_model("lenet5", num_classes=10, in_channels=1)
    own = {k: v.clone() for k, v in net.state_dict().items()}
    config = _config(mode="freeze", reset_head=True, reinit_stages=["c5"], adapt_channels="sum")
    with caplog.at_level(logging.INFO, logger="zoo.finetune"):
        apply_finetuning(net, config, Pretrained("trained.pth", source.state_dict()))
    torch.testing.assert_close(net.c1[0].weight, source.c1[0].weight.sum(1, keepdim=True))  # adapted
    torch.testing.assert_close(net.c3[0].weight, source.c3[0].weight)  # loaded
    torch.testing.assert_close(net.c5[0].weight, own["c5.0.weight"])  # re-initialised: its own fresh weights
    assert not torch.equal(net.classifier[1].weight, source.classifier[1].weight)  # reset
    assert caplog.records[-1].getMessage().startswith("fine-tuning (finetune=freeze, weights: trained.pth):")
    assert [n for n, m in net.stages() if any(p.requires_grad for p in m.parameters())] == ["c5", "head"]


def test_reinit_stages_keep_the_fresh_initialisation_and_load_every_other_stage(tmp_path, caplog, one_thread):
    source = get_model("resnet18", num_classes=10, small_input=True)
    torch.save(source.state_dict(), path := tmp_path / "r18.pth")
    torch.manual_seed(1)
    fresh = get_model("resnet18", num_classes=5, small_input=True)
    torch.manual_seed(1)
    net = get_model("resnet18", num_classes=5, small_input=True)
    with caplog.at_level(logging.INFO, logger="zoo.models"):
        skipped = load_into(net, load_pretrained(str(path)), keep_fresh=stage_keys(net, ["layer4"]))

    layer4 = {k for k in net.state_dict() if k.startswith("layer4.")}
    assert set(skipped) == layer4 | {"fc.weight", "fc.bias"} and "layer4.0.bn1.running_var" in layer4
    for key, value in net.state_dict().items():
        if not key.startswith("fc."):  # (the head: re-initialised, tested above)
            assert torch.equal(value, (fresh if key in layer4 else source).state_dict()[key]), key
    assert f"{len(layer4)} tensors keep their fresh initialisation, not loaded: layer4." in caplog.text
    with pytest.raises(ZooError, match=r"no stage 'layer5'.*stem, layer1, layer2, layer3, layer4, head"):
        stage_keys(net, ["layer5"])
    with pytest.raises(ZooError, match="reinit_stages.*finetune.weights"):
        FinetuneConfig.from_dict({"mode": "none", "reinit_stages": ["layer4"]})


def test_reinit_head_keeps_the_fresh_head_even_when_the_class_count_matches(tmp_path):
    source = get_model("lenet5", num_classes=10)
    torch.save(source.state_dict(), path := tmp_path / "lenet5.pth")
    torch.manual_seed(3)
    fresh = get_model("lenet5", num_classes=10)
    torch.manual_seed(3)
    net = get_model("lenet5", num_classes=10)
    skipped = load_into(net, load_pretrained(str(path)), keep_fresh=stage_keys(net, ["head"]))
    assert skipped == ["classifier.1.weight", "classifier.1.bias"]
    assert torch.equal(net.classifier[1].weight, fresh.classifier[1].weight)
    assert torch.equal(net.f6[0].weight, source.f6[0].weight)
    with pytest.raises(ZooError) as err:
        stage_keys(net, ["layer4", "neck"])
    assert str(err.value) == (
        "finetune.reinit_stages: LeNet5 has no stage 'layer4', 'neck'; its stages are c1, c3, c5, f6, head"
    )
