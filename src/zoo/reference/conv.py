"""Convolution and pooling written from their definitions, and the conv-layer arithmetic.

Convolution (as deep-learning libraries compute it: a cross-correlation, the kernel is
not flipped) of an image ``I`` with ``C`` channels by kernel ``K`` and bias ``b``:

    (I * K)[i, j] = sum_c sum_m sum_n I[i s + m, j s + n, c] K[m, n, c] + b

for stride ``s`` on the zero-padded image. One such sum per filter gives one output map.

Output size of a ``F x F`` filter on a ``W``-wide input with padding ``P`` and stride ``S``:

    W_out = floor((W - F + 2P) / S) + 1

Parameters of a conv layer with ``K`` filters of ``F x F x C_in`` (plus one bias each):

    F * F * C_in * K + K         e.g. 3 * 3 * 3 * 32 + 32 = 896

Pooling slides a ``k x k`` window with stride ``s`` (default ``k``) over each channel:

    max pool:  Out[i, j] = max  of I[i s + m, j s + n],  0 <= m, n < k
    avg pool:  Out[i, j] = mean of the same window
    global average pool: Out = mean over the whole H x W map

These loops favour reading over speed: one output position per iteration.
Deviations from ``F.max_pool2d``/``F.avg_pool2d``: no padding, dilation or ceil mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_output_size(w: int, f: int, p: int = 0, s: int = 1) -> int:
    """``floor((w - f + 2p) / s) + 1``: the output width of an ``f``-wide filter."""
    if s < 1 or f < 1 or w + 2 * p < f:
        raise ValueError(f"no output for width {w}, filter {f}, padding {p}, stride {s}")
    return (w - f + 2 * p) // s + 1


def conv_params(f: int, c_in: int, k: int, bias: bool = True) -> int:
    """``f * f * c_in * k + k``: weights (and biases) of ``k`` filters of ``f x f x c_in``."""
    return f * f * c_in * k + (k if bias else 0)


def pad2d(x: Tensor, padding: int | tuple[int, int]) -> Tensor:
    """Surround the (N, C, H, W) maps with ``padding`` rows and columns of zeros."""
    ph, pw = _pair(padding)
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h + 2 * ph, w + 2 * pw)
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> Tensor:
    """2-D convolution ``sum_c sum_m sum_n I[i s + m, j s + n, c] K[m, n, c] + b``.

    Args:
        x: input (N, C_in, H, W).
        weight: filters (C_out, C_in, F_h, F_w), the layout of ``nn.Conv2d.weight``.
        bias: one bias per filter (C_out,), or ``None``.
        stride: step between windows, an int or (s_h, s_w).
        padding: zeros added on every side, an int or (p_h, p_w).

    Returns:
        Feature maps (N, C_out, H_out, W_out).
    """
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    c_out, c_in, fh, fw = weight.shape
    if x.shape[1] != c_in:
        raise ValueError(f"input has {x.shape[1]} channels, the filters expect {c_in}")
    h_out = conv_output_size(x.shape[2], fh, ph, sh)
    w_out = conv_output_size(x.shape[3], fw, pw, sw)
    x = pad2d(x, (ph, pw))
    out = x.new_empty(x.shape[0], c_out, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            window = x[:, :, i * sh : i * sh + fh, j * sw : j * sw + fw]  # (N, C_in, F_h, F_w)
            out[:, :, i, j] = torch.einsum("bcmn,kcmn->bk", window, weight)  # sum over c, m, n
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _pool2d(
    x: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None,
    reduce: Callable[[Tensor], Tensor],
) -> Tensor:
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride) if stride is not None else (kh, kw)
    h_out = conv_output_size(x.shape[2], kh, 0, sh)
    w_out = conv_output_size(x.shape[3], kw, 0, sw)
    out = x.new_empty(x.shape[0], x.shape[1], h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            window = x[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]  # (N, C, k_h, k_w)
            out[:, :, i, j] = reduce(window.flatten(2))  # over the k_h k_w window values
    return out


def max_pool2d(
    x: Tensor, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None
) -> Tensor:
    """Max pooling: each output is the largest value of its ``k x k`` window (stride defaults to ``k``)."""
    return _pool2d(x, kernel_size, stride, lambda v: v.amax(-1))


def avg_pool2d(
    x: Tensor, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None
) -> Tensor:
    """Average pooling: each output is the mean of its ``k x k`` window (stride defaults to ``k``)."""
    return _pool2d(x, kernel_size, stride, lambda v: v.mean(-1))


def global_avg_pool2d(x: Tensor) -> Tensor:
    """Global average pooling: (N, C, H, W) -> (N, C), the mean of each whole map."""
    return x.mean((2, 3))
