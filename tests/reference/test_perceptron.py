"""The neuron and Rosenblatt's perceptron: linearly separable gates yes, XOR no (an MLP yes)."""

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.reference.perceptron import Neuron, Perceptron, step

X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
GATES = {"AND": [0, 0, 0, 1], "OR": [0, 1, 1, 1], "XOR": [0, 1, 1, 0]}


def test_neuron_computes_activation_of_the_weighted_sum():
    neuron = Neuron(torch.tensor([0.2, 0.4, 0.7]), bias=1.0, activation=torch.sigmoid)
    x = torch.tensor([1.0, 2.0, 3.0])
    assert neuron.net(x).item() == pytest.approx(0.2 + 0.8 + 2.1 + 1.0)
    assert neuron(x).item() == pytest.approx(1 / (1 + torch.exp(torch.tensor(-4.1)).item()))
    assert step(torch.tensor([-0.5, 0.0, 2.0])).tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("gate", ["AND", "OR"])
def test_perceptron_learns_linearly_separable_gates(gate):
    y = torch.tensor(GATES[gate])
    perceptron = Perceptron(2)
    assert perceptron.predict(X).tolist() != y.tolist()  # not right by accident at the start
    assert perceptron.fit(X, y, epochs=100, lr=1.0)
    assert perceptron.predict(X).tolist() == y.tolist()


def test_delta_rule_update_by_hand():
    perceptron = Perceptron(2)
    perceptron.fit(X[3:], torch.tensor([0]), epochs=1, lr=0.5)  # y_hat = step(0) = 1, y = 0
    assert perceptron.weights.tolist() == [-0.5, -0.5] and perceptron.bias.item() == -0.5


def test_perceptron_cannot_learn_xor():
    y = torch.tensor(GATES["XOR"])
    perceptron = Perceptron(2)
    assert not perceptron.fit(X, y, epochs=100, lr=1.0)
    assert perceptron.predict(X).tolist() != y.tolist()


def test_a_two_layer_mlp_learns_xor(one_thread):
    torch.manual_seed(0)
    model = zoo.get_model("mlp", num_classes=2, in_channels=2, image_size=1, hidden_sizes=[8], activation="tanh")
    images = X.view(4, 2, 1, 1)  # the zoo's MLP takes images; XOR's two inputs are two 1x1 channels
    y = torch.tensor(GATES["XOR"])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(images), y).backward()
        optimizer.step()
    assert model(images).argmax(1).tolist() == y.tolist()
