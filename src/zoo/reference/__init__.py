"""The lecture's fundamentals as reference code: each function is written from its
equation and proven equal to PyTorch's own, in values and gradients.

- :mod:`zoo.reference.activations`: sigmoid, tanh, ReLU, leaky ReLU, softmax, GELU and derivatives;
- :mod:`zoo.reference.backprop`: an MLP whose backward pass is written by hand;
- :mod:`zoo.reference.losses`: MSE, MAE, binary/categorical cross-entropy, hinge, KL;
- :mod:`zoo.reference.regularization`: L1/L2 penalties, dropout, batch and layer normalization;
- :mod:`zoo.reference.conv`: conv arithmetic, convolution and pooling;
- :mod:`zoo.reference.optim`: SGD, momentum, RMSProp, Adam;
- :mod:`zoo.reference.perceptron`: the neuron, Rosenblatt's perceptron and the delta rule.

This package knows nothing of training: the training code registers what it can run by
name (``model.activation=relu_ref`` in :mod:`zoo.layers.activations`, ``optim=adam_ref``
in :mod:`zoo.optim.factory`, ``loss=cross_entropy_ref`` in :mod:`zoo.tasks.losses`).
"""

from zoo.reference import activations, backprop, conv, losses, optim, perceptron, regularization

__all__ = ["activations", "backprop", "conv", "losses", "optim", "perceptron", "regularization"]
