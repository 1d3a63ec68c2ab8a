"""zoo.reference.losses against PyTorch's losses, float64, including extreme logits."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import UnknownNameError
from zoo.tasks.losses import LOSSES
from zoo.reference import losses as Ls

TOL = {"rtol": 0.0, "atol": 1e-6}
EXTREME = torch.tensor([-1000.0, -50.0, -1.0, 0.0, 1e-3, 2.0, 50.0, 1000.0], dtype=torch.float64)


def _logits(scale=1.0):
    return torch.randn(6, 5, dtype=torch.float64) * scale


def test_mse_and_mae():
    pred, target = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(Ls.mse(pred, target), F.mse_loss(pred, target), **TOL)
    torch.testing.assert_close(Ls.mae(pred, target), F.l1_loss(pred, target), **TOL)


def test_binary_cross_entropy_from_probabilities_including_0_and_1():
    prob = torch.tensor([0.0, 1e-12, 0.3, 0.5, 0.9, 1.0, 1.0, 0.0], dtype=torch.float64)
    target = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    loss = Ls.binary_cross_entropy(prob, target)
    assert torch.isfinite(loss)  # log(0) is clamped at -100, as in PyTorch
    torch.testing.assert_close(loss, F.binary_cross_entropy(prob, target), **TOL)


def test_binary_cross_entropy_with_logits_is_stable_for_extreme_logits():
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    loss = Ls.binary_cross_entropy_with_logits(EXTREME, target)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(EXTREME, target), **TOL)
    naive = -(target * torch.log(torch.sigmoid(EXTREME)) + (1 - target) * torch.log(1 - torch.sigmoid(EXTREME))).mean()
    assert not torch.isfinite(naive)  # what the rewritten formula avoids
    # and with soft targets
    soft = torch.rand(8, dtype=torch.float64)
    torch.testing.assert_close(
        Ls.binary_cross_entropy_with_logits(EXTREME, soft), F.binary_cross_entropy_with_logits(EXTREME, soft), **TOL
    )


@pytest.mark.parametrize("scale", [1.0, 1000.0])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_categorical_cross_entropy_with_indices_and_probabilities(scale, smoothing):
    logits = _logits(scale)
    idx = torch.randint(0, 5, (6,))
    expected = F.cross_entropy(logits, idx, label_smoothing=smoothing)
    torch.testing.assert_close(Ls.cross_entropy(logits, idx, smoothing), expected, **TOL)
    probs = torch.softmax(torch.randn(6, 5, dtype=torch.float64), dim=1)
    expected = F.cross_entropy(logits, probs, label_smoothing=smoothing)
    torch.testing.assert_close(Ls.cross_entropy(logits, probs, smoothing), expected, **TOL)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_multi_class_hinge_equals_multi_margin_loss(scale):
    logits, target = _logits(scale), torch.randint(0, 5, (6,))
    torch.testing.assert_close(Ls.multi_margin(logits, target), F.multi_margin_loss(logits, target), **TOL)
    torch.testing.assert_close(
        Ls.multi_margin(logits, target, margin=0.3), F.multi_margin_loss(logits, target, margin=0.3), **TOL
    )


def test_binary_hinge_is_two_class_multi_margin_loss():
    labels = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    # a score z for labels {-1, 1} is the pair of logits (0, z) for classes {0, 1}; MultiMarginLoss divides by K = 2
    two_class = torch.stack([torch.zeros_like(EXTREME), EXTREME], dim=1)
    expected = 2 * F.multi_margin_loss(two_class, (labels > 0).long())
    torch.testing.assert_close(Ls.hinge(EXTREME, labels), expected, **TOL)
    assert Ls.hinge(torch.tensor([2.0, -3.0]), torch.tensor([1.0, -1.0])) == 0  # beyond the margin: no loss


def test_kl_divergence_equals_batchmean_kl_div():
    log_q = F.log_softmax(_logits(30.0), dim=1)
    p = torch.softmax(torch.randn(6, 5, dtype=torch.float64), dim=1)
    p[0] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # zeros: 0 log 0 = 0
    expected = F.kl_div(log_q, p, reduction="batchmean")
    torch.testing.assert_close(Ls.kl_divergence(log_q, p), expected, **TOL)
    assert Ls.kl_divergence(log_q, log_q.exp()).abs() < 1e-12  # KL(Q || Q) = 0


def test_registered_losses_and_label_smoothing():
    assert {"cross_entropy", "cross_entropy_ref", "multi_margin", "hinge_ref", "mse_onehot"} <= set(LOSSES.names())
    logits, target = _logits(), torch.randint(0, 5, (6,))
    assert isinstance(LOSSES.build("cross_entropy"), nn.CrossEntropyLoss)
    torch.testing.assert_close(
        LOSSES.build("cross_entropy_ref", label_smoothing=0.1)(logits, target),
        LOSSES.build("cross_entropy", label_smoothing=0.1)(logits, target), **TOL,
    )  # fmt: skip
    torch.testing.assert_close(LOSSES.build("hinge_ref")(logits, target), LOSSES.build("multi_margin")(logits, target))
    one_hot = F.one_hot(target, 5).double()
    torch.testing.assert_close(LOSSES.build("mse_onehot")(logits, target), F.mse_loss(logits.softmax(1), one_hot))
    with pytest.raises(ValueError, match="no label smoothing"):
        LOSSES.build("hinge_ref", label_smoothing=0.1)
    with pytest.raises(UnknownNameError, match="Did you mean: hinge_ref"):
        LOSSES.build("hinge")


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_ref", "multi_margin", "hinge_ref", "mse_onehot"])
def test_every_registered_loss_gives_gradients_that_lower_it(name):
    criterion = LOSSES.build(name)
    logits = torch.randn(8, 4, requires_grad=True)
    target = torch.randint(0, 4, (8,))
    loss = criterion(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    assert criterion(logits.detach() - 0.1 * grad, target) < loss


# Values and gradients against PyTorch at the edge points where hand-written formulas go
# wrong: kinks (a logit or a margin exactly at 0, zero residuals), probabilities of exactly
# 0 and 1 (with targets that match and that do not), very large logits and ties.
def _pairs():
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 1e-12, 1 - 1e-7], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    z = torch.tensor([0.0, 0.0, 800.0, -800.0, 40.0, -40.0, 1e-3], dtype=torch.float64)
    yz = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 1.0, 0.0], dtype=torch.float64)
    tied = torch.zeros(3, 4, dtype=torch.float64)
    big = torch.tensor([[1000.0, -1000.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 2.0, 2.0, -5.0]], dtype=torch.float64)
    classes = torch.tensor([0, 2, 1])
    at_margin = torch.tensor([[1.0, 0.0, -3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)  # z_c - z_j = 1 = margin, and ties
    probs = torch.tensor([[0.0, 1.0, 0.0], [0.25, 0.25, 0.5]], dtype=torch.float64)
    return {
        "mse": (Ls.mse, F.mse_loss, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)),
        "mae at zero residuals": (Ls.mae, F.l1_loss, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)),
        "bce at 0 and 1": (Ls.binary_cross_entropy, F.binary_cross_entropy, p, y),
        "bce with logits at 0 and large": (Ls.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, z, yz),
        "cross entropy, ties": (Ls.cross_entropy, F.cross_entropy, tied, classes),
        "cross entropy, large logits": (Ls.cross_entropy, F.cross_entropy, big, classes),
        "cross entropy, soft targets with zeros": (Ls.cross_entropy, F.cross_entropy, big[:2, :3], probs),
        "multi margin at the margin": (Ls.multi_margin, F.multi_margin_loss, at_margin, torch.tensor([0, 1])),
        "kl with zero targets": (Ls.kl_divergence, partial(F.kl_div, reduction="batchmean"), torch.log_softmax(big[:2, :3], 1), probs),
    }


@pytest.mark.parametrize("case", list(_pairs()))
def test_values_and_gradients_equal_torch_at_edge_points(case):
    ours, theirs, x, target = _pairs()[case]
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    value_ours, value_theirs = ours(a, target), theirs(b, target)
    torch.testing.assert_close(value_ours, value_theirs, rtol=1e-9, atol=1e-9)
    value_ours.backward()
    value_theirs.backward()
    assert torch.isfinite(a.grad).all(), a.grad
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)
