"""The optimizers written from their update rules against torch.optim, over 100 steps in float64."""

import copy
import inspect

import pytest
import torch
from torch import nn

from zoo.optim import OPTIMIZERS, build_optimizer
from zoo.reference import optim as ref

STEPS = 100


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(make_optimizer, steps=STEPS, lr_drop_at=None, grad_scale=1.0):
    """Parameters of a fixed small model after ``steps`` full-batch steps on fixed data."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    x = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(32, 3, generator=gen, dtype=torch.float64)
    optimizer = make_optimizer(model.parameters())
    for step in range(steps):
        if step == lr_drop_at:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        optimizer.zero_grad()
        (grad_scale * nn.functional.mse_loss(model(x), y)).backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _max_gap(a, b):
    return (a - b).abs().max().item()


CASES = {
    "sgd": (lambda ps: ref.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd+wd": (lambda ps: ref.SGD(ps, lr=0.1, weight_decay=0.01),
               lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01)),
    "momentum": (lambda ps: ref.Momentum(ps, lr=0.05, momentum=0.9),
                 lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "nesterov+wd": (lambda ps: ref.Momentum(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
                    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    # RMSProp's steps are ~lr * sign(g) near a minimum: at lr=0.01 this model oscillates and
    # rounding differences (1e-16) grow chaotically after ~60 steps, so a smaller lr
    "rmsprop": (lambda ps: ref.RMSProp(ps, lr=0.003, alpha=0.9),
                lambda ps: torch.optim.RMSprop(ps, lr=0.003, alpha=0.9)),
    "rmsprop+wd": (lambda ps: ref.RMSProp(ps, lr=0.003, weight_decay=0.01),
                   lambda ps: torch.optim.RMSprop(ps, lr=0.003, weight_decay=0.01)),
    "adam": (lambda ps: ref.Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adam+wd": (lambda ps: ref.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
                lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_default_update_rules_equal_torch_optim(case):
    ours, theirs = CASES[case]
    start = _train(ours, steps=0)
    after_ours, after_theirs = _train(ours), _train(theirs)
    assert _max_gap(after_ours, start) > 0.05  # the parameters really moved
    assert _max_gap(after_ours, after_theirs) < 1e-6


def test_lecture_momentum_equals_torch_at_constant_lr_and_differs_when_lr_changes():
    lecture = lambda ps: ref.Momentum(ps, lr=0.05, momentum=0.9, lr_in_velocity=True)  # noqa: E731
    torch_sgd = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)  # noqa: E731
    assert _max_gap(_train(lecture), _train(torch_sgd)) < 1e-6  # v_lecture = lr * v_torch
    # a schedule that lowers lr: torch rescales the whole velocity at once, the lecture's form only new gradients
    assert _max_gap(_train(lecture, lr_drop_at=50), _train(torch_sgd, lr_drop_at=50)) > 1e-3
    assert _max_gap(_train(CASES["momentum"][0], lr_drop_at=50), _train(torch_sgd, lr_drop_at=50)) < 1e-6


@pytest.mark.parametrize(
    "ours, theirs",
    [(lambda ps, inside: ref.RMSProp(ps, lr=0.003, eps=1e-8, eps_inside_sqrt=inside),
      lambda ps: torch.optim.RMSprop(ps, lr=0.003, eps=1e-8)),
     (lambda ps, inside: ref.Adam(ps, lr=0.01, eps=1e-8, eps_inside_sqrt=inside),
      lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-8))],
    ids=["rmsprop", "adam"],
)  # fmt: skip
def test_eps_inside_the_square_root_differs_from_torch(ours, theirs):
    # with gradients of order 1e-4 (a loss scaled down), E[g^2] ~ 1e-8 is as large as eps,
    # where sqrt(E + eps) and sqrt(E) + eps part ways
    kwargs = {"grad_scale": 1e-4}
    expected = _train(theirs, **kwargs)
    assert _max_gap(_train(lambda ps: ours(ps, False), **kwargs), expected) < 1e-6
    assert _max_gap(_train(lambda ps: ours(ps, True), **kwargs), expected) > 1e-2


def test_registered_and_built_from_config_names():
    assert {"sgd_ref", "momentum_ref", "rmsprop_ref", "adam_ref"} <= set(OPTIMIZERS.names())
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = build_optimizer(net.named_parameters(), "adam_ref", lr=1e-3, betas=[0.9, 0.99], weight_decay=0.1)
    assert isinstance(opt, ref.Adam) and opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # no decay on biases and norm scales
    for name in ("sgd_ref", "momentum_ref", "rmsprop_ref", "adam_ref"):
        opt = build_optimizer(net.named_parameters(), name, lr=0.01)
        before = net[2].weight.detach().clone()
        (net(torch.randn(5, 3)) ** 2).sum().backward()
        opt.step()
        assert not torch.equal(before, net[2].weight), name
        net.zero_grad()


def test_optimizer_state_round_trips_through_state_dict():
    param = nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = ref.Adam([param], lr=0.01)
    for _ in range(3):
        param.grad = torch.randn(5, dtype=torch.float64)
        opt.step()
    twin = nn.Parameter(param.detach().clone())
    resumed = ref.Adam([twin], lr=0.01)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if through a checkpoint file
    assert resumed.state[twin]["step"] == 3
    grad = torch.randn(5, dtype=torch.float64)
    param.grad, twin.grad = grad, grad.clone()
    opt.step()
    resumed.step()
    assert torch.equal(param, twin)  # resuming continues exactly where it stopped


@pytest.mark.parametrize(
    "make, message",
    [(lambda ps: ref.SGD(ps, lr=-1), "lr"), (lambda ps: ref.Momentum(ps, momentum=1.0), "momentum"),
     (lambda ps: ref.RMSProp(ps, eps=-1), "eps"), (lambda ps: ref.Adam(ps, betas=(0.9, 1.0)), "betas")],
)  # fmt: skip
def test_bad_hyperparameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make([nn.Parameter(torch.zeros(2))])


def test_lecture_nesterov_equals_torch_at_constant_lr():
    """lr_in_velocity=True keeps eta inside v; at a constant eta its Nesterov step
    eta g + mu v equals PyTorch's eta (g + mu v)."""
    ours = _train(lambda ps: ref.Momentum(ps, lr=0.05, momentum=0.9, nesterov=True, lr_in_velocity=True))
    theirs = _train(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True))
    heavy_ball = _train(lambda ps: ref.Momentum(ps, lr=0.05, momentum=0.9, lr_in_velocity=True))
    assert _max_gap(ours, theirs) < 1e-6 and _max_gap(ours, heavy_ball) > 1e-3


@pytest.mark.parametrize(
    "ours, theirs, shared",
    [(ref.SGD, torch.optim.SGD, ("lr", "weight_decay")),
     (ref.Momentum, torch.optim.SGD, ("lr", "nesterov", "weight_decay")),
     (ref.RMSProp, torch.optim.RMSprop, ("lr", "alpha", "eps", "weight_decay")),
     (ref.Adam, torch.optim.Adam, ("lr", "betas", "eps", "weight_decay"))],
)  # fmt: skip
def test_default_hyperparameters_are_pytorchs(ours, theirs, shared):
    defaults = {name: p.default for name, p in inspect.signature(ours).parameters.items()}
    reference = {name: p.default for name, p in inspect.signature(theirs).parameters.items()}
    assert {k: defaults[k] for k in shared} == {k: reference[k] for k in shared}
    if ours is ref.Momentum:
        assert defaults["momentum"] == 0.9 and defaults["lr_in_velocity"] is False  # the lecture's gamma


# (optimizer, keyword, accepted edge values, refused values, the bound the message states)
BOUNDS = [
    (ref.SGD, "lr", [0.0, 5.0], [-1e-9], "[0.0, inf]"),
    (ref.SGD, "weight_decay", [0.0], [-1e-9], "[0.0, inf]"),
    (ref.Momentum, "momentum", [0.0, 0.999], [1.0, -0.1], "[0.0, 1.0)"),
    (ref.Momentum, "lr", [0.0], [-1.0], "[0.0, inf]"),
    (ref.Momentum, "weight_decay", [0.0], [-1.0], "[0.0, inf]"),
    (ref.RMSProp, "alpha", [0.0, 1.0], [1.0001, -0.1], "[0.0, 1.0]"),
    (ref.RMSProp, "eps", [0.0], [-1e-12], "[0.0, inf]"),
    (ref.RMSProp, "lr", [0.0], [-1.0], "[0.0, inf]"),
    (ref.RMSProp, "weight_decay", [0.0], [-1.0], "[0.0, inf]"),
    (ref.Adam, "lr", [0.0], [-1.0], "[0.0, inf]"),
    (ref.Adam, "eps", [0.0], [-1.0], "[0.0, inf]"),
    (ref.Adam, "weight_decay", [0.0], [-1.0], "[0.0, inf]"),
]


@pytest.mark.parametrize("make, key, accepted, refused, bound", BOUNDS, ids=lambda v: getattr(v, "__name__", None))
def test_hyperparameter_bounds_accept_their_edges_and_name_what_they_refuse(make, key, accepted, refused, bound):
    for value in accepted:
        make([nn.Parameter(torch.zeros(2))], **{key: value})
    for value in refused:
        with pytest.raises(ValueError) as error:
            make([nn.Parameter(torch.zeros(2))], **{key: value})
        assert str(error.value) == f"{key} must be in {bound}, got {value}"


@pytest.mark.parametrize("index", [0, 1])
def test_adam_betas_are_bounded_each_in_zero_one(index):
    for edge in (0.0, 0.5):
        betas = [0.9, 0.999]
        betas[index] = edge
        ref.Adam([nn.Parameter(torch.zeros(2))], betas=tuple(betas))
    betas = [0.9, 0.999]
    betas[index] = 1.0
    with pytest.raises(ValueError) as error:
        ref.Adam([nn.Parameter(torch.zeros(2))], betas=tuple(betas))
    assert str(error.value) == f"betas[{index}] must be in [0.0, 1.0), got 1.0"
