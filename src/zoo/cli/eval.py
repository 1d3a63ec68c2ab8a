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
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from zoo.errors import config_errors
from zoo.cli.build import fit_model_to_data, quiet_known_warnings, trainer_options
from zoo.cli.config import plain
from zoo.cli.outputs import write_metrics
from zoo.data.vision import IMAGENET_MEAN, IMAGENET_STD, ImageFolder, ImageFolderDataModule, load_image
from zoo.errors import ConfigError, DataError
from zoo.checkpoint import load_lightning_checkpoint
from zoo.inference import check_checkpoint, restore_datamodule
from zoo.models.pretrained import load_into, load_pretrained
from zoo.models.weights import WeightsError
from zoo.tasks import TASKS
from zoo.tasks.classification import ImageClassifier

log = logging.getLogger("zoo")


def checkpoint_test(cfg: DictConfig) -> tuple[L.LightningModule, dict]:
    """The task module of a checkpoint and its data module (with ``data`` overrides), to test."""
    ckpt = load_lightning_checkpoint(cfg.ckpt_path)
    check_checkpoint(ckpt, cfg.ckpt_path)
    datamodule = restore_datamodule(ckpt, cfg.ckpt_path, **(plain(cfg.get("data")) or {}))
    with config_errors(f"checkpoint {cfg.ckpt_path}"):
        module = TASKS.get(datamodule.task)(**ckpt["hyper_parameters"])
        datamodule.check_model(module.net, dict(module.hparams.get("model") or {}))  # with the overrides
    module.load_state_dict(ckpt["state_dict"])
    datamodule.setup("test")
    return module, {"datamodule": datamodule}


def weights_test(cfg: DictConfig) -> tuple[L.LightningModule, dict]:
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
    name = model_cfg["name"]
    with config_errors(f"model '{name}'"):
        module = ImageClassifier(model=model_cfg, optim={"name": "sgd", "lr": 0.0})  # the optimizer is never built
    if skipped := load_into(module.net, pretrained):  # strict, with its messages; the head differs
        raise WeightsError(
            f"{pretrained.source} does not fit {name} with the {len(folder.classes)} classes of {cfg.folder}: "
            f"its classifier ({', '.join(skipped)}) is for another number of classes"
        )
    log.info("%s on %d images of %d classes: resize %d, centre crop %d", name, len(folder), len(folder.classes),
             prep.resize_size, size)  # fmt: skip
    loader = DataLoader(folder, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    return module.eval(), {"dataloaders": loader}


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_known_warnings()
    if bool(cfg.ckpt_path) == bool(cfg.weights):
        raise ConfigError("give either ckpt_path=<training checkpoint> or weights=<file or torchvision name> (with model= and folder=)")
    module, data = checkpoint_test(cfg) if cfg.ckpt_path else weights_test(cfg)
    # precision auto: the training run's rule, so its test metrics are reproduced
    with config_errors("trainer"):
        trainer = L.Trainer(**trainer_options(cfg.trainer, module.net), logger=False, callbacks=[RichProgressBar(leave=True)])
    results = trainer.test(module, **data)[0]
    source = str(Path(cfg.ckpt_path).resolve()) if cfg.ckpt_path else cfg.weights
    name = data["datamodule"].hparams["name"] if "datamodule" in data else str(Path(cfg.folder).resolve())
    write_metrics(run_dir / "metrics.json", results, checkpoint=source, data=name)
    log.info("run folder: %s", run_dir)
    return results


def run(cfg: DictConfig) -> None:
    """What ``zoo-eval`` runs once Hydra has composed ``cfg`` (see :mod:`zoo.cli.launch`)."""
    evaluate(cfg)


if __name__ == "__main__":
    from zoo.cli.launch import eval as main

    main()
