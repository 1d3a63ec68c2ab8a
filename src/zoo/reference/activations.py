"""Activation functions and their derivatives, written from their equations.

For a neuron ``net = sum_i w_i x_i + b`` the activation gives the output ``y = f(net)``;
backpropagation needs ``f'(z)`` at the pre-activation ``z``.

    sigmoid(x)    = 1 / (1 + e^-x)                          sigmoid'(x) = sigmoid(x) (1 - sigmoid(x))
    tanh(x)       = (e^x - e^-x) / (e^x + e^-x)             tanh'(x)    = 1 - tanh(x)^2
    relu(x)       = max(0, x)                               relu'(x)    = 1 if x > 0 else 0
    leaky_relu(x) = x if x > 0 else alpha x  (alpha ~ 0.01)  leaky'(x)   = 1 if x > 0 else alpha
    softmax(x)_i  = e^{x_i} / sum_j e^{x_j}
    gelu(x)       = x Phi(x) = x/2 (1 + erf(x / sqrt 2))    gelu'(x)    = Phi(x) + x phi(x)
    gelu_tanh(x)  = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (Hendrycks & Gimpel, 2016)

``Phi`` and ``phi`` are the standard normal CDF and density.

Numerical care (the formulas as written overflow in floating point):

- sigmoid and tanh only ever exponentiate non-positive numbers, so ``e^{...}`` stays
  in (0, 1] (``e^-x`` for ``x >= 0``, ``e^x`` for ``x < 0``);
- softmax subtracts ``max_j x_j`` first: ``softmax(x) = softmax(x - c)`` for any ``c``,
  and with ``c = max`` every exponent is <= 0, so 1000 does not become ``inf``;
- ``log_softmax(x) = (x - c) - log sum_j e^{x_j - c}`` for the cross-entropy.

The derivative of relu and leaky_relu at 0 is taken as that of the left side (0 and
alpha), as PyTorch does. The modules at the bottom are registered as ``*_ref``
activations in :mod:`zoo.layers.activations`, so ``model.activation=relu_ref`` trains an
MLP or LeNet through these functions (autograd differentiates them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715


def _split(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x where x >= 0 else 0, x where x < 0 else 0)``.

    Each branch of a two-sided formula then sees only the inputs it is chosen for, so the
    branch not taken never overflows (no ``inf``/``nan`` leaking into gradients), and
    autograd keeps slope 1 at ``x = 0`` (``clamp`` would give 0 there).
    """
    zero = torch.zeros_like(x)
    return torch.where(x >= 0, x, zero), torch.where(x < 0, x, zero)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + e^-x)``, without overflow for large ``|x|``."""
    pos, neg = _split(x)
    e = torch.exp(neg)  # e^x for x < 0
    return torch.where(x >= 0, 1 / (1 + torch.exp(-pos)), e / (1 + e))


def sigmoid_derivative(x: Tensor) -> Tensor:
    """``sigmoid'(x) = sigmoid(x) (1 - sigmoid(x))``."""
    s = sigmoid(x)
    return s * (1 - s)


def _tanh_nonneg(a: Tensor) -> Tensor:
    """``tanh(a)`` for ``a >= 0`` as ``(1 - e^{-2a}) / (1 + e^{-2a})`` (expm1: exact near 0)."""
    return -torch.expm1(-2 * a) / (1 + torch.exp(-2 * a))


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent ``(e^x - e^-x) / (e^x + e^-x)``, using ``tanh(-x) = -tanh(x)``."""
    pos, neg = _split(x)
    return torch.where(x >= 0, _tanh_nonneg(pos), -_tanh_nonneg(-neg))


def tanh_derivative(x: Tensor) -> Tensor:
    """``tanh'(x) = 1 - tanh(x)^2``."""
    return 1 - tanh(x) ** 2


def relu(x: Tensor) -> Tensor:
    """Rectified linear unit ``max(0, x)``."""
    return torch.where(x > 0, x, torch.zeros_like(x))


def relu_derivative(x: Tensor) -> Tensor:
    """``relu'(x)``: 1 where ``x > 0``, else 0."""
    return (x > 0).to(x.dtype)


def leaky_relu(x: Tensor, alpha: float = 0.01) -> Tensor:
    """``x`` for ``x > 0``, else ``alpha x`` (= ``max(alpha x, x)`` for ``alpha < 1``)."""
    return torch.where(x > 0, x, alpha * x)


def leaky_relu_derivative(x: Tensor, alpha: float = 0.01) -> Tensor:
    """1 where ``x > 0``, else ``alpha``."""
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, alpha))


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``e^{x_i} / sum_j e^{x_j}`` along ``dim``, computed as ``softmax(x - max x)``."""
    e = torch.exp(x - x.amax(dim, keepdim=True))  # every exponent <= 0
    return e / e.sum(dim, keepdim=True)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``log softmax(x)_i = (x_i - c) - log sum_j e^{x_j - c}`` with ``c = max_j x_j``."""
    shifted = x - x.amax(dim, keepdim=True)
    return shifted - torch.log(torch.exp(shifted).sum(dim, keepdim=True))


def softmax_backward(s: Tensor, grad: Tensor, dim: int = -1) -> Tensor:
    """Gradient w.r.t. the softmax input, given the output ``s`` and the gradient ``grad`` w.r.t. ``s``.

    The Jacobian is ``ds_i/dx_j = s_i (delta_ij - s_j)``; multiplied by ``grad`` this is
    ``s * (grad - sum_j grad_j s_j)``, without building the matrix.
    """
    return s * (grad - (grad * s).sum(dim, keepdim=True))


def gelu(x: Tensor) -> Tensor:
    """Exact GELU ``x Phi(x)``, ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``."""
    return 0.5 * x * (1 + torch.erf(x / _SQRT_2))


def gelu_derivative(x: Tensor) -> Tensor:
    """``gelu'(x) = Phi(x) + x phi(x)``, ``phi(x) = e^{-x^2/2} / sqrt(2 pi)``."""
    cdf = 0.5 * (1 + torch.erf(x / _SQRT_2))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU's tanh approximation ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    return 0.5 * x * (1 + tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_C * x**3)))


def gelu_tanh_derivative(x: Tensor) -> Tensor:
    """Derivative of :func:`gelu_tanh` by the product and chain rules."""
    t = tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_C * x**3))
    inner = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * x * x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner


def identity(x: Tensor) -> Tensor:
    """``f(x) = x`` (a linear output layer)."""
    return x


def identity_derivative(x: Tensor) -> Tensor:
    """``f'(x) = 1``."""
    return torch.ones_like(x)


# name -> (f, f'): the element-wise activations backpropagation can go through.
ELEMENTWISE = {
    "sigmoid": (sigmoid, sigmoid_derivative),
    "tanh": (tanh, tanh_derivative),
    "relu": (relu, relu_derivative),
    "leaky_relu": (leaky_relu, leaky_relu_derivative),
    "gelu": (gelu, gelu_derivative),
    "gelu_tanh": (gelu_tanh, gelu_tanh_derivative),
    "identity": (identity, identity_derivative),
}


class Sigmoid(nn.Module):
    """Module form of :func:`sigmoid`."""

    def forward(self, x: Tensor) -> Tensor:
        return sigmoid(x)


class Tanh(nn.Module):
    """Module form of :func:`tanh`."""

    def forward(self, x: Tensor) -> Tensor:
        return tanh(x)


class ReLU(nn.Module):
    """Module form of :func:`relu`."""

    def forward(self, x: Tensor) -> Tensor:
        return relu(x)


class LeakyReLU(nn.Module):
    """Module form of :func:`leaky_relu` with slope ``alpha`` for negative inputs."""

    def __init__(self, alpha: float = 0.01):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return leaky_relu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class GELU(nn.Module):
    """Module form of :func:`gelu` (``approximate="none"``) or :func:`gelu_tanh` (``"tanh"``)."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return gelu_tanh(x) if self.approximate == "tanh" else gelu(x)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softmax(nn.Module):
    """Module form of :func:`softmax` along ``dim``."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return softmax(x, self.dim)
