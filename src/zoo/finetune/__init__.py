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

The weights themselves (the table of what exists for each model, reading a file, fitting
it key by key) are the models': :mod:`zoo.models.weights` and :mod:`zoo.models.pretrained`.
This package is about training them: :mod:`~zoo.finetune.config` (the validated config
group), :mod:`~zoo.finetune.freezing` (the modes' frozen stages, stages kept fresh),
:mod:`~zoo.finetune.callbacks` (frozen batch norms, gradual unfreezing) and
:mod:`~zoo.finetune.data_config` (the data settings the weights were trained with).
"""

from zoo.finetune.callbacks import FrozenBatchNormEval, GradualUnfreezing, finetune_callbacks
from zoo.finetune.config import CHANNEL_ADAPTATIONS, MODES, PREPROCESSING_SOURCES, FinetuneConfig
from zoo.finetune.data_config import INFERRED_DATA_OPTIONS, adapt_data_config, data_options_used
from zoo.finetune.freezing import (
    apply_finetuning, freeze_modules, frozen_stage_names, parameter_table, set_trainable, stage_keys,
)  # fmt: skip

__all__ = [
    "CHANNEL_ADAPTATIONS", "INFERRED_DATA_OPTIONS", "MODES", "PREPROCESSING_SOURCES", "FinetuneConfig",
    "FrozenBatchNormEval", "GradualUnfreezing", "adapt_data_config", "apply_finetuning", "data_options_used",
    "finetune_callbacks", "freeze_modules", "frozen_stage_names", "parameter_table", "set_trainable", "stage_keys",
]  # fmt: skip
