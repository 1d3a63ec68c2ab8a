"""zoo.reference.activations against torch, and their derivatives against autograd."""

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.layers import make_activation
from zoo.reference import activations as A

# Spans saturation on both sides, exact zero and values near it.
X = torch.cat([torch.linspace(-40, 40, 801, dtype=torch.float64), torch.tensor([0.0, 1e-12, -1e-12, 700.0, -700.0])])

TORCH = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "identity": lambda x: x,
}


@pytest.mark.parametrize("name", sorted(A.ELEMENTWISE))
def test_activation_equals_torch(name):
    f, _ = A.ELEMENTWISE[name]
    y = f(X)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, TORCH[name](X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(A.ELEMENTWISE))
def test_derivative_equals_autograd_of_torch(name):
    f, df = A.ELEMENTWISE[name]
    x = X.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(TORCH[name](x).sum(), x)
    torch.testing.assert_close(df(X), expected, rtol=1e-10, atol=1e-12)
    # autograd through the reference function itself agrees too, also at exactly x = 0
    (through_ref,) = torch.autograd.grad(f(x).sum(), x)
    torch.testing.assert_close(through_ref, expected, rtol=1e-10, atol=1e-12)


def test_leaky_relu_slope_is_a_parameter():
    x = torch.tensor([-2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(A.leaky_relu(x, 0.2), F.leaky_relu(x, 0.2))
    torch.testing.assert_close(A.leaky_relu_derivative(x, 0.2), torch.tensor([0.2, 1.0], dtype=torch.float64))


def test_softmax_equals_torch_and_survives_large_inputs():
    x = torch.randn(5, 7, dtype=torch.float64) * 3
    torch.testing.assert_close(A.softmax(x, dim=1), F.softmax(x, dim=1))
    torch.testing.assert_close(A.softmax(x, dim=0), F.softmax(x, dim=0))
    big = torch.tensor([[1000.0, 999.0, -1000.0], [1e4, 1e4, 1e4]], dtype=torch.float64)
    s = A.softmax(big, dim=1)
    assert torch.isfinite(s).all()
    torch.testing.assert_close(s, F.softmax(big, dim=1))
    torch.testing.assert_close(s.sum(1), torch.ones(2, dtype=torch.float64))
    naive = torch.exp(big) / torch.exp(big).sum(1, keepdim=True)
    assert torch.isnan(naive).any()  # what subtracting the max avoids
    torch.testing.assert_close(A.log_softmax(big, dim=1), F.log_softmax(big, dim=1))


def test_softmax_backward_is_the_jacobian_vector_product():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(4, 6, dtype=torch.float64)
    (expected,) = torch.autograd.grad(F.softmax(x, dim=1), x, grad)
    torch.testing.assert_close(A.softmax_backward(A.softmax(x.detach(), dim=1), grad, dim=1), expected)


def test_gelu_exact_and_tanh_approximation_differ():
    # the approximation is close but not the same function, so both are needed
    gap = (A.gelu(X) - A.gelu_tanh(X)).abs().max()
    assert 1e-5 < gap < 1e-3


@pytest.mark.parametrize(
    "name, reference",
    [("sigmoid_ref", torch.sigmoid), ("tanh_ref", torch.tanh), ("relu_ref", torch.relu),
     ("leaky_relu_ref", F.leaky_relu), ("gelu_ref", F.gelu),
     ("gelu_tanh_ref", lambda x: F.gelu(x, approximate="tanh"))],
)  # fmt: skip
def test_ref_modules_are_registered_activations(name, reference):
    module = make_activation(name)
    assert type(module).__module__ == "zoo.reference.activations"
    torch.testing.assert_close(module(X), reference(X))


def test_models_train_through_reference_activations():
    model = zoo.get_model("mlp", num_classes=3, in_channels=1, image_size=8, hidden_sizes=[16], activation="gelu_ref")
    assert isinstance(model.features[1][1], A.GELU)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    lenet = zoo.get_model("lenet5", activation="tanh_ref")
    assert any(isinstance(m, A.Tanh) for m in lenet.modules())
    assert lenet(torch.randn(2, 1, 32, 32)).shape == (2, 10)
