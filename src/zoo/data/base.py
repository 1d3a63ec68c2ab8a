"""What every data module provides to the task and the command line.

Rules every data module follows:

- **Splits.** A split setting (``data.val_fraction``, ``data.test_fraction``, a size) that
  would leave a split empty is refused before training by :func:`check_split_sizes`, in
  one line naming the setting and the split sizes it would give (an empty validation or
  test split otherwise fails only after a whole training run).
- **A final training batch of one is dropped.** When the training examples (per process
  under DDP) leave a remainder of exactly one after the full batches, that one example is
  left out of the epoch (a different one each epoch, as the order is shuffled): a batch of
  one cannot train a network with batch normalisation, which would stop the run at the end
  of the first epoch. Larger remainders are kept (``data.drop_last=true`` drops every
  incomplete batch), and validation and test batches keep every example.

A data module is a plain object: it builds its splits and loaders with torch alone, so
``zoo-eval`` tests a checkpoint on its data without Lightning. Training hands it to
Lightning's Trainer through :func:`zoo.data.lightning.for_lightning`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch import distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from zoo.data.inputs import ImageInputs, TextInputs, eval_steps
from zoo.errors import ConfigError, DataError
from zoo.registry import Registry

DATASETS = Registry("dataset")


class EpochShuffleSampler(DistributedSampler):
    """A random order that depends only on ``(seed, epoch)``, sharded over processes, and
    able to start part-way through an epoch.

    This is ``DistributedSampler`` (permutation ``torch.randperm(n)`` from a generator
    seeded with ``seed + epoch``; process ``r`` of ``w`` takes every ``w``-th index from
    ``r``), so it never touches the global random state, an interrupted epoch can be
    replayed exactly, and ``w`` processes with batch ``b`` see exactly the batches one
    process sees with batch ``w * b``. Being a ``DistributedSampler``, Lightning uses it
    as it is under DDP instead of wrapping (and reshuffling) it. Lightning calls
    :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, num_samples: int, seed: int):
        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        super().__init__(range(num_samples), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self):
        order = list(super().__iter__())
        start, self.start = self.start, 0  # a skip applies to one pass only
        return iter(order[start:])


class TensorBatches(TensorDataset):
    """Examples held as tensors and served a whole batch at a time.

    ``DataLoader`` hands a dataset that defines ``__getitems__`` the batch's index list in
    one call, so a batch costs one tensor indexing per field instead of a Python call per
    example and a collation (:func:`already_batched` is its collate function). The sampler,
    mid-epoch resume and sharding under DDP stay the DataLoader's, unchanged. :meth:`to`
    moves the tensors to the training device once, so batches are made where they are used.
    """

    def __getitems__(self, indices: list[int]) -> Any:
        return self.batch(torch.as_tensor(indices, device=self.device))

    def batch(self, index: torch.Tensor) -> Any:
        """The batch of the examples at ``index`` (a 1-D index tensor)."""
        return tuple(t[index] for t in self.tensors)

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    def to(self, device: torch.device | str) -> TensorBatches:
        self.tensors = tuple(t.to(device) for t in self.tensors)
        return self


def already_batched(batch: Any) -> Any:
    """The collate function of :class:`TensorBatches`: the dataset made the batch."""
    return batch


class ResumableDataLoader(DataLoader):
    """A training DataLoader that Lightning can checkpoint and resume mid-epoch.

    Lightning saves ``state_dict()`` of a stateful train loader in every checkpoint and
    hands it back through ``load_state_dict()`` on resume; the next pass then skips the
    batches the interrupted run had already consumed in that epoch, by index (nothing
    is loaded for them).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._resume: tuple[int, int] | None = None

    def __iter__(self):
        sampler, self._yielded = self.sampler, 0
        if self._resume is not None:
            epoch, batches = self._resume
            self._resume = None
            if isinstance(sampler, EpochShuffleSampler) and epoch == sampler.epoch:
                sampler.start, self._yielded = batches * self.batch_size, batches
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (state["epoch"], state["batches"])


def check_split_sizes(sizes: dict[str, int], settings: dict[str, str], total: str, at_least: int = 1,
                      why: str = "") -> None:  # fmt: skip
    """Refuse, before training, splits with fewer than ``at_least`` examples.

    Args:
        sizes: examples per split, e.g. ``{"train": 1437, "val": 180, "test": 0}``.
        settings: per split, the setting that sizes it as the user wrote it, e.g.
            ``{"test": "data.test_fraction=0"}``; named in the message.
        total: what is split, e.g. ``"the 1,797 images"``.
        at_least: the fewest examples a split may hold (a stratified split needs one per class).
        why: the reason for ``at_least`` when it is more than 1.

    Raises:
        ConfigError: e.g. ``data.test_fraction=0 leaves the test split empty: the 1,797
            images would split into train 1,617, val 180, test 0``.
    """
    for split, n in sizes.items():
        if n < at_least:
            shown = ", ".join(f"{name} {size:,}" for name, size in sizes.items())
            problem = "empty" if n <= 0 else f"with {n:,}, fewer than {at_least}{why}"
            raise ConfigError(f"{settings[split]} leaves the {split} split {problem}: {total} would split into {shown}")


class DataModule:
    """A data module that knows its task and what a model needs to fit it.

    It has the hooks of Lightning's ``LightningDataModule`` that zoo uses (``prepare_data``,
    ``setup``, the three loaders, ``state_dict``/``load_state_dict``,
    ``on_after_batch_transfer``), called by Lightning through :mod:`zoo.data.lightning` while
    training, and by hand otherwise. Subclasses set ``task`` (a name in
    :data:`zoo.tasks.TASKS`), fill ``train_set``/``val_set``/``test_set`` in :meth:`setup`,
    and implement :meth:`model_facts`.
    """

    task: str
    trainer: Any = None  # the Lightning Trainer while one runs this data (set through zoo.data.lightning)

    def __init__(
        self,
        batch_size: int,
        num_workers: int = 0,
        drop_last: bool = False,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ):
        self.hparams: dict[str, Any] = {}  # the settings it was built with (build_datamodule), saved in checkpoints
        self.batch_size, self.num_workers, self.drop_last = batch_size, num_workers, drop_last
        # With workers: page-locked batches (faster, asynchronous copies to a GPU) and
        # workers kept alive between epochs (no start-up cost per epoch). In-memory data
        # (TensorBatches) uses neither: its batches are made on the device, in-process.
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        # The shuffling seed is the run's seed, which seed_everything made torch's initial
        # seed before the data module was built (read now: restoring a checkpoint's random
        # state later changes what torch.initial_seed() reports).
        self.shuffle_seed = torch.initial_seed()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def save_hyperparameters(self, settings: dict[str, Any]) -> None:
        """Record the settings that rebuild this data module (``name`` and its options)."""
        self.hparams = dict(settings)

    def prepare_data(self) -> None:
        """Fetch or check what :meth:`setup` reads (once per machine)."""

    def setup(self, stage: str | None = None) -> None:
        """Build the splits ``stage`` needs (``"fit"``, ``"test"``; ``None``: all)."""

    def state_dict(self) -> dict[str, Any]:
        """What checkpoints record of the data beyond its settings (see subclasses)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` recorded."""

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A batch once on its device; training-time batch augmentation goes here."""
        return batch

    @property
    def training(self) -> bool:
        """Whether a Trainer is running a training epoch over this data (not validation or test)."""
        return self.trainer is not None and self.trainer.training

    def model_facts(self) -> dict[str, Any]:
        """Model constructor arguments fixed by the data (``num_classes``, vocabulary sizes, ...)."""
        raise NotImplementedError

    def inputs(self) -> ImageInputs | TextInputs | None:
        """What a network trained on this data needs to be used without it (:mod:`zoo.data.inputs`),
        recorded in every checkpoint; ``None`` before :meth:`setup` has made it."""
        raise NotImplementedError

    def check_model(self, net: nn.Module, model_cfg: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` before training if ``net`` cannot take this data."""

    def collate_fn(self, batch: list) -> Any:
        return torch.utils.data.default_collate(batch)

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been run")
        if train and self.drop_last and len(dataset) < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the {len(dataset)} training examples "
                f"and data.drop_last=true would drop them all"
            )
        # Each loader has its own generator: creating an iterator draws a seed for the
        # workers, which must not advance the global generator (dropout, augmentation) or a
        # resumed run would diverge from an uninterrupted one.
        seed = self.shuffle_seed
        sampler = EpochShuffleSampler(len(dataset), seed) if train else None
        drop_last = train and (self.drop_last or sampler.num_samples % self.batch_size == 1)
        if drop_last and sampler.num_samples == 1 < self.batch_size:  # nothing else would be left to train on
            raise DataError(
                f"{type(self).__name__}: the training split holds 1 example (per process), "
                f"and a final training batch of one is dropped: there is nothing to train on"
            )
        in_memory = isinstance(dataset, TensorBatches)
        if in_memory and self.trainer is not None:
            dataset.to(self.trainer.strategy.root_device)  # once: later calls find it there
        return (ResumableDataLoader if train else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            generator=torch.Generator().manual_seed(seed),
            drop_last=drop_last,  # a final batch of one (see the module docstring)
            num_workers=0 if in_memory else self.num_workers,
            persistent_workers=self.persistent_workers and self.num_workers > 0 and not in_memory,
            pin_memory=self.pin_memory and not in_memory and torch.cuda.is_available(),
            collate_fn=already_batched if in_memory else self.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


class ImageDataModule(DataModule):
    """Images and class labels for the ``classification`` task.

    Subclasses set ``num_classes``, ``in_channels``, ``image_size`` (square side after
    the eval transform) and ``mean``/``std`` (per channel, used for normalisation), and may
    set the evaluation resize (``resize_size``, ``interpolation``).
    """

    task = "classification"
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_size: int | None = None  # the shorter side before the eval crop; None: image_size
    interpolation: str = "bilinear"

    def model_facts(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "image_size": self.image_size}

    @property
    def class_names(self) -> list[str]:
        """A name per class index; the indices themselves unless the data names its classes."""
        names = getattr(self, "_class_names", None)
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    def state_dict(self) -> dict[str, Any]:
        """The preprocessing and the class names, which Lightning stores in every
        checkpoint: fine-tuning from the checkpoint feeds new data the same way
        (``zoo.finetune``) and ``zoo-predict`` names its answers. Statistics computed in
        ``setup`` (digits) are not among the hyper-parameters, hence the state."""
        mean, std = getattr(self, "mean", ()), getattr(self, "std", ())
        return {
            "image_size": getattr(self, "image_size", None), "mean": list(mean), "std": list(std),
            "class_names": self.class_names,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` recorded, for inference without the data."""
        if state.get("image_size"):
            self.image_size = state["image_size"]
        if state.get("mean"):
            self.mean, self.std = tuple(state["mean"]), tuple(state["std"])
        if state.get("class_names"):
            self._class_names = list(state["class_names"])

    def inputs(self) -> ImageInputs:
        return ImageInputs(self.in_channels, self.image_size, tuple(self.mean), tuple(self.std), tuple(self.class_names),
                           self.resize_size, self.interpolation)  # fmt: skip

    def eval_steps(self) -> list:
        """The evaluation transform (:func:`zoo.data.inputs.eval_steps`): shorter side resized to
        ``resize_size`` (``None``: ``image_size``) with ``interpolation``, centre crop ``image_size``."""
        return eval_steps(self.image_size, self.mean, self.std, self.resize_size, self.interpolation)

    def check_model(self, net: nn.Module, model_cfg: dict[str, Any]) -> None:
        c, s = self.in_channels, self.image_size
        check_input = getattr(net, "check_input", None)
        if check_input is None:
            raise ConfigError(f"model '{model_cfg.get('name')}' is not an image model; it cannot train on images")
        try:
            check_input(torch.empty(1, c, s, s, device="meta"))
        except ValueError as err:
            hint = " or model.small_input=true" if "small_input" in model_cfg else ""
            raise ConfigError(f"{err}. The data gives {c}x{s}x{s} images: set data.image_size=<size>{hint}") from None
