import copy

import pytest
import torch
import torch.nn.functional as F

from zoo import get_model
from zoo.models.lenet import C3_TABLE, PartialConv2d
from zoo.bench.profiling import count_macs, count_params


def test_lenet5_parameter_counts_follow_the_paper():
    # C1 6*(25+1) + C3 (Table I: 60 kernels of 25 + 16 biases) + C5 120*(16*25+1)
    # + F6 84*(120+1) + output 10*(84+1)
    c1, c3_partial, c5, f6, out = 156, 60 * 25 + 16, 48120, 10164, 850
    assert c3_partial == 1516  # the figure given in the paper
    assert count_params(get_model("lenet5")) == c1 + c3_partial + c5 + f6 + out
    c3_full = 16 * (6 * 25 + 1)
    assert count_params(get_model("lenet5", c3_table="full")) == c1 + c3_full + c5 + f6 + out


def test_c3_table_is_table_one_of_the_paper():
    assert sum(len(row) for row in C3_TABLE) == 60
    assert [len(row) for row in C3_TABLE] == [3] * 6 + [4] * 9 + [6]
    assert C3_TABLE[12] == (0, 1, 3, 4) and C3_TABLE[14] == (0, 2, 3, 5)


def test_partial_conv_equals_a_full_conv_with_unconnected_kernels_zeroed():
    conv = PartialConv2d(C3_TABLE, 6, 5)
    x = torch.randn(2, 6, 14, 14)
    weight = conv.full_weight()
    mask = torch.zeros(16, 6)
    for j, inputs in enumerate(C3_TABLE):
        mask[j, list(inputs)] = 1
    assert torch.equal(weight.abs().sum((2, 3)) > 0, mask.bool())
    torch.testing.assert_close(conv(x), F.conv2d(x, weight, conv.bias))
    conv(x).sum().backward()
    assert conv.weight.grad.shape == (60, 5, 5) and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("options", [{}, {"activation": "relu", "pool": "max", "norm": "batch", "c3_table": "full"}])
def test_lenet5_shapes_and_macs(options):
    model = get_model("lenet5", num_classes=7, in_channels=3, **options)
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 7)
    assert model.forward_features(torch.randn(4, 3, 32, 32)).shape == (4, 120, 1, 1)  # C5, unpooled
    assert model.forward_head(model.forward_features(torch.randn(4, 3, 32, 32)), pre_logits=True).shape == (4, 84)
    # conv MACs: C1 6*28*28*75, C3 16*10*10*150 (full), C5 120*400; F6 120*84; out 84*7
    if options.get("c3_table") == "full":
        expected = 6 * 28 * 28 * 75 + 16 * 10 * 10 * 150 + 120 * 400 + 120 * 84 + 84 * 7
        assert count_macs(model, (1, 3, 32, 32)) == expected


def test_lenet5_refuses_other_image_sizes_and_bad_options():
    model = get_model("lenet5")
    with pytest.raises(ValueError, match=r"expects 32x32 images .*\(B, 1, 32, 32\).* got 28x28"):
        model(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="pool"):
        get_model("lenet5", pool="median")
    with pytest.raises(ValueError, match="Unknown activation 'relu6'"):
        get_model("lenet5", activation="relu6")


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_mlp_layers_follow_the_configuration(norm):
    model = get_model("mlp", num_classes=3, in_channels=2, image_size=8, hidden_sizes=[16, 12], dropout=0.5, norm=norm)
    per_norm = 0 if norm is None else 2 * (16 + 12)
    assert count_params(model) == (128 * 16 + 16) + (16 * 12 + 12) + (12 * 3 + 3) + per_norm
    assert model(torch.randn(5, 2, 8, 8)).shape == (5, 3)
    assert [name for name, _ in model.stages()] == ["hidden1", "hidden2", "head"]
    # Dropout acts in training only: in eval the network equals the same weights without dropout.
    x = torch.randn(5, 2, 8, 8)
    without = copy.deepcopy(model)
    for m in without.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.eval(), without.eval()
    torch.testing.assert_close(model(x), without(x), rtol=0, atol=0)
    torch.manual_seed(0)
    trained = model.train()(x)
    torch.manual_seed(0)
    assert not torch.allclose(trained, without.train()(x))  # p = 0.5 drops units in training


def test_mlp_without_hidden_layers_is_logistic_regression():
    model = get_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden_sizes=[])
    assert count_params(model) == 64 * 10 + 10
