"""The hand-written backward pass against autograd and finite differences."""

import pytest
import torch
import torch.nn.functional as F

from zoo.reference.backprop import BackpropMLP, MLPFunction, mlp_backward, mlp_forward


@pytest.mark.parametrize(
    "activation, output_activation",
    [("sigmoid", "identity"), ("tanh", "sigmoid"), ("relu", "identity"), ("gelu", "tanh")],
)
def test_manual_gradients_equal_autograd(activation, output_activation):
    model = BackpropMLP([5, 7, 6, 3], activation, output_activation).double()
    x, target = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)

    F.mse_loss(model(x), target).backward()
    autograd = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    # L = mean (a - y)^2 over all n elements, so grad_a L = 2 (a - y) / n
    model.backprop(x, lambda out: 2 * (out - target) / out.numel())
    manual = [p.grad for p in model.parameters()]
    assert len(manual) == 6
    for a, m in zip(autograd, manual):
        assert torch.allclose(a, m, rtol=1e-10, atol=1e-12)


def test_input_gradient_equals_autograd():
    weights = [torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)]
    biases = [torch.randn(4, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    out, cache = mlp_forward(x, weights, biases, "tanh")
    grad_out = torch.randn_like(out)
    (expected,) = torch.autograd.grad(out, x, grad_out)
    grad_x, _, _ = mlp_backward(cache, grad_out.detach(), weights, "tanh")
    assert torch.allclose(grad_x, expected)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "gelu_tanh"])
def test_gradcheck_of_the_hand_written_backward(activation):
    sizes = [3, 4, 2]
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += [torch.randn(n_out, n_in, dtype=torch.float64, requires_grad=True),
                   torch.randn(n_out, dtype=torch.float64, requires_grad=True)]  # fmt: skip
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: MLPFunction.apply(x, activation, "sigmoid", *p), (x, *params))


def test_forward_manual_matches_forward_and_trains_xor():
    torch.manual_seed(0)
    model = BackpropMLP([2, 8, 1], activation="tanh", output_activation="sigmoid").double()
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)
    assert torch.equal(model.forward_manual(x), model(x))
    for _ in range(2000):  # plain gradient descent, gradients from the hand-written pass only
        model.backprop(x, lambda out: 2 * (out - y) / out.numel())
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
    assert torch.equal((model(x) > 0.5).double(), y)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        BackpropMLP([2, 2], activation="swish")
