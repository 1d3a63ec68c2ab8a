"""Activation functions selectable by name (``model.activation=relu``)."""

from __future__ import annotations

from torch import nn

from zoo.registry import Registry

ACTIVATIONS = Registry("activation")

ACTIVATIONS.register("relu")(lambda: nn.ReLU(inplace=True))
ACTIVATIONS.register("tanh")(nn.Tanh)
ACTIVATIONS.register("sigmoid")(nn.Sigmoid)
ACTIVATIONS.register("leaky_relu")(lambda: nn.LeakyReLU(0.01, inplace=True))
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("gelu_tanh")(lambda: nn.GELU(approximate="tanh"))
ACTIVATIONS.register("silu")(lambda: nn.SiLU(inplace=True))
ACTIVATIONS.register("identity")(nn.Identity)


def make_activation(name: str) -> nn.Module:
    """A new activation module for ``name``; an unknown name lists the choices."""
    return ACTIVATIONS.build(name)
