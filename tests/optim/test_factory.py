import pytest
import torch
from torch import nn

from zoo.errors import ConfigError, UnknownNameError
from zoo.optim import OPTIMIZERS, build_optimizer, build_scheduler


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_weight_decay_skips_biases_and_norm_parameters_unless_asked():
    net = _net()
    opt = build_optimizer(net.named_parameters(), "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 1e-4 and free["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(net[0].weight), id(net[3].weight)}
    assert len(free["params"]) == 4  # conv bias, BN weight and bias, linear bias
    opt = build_optimizer(net.named_parameters(), "sgd", lr=0.1, weight_decay=1e-4, decay_norm_and_bias=True)
    assert len(opt.param_groups) == 1


def test_frozen_parameters_are_left_out():
    net = _net()
    net[0].requires_grad_(False)
    opt = build_optimizer(net.named_parameters(), "adam", lr=1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == 4


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_is_the_torch_one_and_takes_a_step(name):
    net = _net()
    opt = build_optimizer(net.named_parameters(), name, lr=0.01)
    assert isinstance(opt, torch.optim.Optimizer)
    before = net[3].weight.detach().clone()
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    assert not torch.equal(before, net[3].weight)


def test_bad_names_and_options_are_config_errors():
    with pytest.raises(UnknownNameError, match="Did you mean: adam"):
        build_optimizer(_net().named_parameters(), "adma", lr=1)
    with pytest.raises(ConfigError, match="optimizer 'adam'.*momentum"):
        build_optimizer(_net().named_parameters(), "adam", lr=1, momentum=0.9)
    with pytest.raises(ConfigError, match="optimizer 'sgd'.*Nesterov"):
        build_optimizer(_net().named_parameters(), "sgd", lr=1, momentum=0, nesterov=True)
    opt = build_optimizer(_net().named_parameters(), "sgd", lr=1)
    with pytest.raises(UnknownNameError, match="Available: cosine, inverse_sqrt, none, onecycle, plateau, step"):
        build_scheduler(opt, "linear", total_steps=10, steps_per_epoch=2)


def _lrs(name, steps=100, steps_per_epoch=10, **options):
    opt = build_optimizer(_net().named_parameters(), "sgd", lr=0.1, momentum=0.9)
    sched = build_scheduler(opt, name, total_steps=steps, steps_per_epoch=steps_per_epoch, **options)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    return sched, lrs


def test_onecycle_rises_to_the_optimizer_lr_then_anneals():
    sched, lrs = _lrs("onecycle", pct_start=0.3)
    assert sched["interval"] == "step"
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.1) and 25 <= peak <= 31
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] < 1e-4


def test_cosine_with_warmup():
    _, lrs = _lrs("cosine", warmup_epochs=2, min_lr=0.001)  # 20 warmup steps
    assert lrs[0] == pytest.approx(0.001) and lrs[20] == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:21]))
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    assert lrs[-1] == pytest.approx(0.001, abs=1e-3)


def test_step_and_plateau_are_per_epoch():
    opt = build_optimizer(_net().named_parameters(), "sgd", lr=0.1)
    assert build_scheduler(opt, "step", 100, 10, step_size=5)["interval"] == "epoch"
    plateau = build_scheduler(opt, "plateau", 100, 10)
    assert plateau["interval"] == "epoch" and plateau["monitor"] == "val/loss"
    assert build_scheduler(opt, "none", 100, 10) is None
