"""Feature extraction: an image model's trunk as a backbone that returns feature maps.

``get_model(name, features_only=True, out_indices=(1, 2, 3))`` builds the model and wraps
it in a :class:`FeatureExtractor`, whose ``forward(x)`` returns the list of maps
``(B, C_i, H_i, W_i)`` at ``out_indices`` into the model's ``feature_info`` and whose
``feature_info`` describes them (``name``, ``channels``, ``stride``)::

    backbone = get_model("resnet50", features_only=True, out_indices=(-3, -2, -1))
    [(f.channels, f.stride) for f in backbone.feature_info]  # [(512, 8), (1024, 16), (2048, 32)]
    c3, c4, c5 = backbone(images)

Every family says which maps it has (:class:`zoo.models.base.FeatureInfo`, from its
configuration) and computes them (``ImageModel.feature_maps``); this wrapper only picks
and prunes. The classifier head and the stages after the last map asked for are deleted
from the model (see :func:`_prune_after`), so they take no memory and no optimizer or
DDP wrapper needs to skip them.

The wrapper keeps the model's own ``state_dict`` keys (``layer1.0.conv1.weight``, not
``model.layer1...``), so a classifier checkpoint loads with ``strict=False``, reporting
only the pruned head as unexpected and nothing as missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models.base import FeatureInfo, ImageModel


def _prune_after(model: ImageModel, last_map: str) -> None:
    """Delete what runs after the module ``last_map``, at the granularity of ``stages()``.

    Every stage after the one holding ``last_map`` goes (the head always does). Within that
    stage, when it is a group built on the fly (ResNet's stem, a run of ViT blocks), its
    members after the one holding ``last_map`` go too, since ``stages()`` lists them in the
    order they run; a stage that is one registered module (``layer2``) is kept whole.
    """
    target = model.get_submodule(last_map)
    groups = [group for _, group in model.stages()]
    k = next(k for k, group in enumerate(groups) if any(m is target for m in group.modules()))
    kept, doomed = groups[: k + 1], groups[k + 1 :]
    if not any(m is groups[k] for m in model.modules()):
        members = list(groups[k].children())
        j = next(j for j, member in enumerate(members) if any(m is target for m in member.modules()))
        kept, doomed = groups[:k] + members[: j + 1], members[j + 1 :] + doomed
    kept_modules = {id(m) for group in kept for m in group.modules()}
    doomed_modules = {id(m) for group in doomed for m in group.modules()} - kept_modules
    doomed_params = {id(p) for group in doomed for p in group.parameters()}
    # The members are looked up by identity where they are registered, whatever their path.
    for module in list(model.modules()):
        if id(module) in doomed_modules:
            continue
        for key, child in list(module.named_children()):
            if id(child) in doomed_modules:
                delattr(module, key)
        for key, param in list(module.named_parameters(recurse=False)):
            if id(param) in doomed_params:
                delattr(module, key)


class FeatureExtractor(nn.Module):
    """An image model's trunk whose ``forward(x)`` returns feature maps instead of logits.

    Args:
        model: The image model; the wrapper takes it over (its head is deleted).
        out_indices: Which of ``model.feature_info`` to return; negative indices count from
            the end; ``None`` returns all. The maps come in network order, input to output.
        name: The model's registry name, for error messages.

    Attributes:
        feature_info: One :class:`~zoo.models.base.FeatureInfo` per returned map, in order.
        out_indices: The indices into ``model.feature_info``, non-negative and sorted.

    Raises:
        ConfigError: the model has no feature maps (the MLP, sequence models).
        ValueError: an index is out of range (the message gives the valid range) or repeated.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None, name: str | None = None):
        super().__init__()
        name = name or type(model).__name__
        if not isinstance(model, ImageModel) or not model.feature_info:
            raise ConfigError(
                f"model '{name}' has no feature maps, so features_only=True is not possible "
                "(it needs a convolutional network or a vision transformer)"
            )
        self.out_indices: tuple[int, ...] = tuple(model.feature_indices(out_indices))
        self.feature_info: list[FeatureInfo] = [model.feature_info[i] for i in self.out_indices]
        _prune_after(model, model.feature_info[self.out_indices[-1]].name)
        # Adopt the model's modules, parameters and buffers: the very same dicts, not copies.
        # The state_dict keys stay the model's, and whatever .to(), .to_empty() or
        # load_state_dict(assign=True) puts in them is what the model computes with. The
        # model itself stays unregistered (it would contain itself).
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set
        object.__setattr__(self, "_model", model)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps of ``feature_info``: a list of (B, channels, ~H/stride, ~W/stride)."""
        return self._model.forward_intermediates(x, self.out_indices)

    def extra_repr(self) -> str:
        return f"out_indices={self.out_indices}"

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        self._model.training = mode  # the one flag of the model's not in the shared dicts
        return self
