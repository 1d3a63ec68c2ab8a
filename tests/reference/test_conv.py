"""Conv arithmetic, convolution and pooling against nn.Conv2d and torch.nn.functional."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.reference import conv as C


@pytest.mark.parametrize(
    "w, f, p, s", [(32, 3, 1, 1), (32, 5, 0, 1), (224, 7, 3, 2), (227, 11, 0, 4), (7, 3, 0, 2), (8, 3, 1, 3)]
)
def test_conv_output_size_equals_a_real_conv(w, f, p, s):
    out = nn.Conv2d(1, 1, f, stride=s, padding=p)(torch.zeros(1, 1, w, w))
    assert C.conv_output_size(w, f, p, s) == out.shape[-1]


def test_conv_output_size_refuses_a_filter_larger_than_the_padded_input():
    with pytest.raises(ValueError, match="no output"):
        C.conv_output_size(2, 5, 1, 1)


@pytest.mark.parametrize(
    "f, c_in, k, bias", [(3, 3, 32, True), (5, 1, 6, True), (1, 64, 128, False), (7, 3, 64, False)]
)
def test_conv_params_equals_nn_conv2d(f, c_in, k, bias):
    layer = nn.Conv2d(c_in, k, f, bias=bias)
    assert C.conv_params(f, c_in, k, bias) == sum(p.numel() for p in layer.parameters())


def test_the_lectures_example_has_896_parameters():
    assert C.conv_params(3, 3, 32) == 896 == sum(p.numel() for p in nn.Conv2d(3, 32, 3).parameters())


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1), (3, 2), ((2, 1), (0, 2))])
def test_conv2d_equals_torch(stride, padding):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    weight, bias = torch.randn(4, 3, 3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    torch.testing.assert_close(C.conv2d(x, weight, bias, stride, padding), expected)
    torch.testing.assert_close(C.conv2d(x, weight, None, stride, padding), F.conv2d(x, weight, None, stride, padding))


def test_conv2d_gradients_equal_torch():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    ours = torch.autograd.grad(C.conv2d(x, w, stride=2, padding=1).sum(), (x, w))
    theirs = torch.autograd.grad(F.conv2d(x, w, stride=2, padding=1).sum(), (x, w))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_the_lectures_three_channel_example():
    # the top-left 5x5 of the slide's R, G, B channels (the slide also shows the zero padding)
    red = [[156, 155, 156, 158, 158], [153, 154, 157, 159, 159], [149, 151, 155, 158, 159],
           [146, 146, 149, 153, 158], [145, 143, 143, 148, 158]]
    green = [[167, 166, 167, 169, 169], [164, 165, 168, 170, 170], [160, 162, 166, 169, 170],
             [156, 156, 159, 163, 168], [155, 153, 153, 158, 168]]
    blue = [[163, 162, 163, 165, 165], [160, 161, 164, 166, 166], [156, 158, 162, 165, 166],
            [155, 155, 158, 162, 167], [154, 152, 152, 157, 167]]
    kernels = [[[-1, -1, 1], [0, 1, -1], [0, 1, 1]], [[1, 0, 0], [1, -1, -1], [1, 0, -1]],
               [[0, 1, 1], [0, 1, 0], [1, -1, 1]]]  # fmt: skip
    x = torch.tensor([red, green, blue], dtype=torch.float64).unsqueeze(0)
    weight = torch.tensor(kernels, dtype=torch.float64).unsqueeze(0)  # (1, 3, 3, 3)
    out = C.conv2d(x, weight, torch.tensor([1.0], dtype=torch.float64), padding=1)
    assert out[0, 0, 0, 0].item() == 308 - 498 + 164 + 1 == -25


def test_the_lectures_pooling_example():
    x = torch.tensor([[1.0, 2, 2, 1], [4, 9, 1, 0], [1, 5, 2, 3], [4, 6, 1, 2]]).view(1, 1, 4, 4)
    assert C.max_pool2d(x, 2).view(2, 2).tolist() == [[9, 2], [6, 3]]
    assert C.avg_pool2d(x, 2).view(2, 2).tolist() == [[4, 1], [4, 2]]


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), (3, 1), ((2, 3), (1, 2))])
def test_pooling_equals_torch(kernel, stride):
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(C.max_pool2d(x, kernel, stride), F.max_pool2d(x, kernel, stride))
    torch.testing.assert_close(C.avg_pool2d(x, kernel, stride), F.avg_pool2d(x, kernel, stride))
    torch.testing.assert_close(C.global_avg_pool2d(x), F.adaptive_avg_pool2d(x, 1).flatten(1))
