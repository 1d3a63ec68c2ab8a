"""The contract every image model in the zoo keeps, written once.

Tasks, fine-tuning, benchmarks and tests rely only on this interface, never on a
family's internals. A family declares where its parts are (:class:`ModelSpec`: the
classifier, the first convolution, the stages) and implements its forward pass in two
halves, as timm's models do:

- ``forward_features(x)`` -> the trunk's output before pooling: (B, C, H', W') for the
  CNNs, (B, 1 + N, D) tokens for the ViT, the last hidden layer for the MLP;
- ``forward_head(x, pre_logits=False)`` -> pools that output to ``num_features`` per
  image (``pre_logits=True`` stops there) and applies the classifier; ``forward(x)`` is
  ``forward_head(forward_features(x))``.

From the declaration the base class implements ``get_classifier()``,
``reset_classifier(num_classes)`` (a fresh head on the old head's device and dtype),
``head_keys()`` (the classifier's ``state_dict`` keys) and ``stages()`` (stem to head,
for freezing and per-stage learning rates). Also part of the contract:

- ``num_classes``, ``in_channels`` and ``num_features`` (width of the pooled features);
- ``default_image_size`` (the canonical input) and the input-size rule the family has:
  ``fixed_image_size`` when the architecture only takes one size, otherwise
  ``min_image_size``. Inputs are checked and a wrong shape raises ``ValueError``;
- ``feature_info`` and :meth:`~ImageModel.feature_maps`: the spatial feature maps of the
  trunk (empty for models without any, like the MLP), from which
  :meth:`~ImageModel.forward_intermediates` and ``get_model(name, features_only=True)``
  (:class:`zoo.models.features.FeatureExtractor`) take theirs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_map

from zoo.models.decoding import beam_search, greedy_search


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map of an image model's trunk, known from its configuration alone.

    Attributes:
        name: Path of the module whose output the map is, as in ``named_modules()``
            (``"layer2"``, ``"features.transition1.norm"``): a forward hook there sees it,
            and the family's ``state_dict`` keys share the prefix.
        channels: ``C`` of the map ``(B, C, H', W')``.
        stride: Reduction relative to the input, the product of the strides before the map:
            ``H' = H / stride``, rounded down or up by the padding. Unpadded ("valid")
            convolutions make the map a few pixels smaller still (LeNet-5's C1 is 28x28 from
            a 32x32 image at stride 1).
    """

    name: str
    channels: int
    stride: int


@dataclass(frozen=True)
class ModelSpec:
    """Where an image model's parts are, as paths of ``named_modules()`` / ``named_parameters()``.

    Each family declares one (timm's ``default_cfg["classifier"]``, ``["first_conv"]`` and
    ``group_matcher``); :class:`ImageModel` implements the contract from it, once.

    Attributes:
        classifier: The ``nn.Linear`` that maps the pre-logits features to logits
            (``"fc"``, ``"classifier.6"``, ``"heads.head"``): :meth:`ImageModel.reset_classifier`
            replaces it, and its keys are the head's when weights are loaded.
        first_conv: The layer that reads the input channels, its ``weight`` shaped
            ``(out, in_channels, ...)``: fine-tuning adapts it to the data's channels.
            ``None`` when there is none (the MLP reads flattened pixels).
        stages: ``(name, paths)`` from input to output, the last one ``head``: the groups
            that fine-tuning freezes and gives learning rates. Every parameter is in exactly
            one; a path names a module or, for a bare parameter (ViT's class token), that.
        aux_classifiers: Further heads that :meth:`ImageModel.reset_classifier` replaces
            with ``classifier`` (GoogLeNet's auxiliary classifiers).
    """

    classifier: str
    first_conv: str | None
    stages: tuple[tuple[str, tuple[str, ...]], ...]
    aux_classifiers: tuple[str, ...] = ()


def split_sequential(prefix: str, bounds: Sequence[int], name: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Stages ``<name>1``, ``<name>2``, ... of the ``nn.Sequential`` at ``prefix``: stage ``k``
    holds its children ``bounds[k - 1]`` up to (not including) ``bounds[k]``."""
    return tuple(
        (f"{name}{k}", tuple(f"{prefix}.{i}" for i in range(lo, hi)))
        for k, (lo, hi) in enumerate(zip(bounds, bounds[1:]), start=1)
    )  # fmt: skip


class ImageModel(nn.Module):
    """Base class for image classifiers; subclasses declare :attr:`spec` and implement
    ``forward_features`` and ``forward_head``."""

    num_classes: int
    in_channels: int
    num_features: int
    default_image_size: int = 224
    fixed_image_size: int | None = None
    min_image_size: int = 1
    #: bf16 autocast + channels-last memory trains this family faster than fp32 NCHW on
    #: hardware with fast bfloat16 (measured per family: docs/performance.md), so
    #: ``trainer.precision=auto`` and ``perf.channels_last=auto`` choose them (zoo.perf).
    fast_path: bool = True
    #: The maps :meth:`feature_maps` yields, input to output; families fill it in from
    #: their configuration in ``__init__``. Empty: the model has no spatial feature maps.
    feature_info: Sequence[FeatureInfo] = ()
    #: Where the classifier, first convolution and stages are; set in ``__init__``.
    spec: ModelSpec
    #: Initialises a new head as the family's constructor does (``staticmethod``); ``None``:
    #: ``nn.Linear``'s own initialisation.
    init_head: Callable[[nn.Module], None] | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's output before pooling."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (B, num_features) of :meth:`forward_features`' output with
        ``pre_logits``, else logits (B, num_classes)."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        """The layer that maps the pooled features to logits (``spec.classifier``)."""
        return self.get_submodule(self.spec.classifier)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (and the auxiliary heads) with fresh ones for
        ``num_classes``, on the device and in the dtype of the ones they replace."""
        for path in (self.spec.classifier, *self.spec.aux_classifiers):
            old = self.get_submodule(path)
            new = nn.Linear(
                old.in_features, num_classes, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype
            )  # fmt: skip
            if self.init_head is not None:
                self.init_head(new)
            parent, _, name = path.rpartition(".")
            self.get_submodule(parent).register_module(name, new)  # "" is the model itself
        self.num_classes = num_classes

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pretrained tensors fitted to the options this model was built with, where the
        family knows how (a ViT's position embeddings for another image size); the rest as
        given. Weight loading (:func:`zoo.finetune.load_into`) calls it before its key and
        shape checks."""
        return state

    def head_keys(self) -> set[str]:
        """``state_dict`` keys of the classifier and the auxiliary heads: what
        :meth:`reset_classifier` replaces, and what weights for another class count lack."""
        prefixes = tuple(f"{path}." for path in (self.spec.classifier, *self.spec.aux_classifiers))
        return {key for key in self.state_dict(keep_vars=True) if key.startswith(prefixes)}

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Ordered groups of modules from input to output: stem, stage 1..N, head.

        A stage of one module is that module; a stage of several is an ``nn.Sequential`` view
        built on the fly (not registered on the model, so ``state_dict`` keys stay), which
        also holds the bare parameters the stage names.
        """
        modules = dict(self.named_modules())
        return [(name, self._stage(paths, modules)) for name, paths in self.spec.stages]

    def _stage(self, paths: tuple[str, ...], modules: dict[str, nn.Module]) -> nn.Module:
        if len(paths) == 1 and paths[0] in modules:
            return modules[paths[0]]
        view = nn.Sequential()  # in the order they run, so a stem view can be called
        for path in paths:
            if path in modules:
                view.append(modules[path])
            else:
                view.register_parameter(path.replace(".", "_"), self.get_parameter(path))
        return view

    def feature_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield the maps of ``feature_info`` in order, (B, C_i, H_i, W_i) each.

        A generator, so that a caller that stops early runs the network only that far
        (and never touches the modules after it). Families implement this; callers use
        :meth:`forward_intermediates`, which checks the input and picks the maps.
        """
        raise NotImplementedError(f"{type(self).__name__} has no feature maps")

    def feature_indices(self, indices: Sequence[int] | None = None) -> list[int]:
        """``indices`` into ``feature_info`` made non-negative and sorted (default: all).

        Raises:
            ValueError: an index is out of range (the message gives the valid range), is
                repeated, or ``indices`` is empty.
        """
        n = len(self.feature_info)
        if n == 0:
            raise ValueError(f"{type(self).__name__} has no feature maps")
        if indices is None:
            return list(range(n))
        resolved = []
        for i in indices:
            i = operator.index(i)  # ints only: 1.0 or "1" is a mistake, not an index
            if not -n <= i < n:
                raise ValueError(
                    f"feature index {i} is out of range for {type(self).__name__}, which has {n} feature maps: "
                    f"valid indices are {-n}..{n - 1} ({', '.join(f.name for f in self.feature_info)})"
                )
            resolved.append(i % n)
        if not resolved:
            raise ValueError("no feature index given: pass None for all the feature maps")
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"feature indices {list(indices)} name the same map twice (of {n})")
        return sorted(resolved)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """The feature maps at ``indices`` into ``feature_info`` (negative ones count from
        the end; default all), input to output, each (B, channels, ~H/stride, ~W/stride).

        The network runs only up to the last map asked for; the head never runs.
        """
        take = self.feature_indices(indices)
        self.check_input(x)
        wanted, last = set(take), take[-1]
        maps: list[torch.Tensor] = []
        for i, fmap in enumerate(self.feature_maps(x)):
            if i in wanted:
                maps.append(fmap)
            if i == last:
                return maps
        raise RuntimeError(f"{type(self).__name__}.feature_maps yielded fewer maps than feature_info lists")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """A batch of the canonical input size, for counting MACs and benchmarks."""
        s = self.default_image_size
        device = next(self.parameters()).device
        return (torch.zeros(batch_size, self.in_channels, s, s, device=device),)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the expected shape when ``x`` cannot be taken."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if self.fixed_image_size is not None:
            s = self.fixed_image_size
            if (h, w) != (s, s):
                raise ValueError(
                    f"{type(self).__name__} expects {s}x{s} images "
                    f"(input shape (B, {self.in_channels}, {s}, {s})), got {h}x{w}"
                )
        elif min(h, w) < self.min_image_size:
            s = self.min_image_size
            raise ValueError(
                f"{type(self).__name__} expects images of at least {s}x{s} "
                f"(input shape (B, {self.in_channels}, >={s}, >={s})), got {h}x{w}"
            )


class SequentialTrunkModel(ImageModel):
    """torchvision's layout of AlexNet, VGG and EfficientNet: a ``features`` trunk (one
    ``nn.Sequential``), ``avgpool``, flatten, ``classifier``. Families fill in the three
    modules, ``feature_info`` (paths ``features.<i>``) and ``spec``."""

    features: nn.Sequential
    avgpool: nn.Module
    classifier: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H / stride, W / stride)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, num_features)
        return x if pre_logits else self.classifier(x)  # (B, num_classes)

    def feature_maps(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        names = {info.name for info in self.feature_info}
        for key, module in self.features.named_children():
            x = module(x)
            if f"features.{key}" in names:
                yield x


class Seq2SeqModel(nn.Module):
    """Base class for sequence-to-sequence models (RNN encoder-decoders, the Transformer).

    Token ids are ``LongTensor``s, batch first; ``src_mask`` is a ``BoolTensor`` that is
    ``True`` at real tokens and ``False`` at padding. Targets are fed with a leading
    ``bos_idx`` (``tgt_in``) and predicted with a trailing ``eos_idx``.

    Subclasses implement:

    - ``forward(src, src_mask, tgt_in) -> logits (B, T, tgt_vocab_size)``: the
      teacher-forced pass used in training;
    - ``encode(src, src_mask) -> memory`` and ``init_state(memory, src_mask) -> state``;
    - ``decode_step(tokens (B,), state) -> (logits (B, V), state, attention (B, S) | None)``:
      one decoding step, used by :meth:`generate` (greedy and beam search).

    ``state`` may be any nesting of tuples/lists/dicts of tensors whose first dimension
    is the batch: :meth:`reorder_state` selects along it for beam search.
    :meth:`generate` decodes with these (greedy or beam search, :mod:`zoo.models.decoding`).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    pad_idx: int
    bos_idx: int
    eos_idx: int

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor):
        raise NotImplementedError

    def init_state(self, memory, src_mask: torch.Tensor):
        raise NotImplementedError

    def decode_step(self, tokens: torch.Tensor, state):
        raise NotImplementedError

    def reorder_state(self, state, index: torch.Tensor):
        """``state`` with every tensor indexed by ``index`` along the batch dimension."""
        return tree_map(lambda t: t.index_select(0, index) if isinstance(t, torch.Tensor) else t, state)

    @torch.no_grad()
    def generate(
        self, src: torch.Tensor, src_mask: torch.Tensor, max_len: int = 100, beam_size: int = 1,
        length_penalty: float = 1.0, nbest: int = 1,
    ):  # fmt: skip
        """Decode ``src``: greedy when ``beam_size`` is 1, else beam search.

        Returns a :class:`zoo.models.decoding.Generated`: ``tokens`` (B, L) ending in
        ``eos_idx`` then ``pad_idx``, ``attention`` (B, L, S) or ``None`` and ``scores`` (B,)
        (log-probabilities; beam search adds ``normalized_scores``, what it ranks by).
        ``nbest`` > 1 (at most ``beam_size``) returns the ``nbest`` best hypotheses of each
        source, best first: ``tokens`` (B, nbest, L), ``scores`` (B, nbest), ...
        Call ``eval()`` first to switch dropout off.
        """
        if beam_size == 1 and nbest == 1:
            return greedy_search(self, src, src_mask, max_len)
        return beam_search(self, src, src_mask, max_len, beam_size, length_penalty, nbest)

    def example_inputs(self, batch_size: int = 1, src_len: int = 16, tgt_len: int = 16) -> tuple[torch.Tensor, ...]:
        """``(src, src_mask, tgt_in)`` of the given lengths, for counting MACs and benchmarks."""
        device = next(self.parameters()).device
        src = torch.full((batch_size, src_len), self.eos_idx, dtype=torch.long, device=device)
        tgt = torch.full((batch_size, tgt_len), self.bos_idx, dtype=torch.long, device=device)
        return src, torch.ones_like(src, dtype=torch.bool), tgt
