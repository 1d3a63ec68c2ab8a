"""Backpropagation written out by hand (no autograd) for a multi-layer perceptron.

D. E. Rumelhart, G. E. Hinton, R. J. Williams, "Learning representations by
back-propagating errors", Nature 323, 533-536, 1986. https://doi.org/10.1038/323533a0

Forward pass, for layers l = 1..L with a^0 = x:

    z^l = W^l a^{l-1} + b^l
    a^l = f_l(z^l)            (f_l = the hidden activation; f_L = the output activation)

Backward pass, given the gradient of the loss w.r.t. the output, grad_a L:

    delta^L  = grad_a L * f_L'(z^L)                       (* is the element-wise product)
    delta^l  = ((W^{l+1})^T delta^{l+1}) * f_l'(z^l)
    dL/dW^l  = delta^l (a^{l-1})^T
    dL/db^l  = delta^l
    dL/dx    = (W^1)^T delta^1

The code holds a batch as rows, so ``z^l`` is ``a^{l-1} @ W^T + b`` of shape (B, n_l); the
outer product ``delta^l (a^{l-1})^T`` summed over the batch is ``delta^T @ a^{l-1}`` and
``dL/db^l`` is ``delta^l`` summed over the batch. ``W^l`` has the shape of
``nn.Linear.weight``: (n_l, n_{l-1}).

:class:`MLPFunction` wraps the pair as a ``torch.autograd.Function`` so that
``torch.autograd.gradcheck`` can test the hand-written backward against finite differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from zoo.reference.activations import ELEMENTWISE

# One layer's forward values kept for the backward pass: (a^{l-1}, z^l).
Cache = list[tuple[Tensor, Tensor]]


def _activation(name: str):
    if name not in ELEMENTWISE:
        raise ValueError(f"activation must be one of {sorted(ELEMENTWISE)}, got {name!r}")
    return ELEMENTWISE[name]


def mlp_forward(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str = "sigmoid",
    output_activation: str = "identity",
) -> tuple[Tensor, Cache]:
    """The forward pass ``a^l = f(W^l a^{l-1} + b^l)``.

    Args:
        x: inputs (B, n_0).
        weights: ``W^1..W^L``, each (n_l, n_{l-1}).
        biases: ``b^1..b^L``, each (n_l,).
        activation: element-wise activation of the hidden layers (a name in ``ELEMENTWISE``).
        output_activation: activation of the last layer.

    Returns:
        The output ``a^L`` (B, n_L) and the cache of ``(a^{l-1}, z^l)`` per layer.
    """
    f, _ = _activation(activation)
    f_out, _ = _activation(output_activation)
    cache: Cache = []
    a = x
    for i, (w, b) in enumerate(zip(weights, biases)):  # layer l = i + 1
        z = a @ w.T + b  # (B, n_l)
        cache.append((a, z))
        a = f_out(z) if i == len(weights) - 1 else f(z)
    return a, cache


def mlp_backward(
    cache: Cache,
    grad_output: Tensor,
    weights: Sequence[Tensor],
    activation: str = "sigmoid",
    output_activation: str = "identity",
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The backward pass: the deltas from the output layer down to the input.

    Args:
        cache: what :func:`mlp_forward` returned next to the output.
        grad_output: ``grad_a L``, the gradient of the loss w.r.t. the output ``a^L`` (B, n_L).
        weights: the same ``W^1..W^L`` as in the forward pass.
        activation: hidden activation used in the forward pass.
        output_activation: output activation used in the forward pass.

    Returns:
        ``(dL/dx, [dL/dW^1..dL/dW^L], [dL/db^1..dL/db^L])``.
    """
    _, df = _activation(activation)
    _, df_out = _activation(output_activation)
    num_layers = len(weights)
    grad_w: list[Tensor] = []  # filled from layer L down to layer 1
    grad_b: list[Tensor] = []
    delta = grad_output * df_out(cache[-1][1])  # delta^L (B, n_L)
    for i in reversed(range(num_layers)):  # layer l = i + 1
        a_prev, z = cache[i]
        if i < num_layers - 1:
            delta = (delta @ weights[i + 1]) * df(z)  # ((W^{l+1})^T delta^{l+1}) * f'(z^l)
        grad_w.append(delta.T @ a_prev)  # delta^l (a^{l-1})^T, summed over the batch
        grad_b.append(delta.sum(0))
    grad_x = delta @ weights[0]  # (W^1)^T delta^1
    return grad_x, grad_w[::-1], grad_b[::-1]


class MLPFunction(torch.autograd.Function):
    """``torch.autograd.Function`` whose backward is :func:`mlp_backward`.

    Call as ``MLPFunction.apply(x, activation, output_activation, W1, b1, W2, b2, ...)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, activation: str, output_activation: str, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        out, cache = mlp_forward(x, weights, biases, activation, output_activation)
        ctx.activation, ctx.output_activation = activation, output_activation
        ctx.num_layers = len(weights)
        ctx.save_for_backward(*weights, *(t for pair in cache for t in pair))
        return out

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        saved = ctx.saved_tensors
        weights = saved[: ctx.num_layers]
        flat = saved[ctx.num_layers :]
        cache = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        grad_x, grad_w, grad_b = mlp_backward(cache, grad_output, weights, ctx.activation, ctx.output_activation)
        grads = [g for pair in zip(grad_w, grad_b) for g in pair]
        return grad_x, None, None, *grads


class BackpropMLP(nn.Module):
    """An MLP on vectors whose gradients can come from :func:`mlp_backward` instead of autograd.

    Args:
        sizes: layer widths ``(n_0, n_1, ..., n_L)``; ``n_0`` is the input size.
        activation: hidden activation (a name in ``zoo.reference.activations.ELEMENTWISE``).
        output_activation: activation of the output layer (``"identity"``: linear output).
    """

    def __init__(self, sizes: Sequence[int], activation: str = "sigmoid", output_activation: str = "identity"):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and at least one layer width, got {list(sizes)}")
        _activation(activation)  # fail early on an unknown name
        _activation(output_activation)
        self.activation, self.output_activation = activation, output_activation
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))

    def _params(self) -> tuple[list[Tensor], list[Tensor]]:
        return [m.weight for m in self.layers], [m.bias for m in self.layers]

    def forward(self, x: Tensor) -> Tensor:
        """``a^L`` for inputs ``x`` (B, n_0); differentiable by autograd like any module."""
        weights, biases = self._params()
        return mlp_forward(x, weights, biases, self.activation, self.output_activation)[0]

    def forward_manual(self, x: Tensor) -> Tensor:
        """The same output, but with :func:`mlp_backward` as the backward pass."""
        weights, biases = self._params()
        params = [t for pair in zip(weights, biases) for t in pair]
        return MLPFunction.apply(x, self.activation, self.output_activation, *params)

    @torch.no_grad()
    def backprop(self, x: Tensor, grad_loss: Callable[[Tensor], Tensor]) -> Tensor:
        """Forward, then the hand-written backward; fills each parameter's ``.grad``.

        Args:
            x: inputs (B, n_0).
            grad_loss: maps the output ``a^L`` to ``grad_a L``.

        Returns:
            The output ``a^L``.
        """
        weights, biases = self._params()
        out, cache = mlp_forward(x, weights, biases, self.activation, self.output_activation)
        _, grad_w, grad_b = mlp_backward(cache, grad_loss(out), weights, self.activation, self.output_activation)
        for layer, gw, gb in zip(self.layers, grad_w, grad_b):
            layer.weight.grad, layer.bias.grad = gw, gb
        return out
