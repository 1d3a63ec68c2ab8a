"""``zoo-eval``: test a trained network again, from a training checkpoint or from weights.

``zoo-eval ckpt_path=<run>/checkpoints/best.ckpt``: the checkpoint's own data settings
rebuild the same split; ``+data.<key>=...`` overrides them (e.g. ``+data.root=/elsewhere``).

``zoo-eval model=resnet50 weights=ResNet50_Weights.IMAGENET1K_V2 folder=/data/imagenet/val``:
weights (a torchvision-format ``.pth``, ``.safetensors``, a zoo ``.ckpt`` or a torchvision
weights name) evaluated on an ImageNet-style folder ``<folder>/<class>/<image>``, classes
in sorted order as torchvision's ``ImageFolder`` (and ImageNet's synset folders) give
them, fed as torchvision evaluates: shorter side resized to ``resize_size`` (the weights'
own where they say, else ``image_size / 0.875``: 256 for 224), centre crop ``image_size``,
ImageNet mean/std (or the checkpoint's). acc@1 and acc@5 are torchvision's: the share of
images whose true class is the first / among the five highest logits.

Writes ``metrics.json`` to the run folder.

The test runs in a loop of its own (:func:`zoo.tasks.evaluation.evaluate_network`) with
torch, torchvision and torchmetrics, without Lightning, on one device: it computes what the
training run's test computed (the task modules share its metrics). Of the ``trainer`` group
it reads ``accelerator``, ``precision`` (``auto``: the training run's rule),
``limit_test_batches`` and ``fast_dev_run``; more than one device or node is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from zoo.checkpoint import load_lightning_checkpoint
from zoo.cli.config import fit_model_to_data, plain
from zoo.cli.outputs import write_metrics
from zoo.data.vision import IMAGENET_MEAN, IMAGENET_STD, ImageFolder, ImageFolderDataModule, load_image
from zoo.errors import ConfigError, DataError, config_errors
from zoo.inference import NET, check_checkpoint, restore_datamodule
from zoo.models import get_model
from zoo.models.pretrained import load_into, load_pretrained
from zoo.models.weights import WeightsError
from zoo.perf import accelerator_type, choose_precision, require_cuda
from zoo.tasks.evaluation import batches_to_test, evaluate_network

log = logging.getLogger("zoo")


@dataclass
class EvalSet:
    """A network and the batches to test it on, as the task that trained it takes them."""

    net: torch.nn.Module
    task: str
    batches: DataLoader
    hparams: dict[str, Any]  # the task's (loss, label smoothing, decoding)
    data: str  # what metrics.json names as the data
    tgt_vocab: Any = None


def checkpoint_test(cfg: DictConfig) -> EvalSet:
    """The network of a checkpoint and its data's test split (with ``data`` overrides)."""
    ckpt = load_lightning_checkpoint(cfg.ckpt_path)
    model, _ = check_checkpoint(ckpt, cfg.ckpt_path)
    datamodule = restore_datamodule(ckpt, cfg.ckpt_path, **(plain(cfg.get("data")) or {}))
    with config_errors(f"checkpoint {cfg.ckpt_path}"):
        net = get_model(**model)
        datamodule.check_model(net, model)  # with the overrides
    net.load_state_dict({k[len(NET) :]: v for k, v in ckpt["state_dict"].items()})
    datamodule.setup("test")
    hparams = dict(ckpt["hyper_parameters"])
    return EvalSet(net, datamodule.task, datamodule.test_dataloader(), hparams, datamodule.hparams["name"],
                   getattr(datamodule, "tgt_vocab", None))  # fmt: skip


def weights_test(cfg: DictConfig) -> EvalSet:
    if not cfg.model or not cfg.folder:
        raise ConfigError("weights= needs model=<a configs/model/ name> and folder=<folder>/<class>/<image>")
    pretrained = load_pretrained(cfg.weights, download=cfg.download, model=cfg.model.name)
    pre = pretrained.preprocessing
    size = cfg.image_size or pre.image_size or 224
    prep = ImageFolderDataModule(
        root=cfg.folder, image_size=size, resize_size=cfg.resize_size or pre.resize_size, interpolation=pre.interpolation,
        mean=pre.mean or IMAGENET_MEAN, std=pre.std or IMAGENET_STD,
    )  # fmt: skip
    try:
        folder = ImageFolder(cfg.folder, transform=v2.Compose(prep.eval_steps()), loader=load_image)  # symlink loops skipped
    except FileNotFoundError as err:
        raise DataError(f"{Path(cfg.folder).resolve()}: {err} (expected <folder>/<class>/<image>)") from None
    facts = {"num_classes": len(folder.classes), "in_channels": 3, "image_size": size}
    model_cfg = fit_model_to_data(plain(cfg.model), facts, str(cfg.folder))
    name = model_cfg.pop("name")
    with config_errors(f"model '{name}'"):
        net = get_model(name, **model_cfg)
    if skipped := load_into(net, pretrained):  # strict, with its messages; the head differs
        raise WeightsError(
            f"{pretrained.source} does not fit {name} with the {len(folder.classes)} classes of {cfg.folder}: "
            f"its classifier ({', '.join(skipped)}) is for another number of classes"
        )
    log.info("%s on %d images of %d classes: resize %d, centre crop %d", name, len(folder), len(folder.classes),
             prep.resize_size, size)  # fmt: skip
    loader = DataLoader(folder, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    return EvalSet(net, "classification", loader, {}, str(Path(cfg.folder).resolve()))


def eval_device(trainer: dict[str, Any]) -> torch.device:
    """The one device ``trainer.accelerator`` and ``trainer.devices`` name for the test."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise ConfigError(f"zoo-eval runs on the CPU or a CUDA GPU: trainer.accelerator must be auto, cpu, gpu or cuda; got {accelerator}")
    if accelerator in ("gpu", "cuda"):
        require_cuda(f"trainer.accelerator={accelerator}")
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    many = devices == -1 or (isinstance(devices, int) and devices > 1) or (isinstance(devices, list) and len(devices) > 1)
    if many or (nodes or 1) > 1:
        raise ConfigError(f"zoo-eval tests on one device; trainer.devices={devices} trainer.num_nodes={nodes} ask for more")
    index = devices[0] if isinstance(devices, list) and devices else 0
    return torch.device("cuda", index) if accelerator_type(accelerator) == "cuda" else torch.device("cpu")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if bool(cfg.ckpt_path) == bool(cfg.weights):
        raise ConfigError("give either ckpt_path=<training checkpoint> or weights=<file or torchvision name> (with model= and folder=)")
    trainer = plain(cfg.trainer)
    device = eval_device(trainer)  # before anything is read
    test = checkpoint_test(cfg) if cfg.ckpt_path else weights_test(cfg)
    with config_errors("trainer"):  # precision auto: the training run's rule, so its test metrics are reproduced
        precision, why = choose_precision(trainer.get("precision", "auto"), device.type, test.net)
    fast_dev_run = trainer.get("fast_dev_run") or 0
    limit = int(fast_dev_run) if fast_dev_run else trainer.get("limit_test_batches")
    count = batches_to_test(limit, len(test.batches))
    log.info("testing on %s, precision %s (%s), %d of %d batches", device, precision, why, count, len(test.batches))
    results = evaluate_network(test.net, test.task, test.batches, test.hparams, device, precision, count, test.tgt_vocab)
    log.info("test: %s", ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    source = str(Path(cfg.ckpt_path).resolve()) if cfg.ckpt_path else cfg.weights
    write_metrics(run_dir / "metrics.json", results, checkpoint=source, data=test.data)
    log.info("run folder: %s", run_dir)
    return results


def run(cfg: DictConfig) -> None:
    """What ``zoo-eval`` runs once Hydra has composed ``cfg`` (see :mod:`zoo.cli.launch`)."""
    evaluate(cfg)


if __name__ == "__main__":
    from zoo.cli.launch import eval as main

    main()
