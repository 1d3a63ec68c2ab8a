"""The artificial neuron and Rosenblatt's perceptron.

W. S. McCulloch, W. Pitts, "A logical calculus of the ideas immanent in nervous
activity", Bull. Math. Biophys. 5, 115-133, 1943. https://doi.org/10.1007/BF02478259
F. Rosenblatt, "The perceptron: a probabilistic model for information storage and
organization in the brain", Psychological Review 65(6), 386-408, 1958.
https://doi.org/10.1037/h0042519

Neuron: a weighted sum of the inputs plus a bias, through an activation ``f``:

    net = sum_i w_i x_i + b = w^T x + b,        y = f(net)

Perceptron: the neuron with a step activation,

    y_hat = 1 if net >= 0 else 0

(the lecture's threshold ``theta`` is folded into the bias: ``b = -theta``), trained one
example at a time with the delta rule, for targets ``y`` in {0, 1}:

    w_i <- w_i + eta (y - y_hat) x_i,      b <- b + eta (y - y_hat)

The perceptron convergence theorem (Novikoff, 1962) guarantees an epoch without errors
when the two classes are linearly separable (AND, OR); for XOR no line separates them,
so the weights cycle forever. A hidden layer (an MLP, :mod:`zoo.models.mlp`) solves it.

This is not an image model and is not in the model registry: it is a plain class over
feature vectors, kept here next to the MLP it leads to.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def step(net: Tensor) -> Tensor:
    """Heaviside step: 1 where ``net >= 0``, else 0."""
    return (net >= 0).to(net.dtype)


class Neuron:
    """One artificial neuron ``y = f(w^T x + b)``.

    Args:
        weights: ``w`` (n,).
        bias: ``b``.
        activation: ``f``, applied element-wise to ``net``.
    """

    def __init__(self, weights: Tensor, bias: float | Tensor = 0.0, activation: Callable[[Tensor], Tensor] = step):
        self.weights = weights
        self.bias = torch.as_tensor(bias, dtype=weights.dtype)
        self.activation = activation

    def net(self, x: Tensor) -> Tensor:
        """``net = sum_i w_i x_i + b`` for one input (n,) or a batch (B, n)."""
        return x @ self.weights + self.bias

    def __call__(self, x: Tensor) -> Tensor:
        """``y = f(net)``."""
        return self.activation(self.net(x))


class Perceptron(Neuron):
    """Rosenblatt's perceptron: a step neuron learned with the delta rule.

    Args:
        num_inputs: size ``n`` of the input vectors.
        dtype: dtype of the weights (zeros at the start, so training is deterministic).
    """

    def __init__(self, num_inputs: int, dtype: torch.dtype = torch.float64):
        super().__init__(torch.zeros(num_inputs, dtype=dtype), 0.0, step)

    def predict(self, x: Tensor) -> Tensor:
        """Class 0 or 1 for each row of ``x`` (B, n)."""
        return self(x.to(self.weights.dtype))

    def fit(self, x: Tensor, y: Tensor, epochs: int = 100, lr: float = 1.0) -> bool:
        """Train with the delta rule, one example at a time, in the given order.

        Args:
            x: inputs (B, n).
            y: targets in {0, 1} (B,).
            epochs: maximum passes over the data.
            lr: learning rate ``eta``.

        Returns:
            Whether it converged: an epoch went by without a single error.
        """
        x, y = x.to(self.weights.dtype), y.to(self.weights.dtype)
        for _ in range(epochs):
            errors = 0
            for xi, yi in zip(x, y):
                error = yi - self(xi)  # y - y_hat, in {-1, 0, 1}
                if error != 0:
                    self.weights = self.weights + lr * error * xi  # w_i <- w_i + eta (y - y_hat) x_i
                    self.bias = self.bias + lr * error
                    errors += 1
            if errors == 0:
                return True
        return False
