"""Parts shared by several model families."""

from zoo.layers.activations import ACTIVATIONS, make_activation

__all__ = ["ACTIVATIONS", "make_activation"]
