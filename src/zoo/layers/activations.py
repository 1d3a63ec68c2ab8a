"""Activation functions selectable by name (``model.activation=relu``).

The ``*_ref`` names are the reference implementations of :mod:`zoo.reference.activations`,
written from their equations (``model.activation=relu_ref``).
"""

from __future__ import annotations

from torch import nn

from zoo.reference import activations as ref
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

ACTIVATIONS.register("relu_ref")(ref.ReLU)
ACTIVATIONS.register("tanh_ref")(ref.Tanh)
ACTIVATIONS.register("sigmoid_ref")(ref.Sigmoid)
ACTIVATIONS.register("leaky_relu_ref")(lambda: ref.LeakyReLU(0.01))
ACTIVATIONS.register("gelu_ref")(ref.GELU)
ACTIVATIONS.register("gelu_tanh_ref")(lambda: ref.GELU(approximate="tanh"))


def make_activation(name: str) -> nn.Module:
    """A new activation module for ``name``; an unknown name lists the choices."""
    return ACTIVATIONS.build(name)
