"""Every name that promises this project's reference code runs it, not PyTorch's.

``optim=sgd_ref``, ``loss=hinge_ref``, ``model.activation=relu_ref``: a value test alone
cannot tell, since PyTorch's own classes give the same values. Here the object each name
builds must come from :mod:`zoo.reference`, and every ``*_ref`` name is checked.
"""

import pytest
import torch

from zoo.layers.activations import ACTIVATIONS
from zoo.optim import OPTIMIZERS
from zoo.tasks.losses import LOSSES

REFERENCE_NAMES = {
    "optimizer": (OPTIMIZERS, ["sgd_ref", "momentum_ref", "rmsprop_ref", "adam_ref"]),
    "loss": (LOSSES, ["cross_entropy_ref", "hinge_ref", "mse_onehot"]),
    "activation": (ACTIVATIONS, ["relu_ref", "tanh_ref", "sigmoid_ref", "leaky_relu_ref", "gelu_ref", "gelu_tanh_ref"]),
}


def _built(kind: str, name: str) -> object:
    registry, _ = REFERENCE_NAMES[kind]
    if kind == "optimizer":
        return registry.build(name, params=[torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    return registry.build(name)


@pytest.mark.parametrize("kind", list(REFERENCE_NAMES))
def test_every_ref_name_is_listed_here(kind):
    registry, names = REFERENCE_NAMES[kind]
    assert {n for n in registry.names() if n.endswith("_ref")} <= set(names)


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, (_, names) in REFERENCE_NAMES.items() for n in names])
def test_the_name_builds_this_projects_reference_code(kind, name):
    built = _built(kind, name)
    module = type(built).__module__
    assert module.startswith("zoo.reference."), f"{kind} {name} builds {type(built).__qualname__} from {module}"
    assert not module.startswith("torch")
