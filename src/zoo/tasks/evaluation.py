"""The tasks' test metrics, and a network tested on a data split without Lightning.

The task modules (:mod:`zoo.tasks.classification`, :mod:`zoo.tasks.seq2seq`) compute their
validation and test losses and metrics with the functions here, so :func:`evaluate_network`, the
loop ``zoo-eval`` runs, reports what the training run's test reported for the same weights
and data: the loss as the mean over examples (Lightning's epoch mean of per-batch values
weighted by batch size), the metrics as the same ``torchmetrics`` objects updated with the
same batches. It runs under ``torch.inference_mode`` on one device, in the numbers
Lightning's ``trainer.precision`` names (``*-mixed``: autocast; ``*-true``: network and
inputs in that type).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import BLEUScore

from zoo.errors import ConfigError
from zoo.tasks.losses import LOSSES

# -- image classification ------------------------------------------------------------------


def classification_metrics(num_classes: int) -> MetricCollection:
    """Top-1 accuracy, and top-5 where there are more than five classes (torchvision's acc@1, acc@5)."""
    # No argument checks per update: out-of-range labels already fail in the loss.
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False)}
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", validate_args=False)
    return MetricCollection(metrics)


def classification_loss(outputs: torch.Tensor | tuple[torch.Tensor, ...], y: torch.Tensor, criterion: Any,
                        aux_loss_weight: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The loss and the main logits of a network's ``outputs``: ``(logits, *aux_logits)`` add
    each auxiliary classifier's loss with ``aux_loss_weight`` (GoogLeNet in training)."""
    if isinstance(outputs, tuple):
        logits, *aux = outputs
        return criterion(logits, y) + aux_loss_weight * sum(criterion(a, y) for a in aux), logits
    return criterion(outputs, y), outputs


# -- sequence to sequence ------------------------------------------------------------------


def seq2seq_metrics() -> dict[str, Metric]:
    """Token accuracy, exact match of the decoded sequences and their corpus BLEU-4."""
    return {"acc": MeanMetric(), "exact_match": MeanMetric(), "bleu": BLEUScore(4)}


def seq2seq_loss(logits: torch.Tensor, tgt_out: torch.Tensor, pad_idx: int, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy over the non-padding target tokens."""
    return F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=pad_idx,
                           label_smoothing=label_smoothing)  # fmt: skip


def correct_tokens(logits: torch.Tensor, tgt_out: torch.Tensor, pad_idx: int) -> torch.Tensor:
    """1.0 per non-padding target token the teacher-forced logits predict, else 0.0 (token accuracy's values)."""
    real = tgt_out != pad_idx
    return (logits.argmax(-1) == tgt_out)[real].float()


def bleu_text(tokens: list[str]) -> str:
    """Tokens joined by spaces for BLEU's whitespace tokenizer; a whitespace token becomes ``▁``."""
    return " ".join(t if t.strip() else "▁" for t in tokens)


def token_strings(ids: torch.Tensor, net: Any, vocab: Any) -> list[list[str]]:
    """Each row's token strings up to ``<eos>``, without padding and ``<bos>`` (the ids as
    strings without a vocabulary)."""
    eos, skip = net.eos_idx, {net.pad_idx, net.bos_idx}
    out = []
    for row in ids.tolist():
        row = [i for i in (row[: row.index(eos)] if eos in row else row) if i not in skip]
        out.append(vocab.tokens(row) if vocab is not None else [str(i) for i in row])
    return out


@dataclass
class Decoding:
    """How the seq2seq task decodes: at most ``max_decode_len`` tokens (``None``:
    ``2 * source length + 10``), greedy (``beam_size=1``) or beam search ranked by
    ``log p / len ** length_penalty``."""

    max_decode_len: int | None = None
    beam_size: int = 1
    length_penalty: float = 1.0

    def generate(self, net: Any, src: torch.Tensor, src_mask: torch.Tensor) -> Any:
        max_len = self.max_decode_len or 2 * src.shape[1] + 10
        return net.generate(src, src_mask, max_len, self.beam_size, self.length_penalty)


def seq2seq_update(net: Any, batch: dict[str, torch.Tensor], metrics: dict[str, Metric], decoding: Decoding,
                   label_smoothing: float, tgt_vocab: Any) -> tuple[torch.Tensor, list[list[str]], list[list[str]]]:  # fmt: skip
    """Update ``metrics`` (:func:`seq2seq_metrics`) with a batch; the batch's loss and its
    decoded and target token strings."""
    src, src_mask, tgt_out = batch["src"], batch["src_mask"], batch["tgt_out"]
    logits = net(src, src_mask, batch["tgt_in"])
    metrics["acc"].update(correct_tokens(logits, tgt_out, net.pad_idx))
    loss = seq2seq_loss(logits, tgt_out, net.pad_idx, label_smoothing)

    pred = decoding.generate(net, src, src_mask).tokens  # (B, L): <eos> then <pad>, like tgt_out
    width = max(pred.shape[1], tgt_out.shape[1])

    def widen(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[1]), value=net.pad_idx)

    metrics["exact_match"].update((widen(pred) == widen(tgt_out)).all(dim=1).float())
    pred_tokens, tgt_tokens = token_strings(pred, net, tgt_vocab), token_strings(tgt_out, net, tgt_vocab)
    metrics["bleu"].update([bleu_text(p) for p in pred_tokens], [[bleu_text(t)] for t in tgt_tokens])
    return loss, pred_tokens, tgt_tokens


# -- the test loop -------------------------------------------------------------------------

# trainer.precision -> (autocast dtype, dtype of the network and its inputs)
PRECISION_TYPES: dict[str, tuple[torch.dtype | None, torch.dtype | None]] = {
    "32-true": (None, None), "32": (None, None), "64-true": (None, torch.float64), "64": (None, torch.float64),
    "bf16-mixed": (torch.bfloat16, None), "16-mixed": (torch.float16, None),
    "bf16-true": (None, torch.bfloat16), "16-true": (None, torch.float16),
}  # fmt: skip


def batches_to_test(limit: int | float | None, available: int) -> int:
    """How many of ``available`` batches ``trainer.limit_test_batches`` tests, as Lightning
    counts them: all for ``None``, at most ``limit`` for a whole number, the fraction
    ``int(limit * available)`` for a float in ``[0, 1]``. A limit that tests no batch is
    refused (Lightning would skip the test and report nothing)."""
    if limit is None:
        return available
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise ConfigError(f"trainer.limit_test_batches must be a batch count or a fraction in [0, 1]; got {limit!r}")
    if isinstance(limit, float) and limit > 1:
        raise ConfigError(f"trainer.limit_test_batches={limit} is a fraction above 1; give a batch count as a whole number")
    if limit == 0:
        raise ConfigError(f"trainer.limit_test_batches={limit} tests no batch; leave it out to test them all")
    count = int(limit * available) if isinstance(limit, float) else min(limit, available)
    if count == 0:
        raise ConfigError(f"trainer.limit_test_batches={limit} of {available} test batches is no batch; raise it")
    return count


def _to(batch: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """``batch`` (a tensor, or a tuple, list or dict of them) on ``device``; floating tensors in ``dtype``."""
    if isinstance(batch, torch.Tensor):
        cast = dtype if dtype is not None and batch.is_floating_point() else None
        return batch.to(device, dtype=cast)
    if isinstance(batch, dict):
        return {k: _to(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, device, dtype) for v in batch)
    return batch


def _progress(batches: Iterable, total: int) -> Iterator:
    """``batches`` with a progress bar on a terminal's stderr (nothing otherwise)."""
    with Progress(console=Console(stderr=True), transient=False, disable=not sys.stderr.isatty()) as progress:
        yield from progress.track(batches, total=total, description="test")


def evaluate_network(net: torch.nn.Module, task: str, batches: Iterable, hparams: dict[str, Any], device: torch.device,
                 precision: str = "32-true", max_batches: int | None = None, tgt_vocab: Any = None) -> dict[str, float]:  # fmt: skip
    """Test ``net`` on ``batches`` (a data module's test loader) as the ``task``'s module tests it.

    Args:
        net: the trained network (moved to ``device``, in eval mode, here).
        task: ``"classification"`` or ``"seq2seq"``.
        batches: the test batches, as the task's training took them.
        hparams: the task's hyperparameters from the checkpoint (loss, label smoothing,
            decoding settings).
        device: where to run.
        precision: a ``trainer.precision`` (``auto`` resolved already).
        max_batches: test the first this many batches only (``None``: all).
        tgt_vocab: seq2seq: the target vocabulary BLEU reads tokens with.

    Returns:
        ``{"test/loss": ..., "test/<metric>": ...}``, the keys ``trainer.test`` gives.
    """
    if str(precision) not in PRECISION_TYPES:
        raise ConfigError(f"trainer.precision={precision} is not one zoo-eval runs; use one of {', '.join(PRECISION_TYPES)}")
    autocast, dtype = PRECISION_TYPES[str(precision)]
    net = net.to(device=device, dtype=dtype).eval()
    loss_mean = MeanMetric().to(device)
    if task == "classification":
        metrics: Any = classification_metrics(net.num_classes).to(device)
        criterion = LOSSES.build(hparams.get("loss", "cross_entropy"), label_smoothing=hparams.get("label_smoothing", 0.0))
        aux_loss_weight = hparams.get("aux_loss_weight", 0.3)
    elif task == "seq2seq":
        metrics = {k: m.to(device) for k, m in seq2seq_metrics().items()}
        options = {k: hparams[k] for k in ("max_decode_len", "beam_size", "length_penalty") if k in hparams}
        decoding = Decoding(**options)
    else:
        raise ConfigError(f"zoo-eval cannot test the task {task!r}")
    total = len(batches) if max_batches is None else max_batches
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        for i, batch in enumerate(_progress(batches, total)):
            if i == total:
                break
            batch = _to(batch, device, dtype)
            if task == "classification":
                x, y = batch
                loss, logits = classification_loss(net(x), y, criterion, aux_loss_weight)
                metrics.update(logits, y)
                size = len(y)
            else:
                loss = seq2seq_update(net, batch, metrics, decoding, hparams.get("label_smoothing", 0.0), tgt_vocab)[0]
                size = len(batch["src"])
            loss_mean.update(loss.float(), size)
    results = {"test/loss": loss_mean.compute().item()}
    results.update({f"test/{k}": m.compute().item() for k, m in metrics.items()})
    return results
