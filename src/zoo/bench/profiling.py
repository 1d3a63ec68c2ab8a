"""Model size and cost: parameter counts and multiply-accumulates (MACs).

MACs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` (which counts a
multiply-add as two FLOPs, so MACs = FLOPs / 2), on the ``meta`` device by default so
that even the largest models cost no memory or time to measure.
"""

from __future__ import annotations


import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, inputs: tuple[int, ...] | tuple[torch.Tensor, ...] | None = None) -> int:
    """Multiply-accumulates of one forward pass in eval mode.

    ``inputs`` is an input shape (an image batch made of zeros on the model's device), a
    tuple of input tensors, or ``None`` for the model's own ``example_inputs()``. Build
    the model with :func:`build_on_meta` to count without computing anything.
    """
    if inputs is None:
        inputs = model.example_inputs()
    elif all(isinstance(d, int) for d in inputs):
        inputs = (torch.zeros(inputs, device=next(model.parameters()).device),)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(*inputs)
    model.train(was_training)
    return counter.get_total_flops() // 2
