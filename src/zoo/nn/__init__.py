"""The fundamentals as reference code: each function is written from its equation and
tested against PyTorch's own.

- :mod:`zoo.nn.activations`: sigmoid, tanh, ReLU, leaky ReLU, softmax, GELU and derivatives;
- :mod:`zoo.nn.backprop`: an MLP whose backward pass is written by hand;
- :mod:`zoo.nn.losses`: MSE, MAE, binary/categorical cross-entropy, hinge, KL; :data:`LOSSES`;
- :mod:`zoo.nn.regularization`: L1/L2 penalties, dropout, batch and layer normalization;
- :mod:`zoo.nn.conv`: conv arithmetic, convolution and pooling.

The optimizers (SGD, momentum, RMSProp, Adam) are in :mod:`zoo.optim.reference`.
This package imports nothing from :mod:`zoo.layers` (which registers the activations
found here), so either can be imported first.
"""

from zoo.nn import activations, backprop, conv, losses, regularization
from zoo.nn.losses import LOSSES

__all__ = ["LOSSES", "activations", "backprop", "conv", "losses", "regularization"]
