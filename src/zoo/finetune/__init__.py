"""Transfer learning: pretrained weights into a zoo model, then freeze, partial, full or
gradual fine-tuning.

The lecture's recipes (take a network trained on ImageNet, 1.2M images, and train it
further on your own data): ``freeze`` (feature extraction), ``partial``, ``full`` and
``gradual`` (as in ULMFiT, Howard & Ruder 2018). What each trains, its learning rates and
when to use it: the modes table of README.md (docs/finetuning.md includes it). The new head
always learns at ``lr_head``: it starts from random weights and needs the larger rate.

Stages are the model contract's ``stages()`` (stem .. head), so every image family is
fine-tuned the same way. Frozen batch-norm layers stay in eval mode: their running
statistics are part of the pretrained features, and updating them from a few
fine-tuning batches would change the features the head is learning to read.

Weights are read only through :mod:`zoo.checkpoint` (tensors only; never arbitrary
pickles) and must fit the model key by key; the one tolerated difference is the
classifier head when the number of classes differs, which is re-initialised.


The package: :mod:`~zoo.finetune.config` (the validated config group),
:mod:`~zoo.finetune.weights` (reading weights and fitting them to a model),
:mod:`~zoo.finetune.freezing` (the modes' frozen stages) and
:mod:`~zoo.finetune.callbacks` (frozen batch norms, gradual unfreezing).
"""

import importlib
from typing import Any

from zoo.finetune.config import CHANNEL_ADAPTATIONS, MODES, PREPROCESSING_SOURCES, FinetuneConfig
from zoo.finetune.freezing import apply_finetuning, freeze_modules, frozen_stage_names, parameter_table, set_trainable
from zoo.finetune.weights import (
    Preprocessing, Pretrained, WeightsError, adapt_data_config, adapt_input_channels, data_options_used, first_conv,
    head_keys, load_into, load_pretrained, stage_keys, torchvision_cache_file,
)  # fmt: skip

__all__ = [
    "CHANNEL_ADAPTATIONS", "MODES", "PREPROCESSING_SOURCES", "FinetuneConfig", "FrozenBatchNormEval",
    "GradualUnfreezing", "Preprocessing", "Pretrained", "WeightsError", "adapt_data_config", "adapt_input_channels",
    "apply_finetuning", "data_options_used", "finetune_callbacks", "first_conv", "freeze_modules", "frozen_stage_names", "head_keys",
    "load_into", "load_pretrained", "parameter_table", "set_trainable", "stage_keys", "torchvision_cache_file",
]  # fmt: skip

_CALLBACKS = ("FrozenBatchNormEval", "GradualUnfreezing", "finetune_callbacks")


def __getattr__(name: str) -> Any:
    # The Lightning callbacks are imported on first use: loading weights into a model
    # (zoo.create_model, zoo-models --weights) needs no Lightning.
    if name in _CALLBACKS:
        return getattr(importlib.import_module("zoo.finetune.callbacks"), name)
    raise AttributeError(f"module 'zoo.finetune' has no attribute {name!r}")

