"""Penalties, dropout and normalization layers against PyTorch."""

import pytest
import torch
from torch import nn

from zoo.reference import regularization as R


def _sgd_step(weight_decay, penalty=None):
    torch.manual_seed(1)
    net = nn.Linear(4, 3).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=weight_decay)
    loss = nn.functional.mse_loss(net(x), y)
    if penalty is not None:
        loss = loss + penalty(net.parameters())
    loss.backward()
    opt.step()
    return [p.detach() for p in net.parameters()]


def test_l2_penalty_with_a_half_is_sgd_weight_decay():
    lam = 0.05
    with_penalty = _sgd_step(0.0, lambda ps: R.l2_penalty(ps, lam))
    with_decay = _sgd_step(lam)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(with_penalty, with_decay))
    # the lecture's lambda * sum w^2 (no 1/2) is weight_decay = 2 lambda
    lecture = _sgd_step(0.0, lambda ps: 2 * R.l2_penalty(ps, lam))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(lecture, _sgd_step(2 * lam)))
    assert not torch.allclose(lecture[0], with_decay[0])


def test_penalty_values_and_l1_gradient():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0]], requires_grad=True)
    b = torch.tensor([-3.0])
    assert R.l1_penalty([w, b], 0.1).item() == pytest.approx(0.1 * 6.5)
    assert R.l2_penalty([w, b], 0.1).item() == pytest.approx(0.05 * (1 + 4 + 0.25 + 9))
    (grad,) = torch.autograd.grad(R.l1_penalty([w], 0.1), w)
    assert torch.equal(grad, 0.1 * torch.sign(w.detach()))


def test_dropout_keeps_the_expectation_and_drops_a_fraction_p():
    x = torch.full((200_000,), 3.0)
    gen = torch.Generator().manual_seed(123)
    for p in (0.2, 0.5):
        y = R.dropout(x, p, generator=gen)
        assert (y == 0).float().mean().item() == pytest.approx(p, abs=0.005)
        assert y.mean().item() == pytest.approx(3.0, rel=0.01)  # E[y] = x thanks to 1 / (1 - p)
        assert set(y.unique().tolist()) == {0.0, 3.0 / (1 - p)}


def test_dropout_module_is_identity_in_eval_and_edge_probabilities():
    x = torch.randn(4, 10)
    layer = R.Dropout(0.5)
    assert not torch.equal(layer(x), x)
    layer.eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(R.dropout(x, 0.0), x)
    assert torch.equal(R.dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        R.Dropout(1.5)


def test_batchnorm2d_equals_torch_in_train_and_eval_with_running_statistics():
    ours, theirs = R.BatchNorm2d(3, momentum=0.2).double(), nn.BatchNorm2d(3, momentum=0.2).double()
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-1, 1)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same parameter and buffer names
    for step in range(4):
        x = torch.randn(5, 3, 4, 6, dtype=torch.float64) * (step + 1) + step
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out, expected = ours(x1), theirs(x2)
        torch.testing.assert_close(out, expected)
        grad = torch.randn_like(out)
        torch.testing.assert_close(torch.autograd.grad(out, x1, grad)[0], torch.autograd.grad(expected, x2, grad)[0])
    # the running variance is unbiased although normalization uses the biased one
    assert not torch.allclose(theirs.running_var, torch.ones(3, dtype=torch.float64))
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, msg=key)
    assert ours.num_batches_tracked.item() == 4
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))
    theirs.load_state_dict(ours.state_dict(), strict=True)  # and back


def test_batchnorm2d_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value"):
        R.BatchNorm2d(2)(torch.randn(1, 2, 1, 1))


@pytest.mark.parametrize("shape", [8, (4, 5)])
def test_layernorm_equals_torch(shape):
    ours, theirs = R.LayerNorm(shape).double(), nn.LayerNorm(shape).double()
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    tail = (shape,) if isinstance(shape, int) else shape
    x = torch.randn(3, 2, *tail, dtype=torch.float64) * 5 + 2
    torch.testing.assert_close(ours(x), theirs(x))
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))  # no running statistics: same in eval
    plain = R.LayerNorm(shape, elementwise_affine=False)
    torch.testing.assert_close(plain(x.float()), nn.LayerNorm(shape, elementwise_affine=False)(x.float()))
    assert list(plain.parameters()) == []
