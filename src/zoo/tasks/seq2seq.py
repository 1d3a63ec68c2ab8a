"""Sequence-to-sequence learning: one LightningModule for every :class:`Seq2SeqModel`.

Training minimises the token cross-entropy of the teacher-forced logits,
``L = -1/N sum_{t: y_t != <pad>} log p(y_t | y_<t, x)``, optionally with label smoothing
(Szegedy et al., 2016). Validation and test also *decode* every source (greedy, or beam
search with ``beam_size > 1``) and report:

- ``acc``: token accuracy of the teacher-forced predictions (padding excluded);
- ``exact_match``: the share of decoded sequences equal to their target up to ``<eos>``
  (``val/exact_match`` picks the best checkpoint);
- ``bleu``: corpus BLEU-4 (Papineni et al., 2002; ``torchmetrics.text.BLEUScore``) over
  the target vocabulary's tokens, i.e. character BLEU for character-level data.

A few decoded samples are logged after each validation. The token strings come from the
data module's vocabularies, which Lightning stores in every checkpoint
(:meth:`zoo.data.text.TextDataModule.state_dict`); the hyperparameters here are plain
values only, so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torchmetrics import MeanMetric

from zoo.errors import ConfigError
from zoo.models.base import Seq2SeqModel
from zoo.models.factory import build_on_meta
from zoo.models import MODELS, get_model
from zoo.tasks.evaluation import Decoding, correct_tokens, seq2seq_loss, seq2seq_metrics, seq2seq_update, token_strings
from zoo.tasks.registry import TASKS
from zoo.tasks.base import TaskModule

log = logging.getLogger("zoo")


@TASKS.register("seq2seq")
class Seq2SeqModule(TaskModule):
    """Train, validate and test any registered sequence-to-sequence model.

    Args:
        model: ``{"name": <registry name>, **constructor kwargs}``.
        optim: optimizer config, see :func:`zoo.optim.build_optimizer`.
        sched: scheduler config ``{"name": ..., **options}``, or ``None`` for a constant LR.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        max_decode_len: most tokens decoded per source; ``None``: ``2 * source length + 10``.
        beam_size: 1 for greedy decoding, more for beam search.
        length_penalty: beam search ranks by ``log p / len ** length_penalty``.
        num_samples: decoded samples logged after each validation.
    """

    monitor, monitor_mode = "val/exact_match", "max"  # the metric that picks the best checkpoint

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        sched: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        max_decode_len: int | None = None,
        beam_size: int = 1,
        length_penalty: float = 1.0,
        num_samples: int = 3,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the whole run config (zoo-train)
        kwargs = dict(model)
        name = kwargs.pop("name")
        # Checked on the meta device first: an image model would fail on its own missing options.
        if not isinstance(build_on_meta(MODELS.get(name)), Seq2SeqModel):
            raise ConfigError(
                f"model '{name}' is not a sequence-to-sequence model; the seq2seq task needs one "
                f"such as model=seq2seq_gru"
            )
        self.net = get_model(name, **kwargs)
        if beam_size < 1:
            raise ConfigError(f"task.beam_size must be at least 1, got {beam_size}")
        self.train_metrics = torch.nn.ModuleDict({"acc": MeanMetric()})
        self.val_metrics = torch.nn.ModuleDict(seq2seq_metrics())  # zoo-eval computes the same (zoo.tasks.evaluation)
        self.test_metrics = torch.nn.ModuleDict(seq2seq_metrics())
        self.decoding = Decoding(max_decode_len, beam_size, length_penalty)
        self.metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}
        self._samples: list[tuple[str, str, str]] = []

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.net(src, src_mask, tgt_in)

    def loss(self, logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the non-padding target tokens."""
        return seq2seq_loss(logits, tgt_out, self.net.pad_idx, self.hparams.label_smoothing)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.net(batch["src"], batch["src_mask"], batch["tgt_in"])
        loss = self.loss(logits, batch["tgt_out"])
        self.train_metrics["acc"].update(correct_tokens(logits.detach(), batch["tgt_out"], self.net.pad_idx))
        self.log_train_loss(loss, len(logits))
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log("train/acc", self.train_metrics["acc"].compute())
        self.train_metrics["acc"].reset()

    # -- decoding and the metrics on decoded sequences
    def _vocabs(self):
        """The data module's (source, target) vocabularies, or ``None``s without one."""
        try:
            datamodule = self.trainer.datamodule
        except RuntimeError:  # not attached to a trainer
            datamodule = None
        return getattr(datamodule, "src_vocab", None), getattr(datamodule, "tgt_vocab", None)

    def generate(self, src: torch.Tensor, src_mask: torch.Tensor):
        """Decoded sequences for a batch, with the task's decoding settings."""
        return self.decoding.generate(self.net, src, src_mask)

    def _eval_step(self, batch: dict[str, torch.Tensor], batch_idx: int, stage: str) -> None:
        src_vocab, tgt_vocab = self._vocabs()
        loss, pred_tokens, tgt_tokens = seq2seq_update(
            self.net, batch, self.metrics[stage], self.decoding, self.hparams.label_smoothing, tgt_vocab
        )  # fmt: skip
        src = batch["src"]
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=len(src))
        metrics = {f"{stage}/{k}": m for k, m in self.metrics[stage].items()}
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=len(src))
        if batch_idx == 0 and stage == "val":
            join = "" if tgt_vocab is None or tgt_vocab.level == "char" else " "
            src_join = "" if src_vocab is None or src_vocab.level == "char" else " "
            rows = zip(token_strings(src, self.net, src_vocab), pred_tokens, tgt_tokens)
            self._samples = [
                (src_join.join(s), join.join(p), join.join(t)) for s, p, t in list(rows)[: self.hparams.num_samples]
            ]

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self._samples and not self.trainer.sanity_checking:
            for src, pred, tgt in self._samples:
                log.info("sample: %r -> %r (target %r)", src, pred, tgt)
        self._samples = []
