"""The options the published recipes need: augmentation policies, random erasing, MixUp and
CutMix, an exponential moving average of the weights; and the recipes themselves compose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from lightning.pytorch.callbacks import EMAWeightAveraging
from torchvision.transforms import v2

from zoo.cli.build import build_callbacks, build_task
from zoo.cli.config import plain
from zoo.cli.train import train
from zoo.data import build_datamodule
from zoo.errors import ConfigError, DataError
from zoo.optim.factory import build_optimizer, build_scheduler
from zoo.tasks.classification import ImageClassifier

from tests.helpers import CONFIGS, QUIET, compose_config, write_image_folder


def train_transforms(tmp_path, **options) -> list:
    write_image_folder(tmp_path, splits=("train",), classes=("a", "b"), per_class=2)
    dm = build_datamodule(name="imagefolder", root=str(tmp_path), image_size=32, num_workers=0, val_fraction=0.5, **options)
    dm.setup("fit")
    return dm, list(dm.train_set.dataset.transform.transforms)


@pytest.mark.parametrize("policy, cls", [("randaugment", v2.RandAugment), ("trivialaugment", v2.TrivialAugmentWide),
                                         ("autoaugment", v2.AutoAugment)])  # fmt: skip
def test_augmentation_policies_run_on_the_uint8_image_before_normalising(tmp_path, policy, cls):
    dm, steps = train_transforms(tmp_path, auto_augment=policy, random_erasing=1.0)
    kinds = [type(t) for t in steps]
    assert kinds.index(cls) < kinds.index(v2.ToDtype) < kinds.index(v2.Normalize) < kinds.index(v2.RandomErasing)
    x, _ = dm.train_set[0]
    assert x.shape == (3, 32, 32) and (x == 0).sum() > 0  # an erased rectangle (zeros after normalising)


def test_an_unknown_policy_names_the_choices(tmp_path):
    with pytest.raises(DataError, match="randaugment, trivialaugment"):
        train_transforms(tmp_path, auto_augment="augmix")


def test_mixup_and_cutmix_give_soft_targets_and_train():
    module = ImageClassifier(
        model={"name": "lenet5", "num_classes": 10, "in_channels": 1}, optim={"name": "sgd", "lr": 0.1},
        mixup_alpha=0.2, cutmix_alpha=1.0,
    )  # fmt: skip
    assert isinstance(module.mix, v2.RandomChoice)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(10, (8,))
    mixed, target = module.mix(x, y)
    assert target.shape == (8, 10) and torch.allclose(target.sum(1), torch.ones(8)) and not torch.equal(mixed, x)
    loss = module.training_step((x, y), 0)
    assert loss.isfinite() and loss.requires_grad
    with pytest.raises(ConfigError, match="loss=cross_entropy"):  # zoo-train: a message, exit code 1
        ImageClassifier(model={"name": "lenet5"}, optim={"name": "sgd", "lr": 0.1}, mixup_alpha=0.2, loss="multi_margin")


def test_ema_of_the_weights_is_lightnings_callback_and_a_run_uses_it(tmp_path):
    cfg = compose_config("train", tmp_path, [
        "callbacks.ema={decay: 0.9, update_every_n_steps: 1}", "trainer.max_epochs=2", "data.batch_size=64", *QUIET,
    ])  # fmt: skip
    callbacks = build_callbacks(cfg.callbacks, tmp_path, has_logger=False, task=ImageClassifier)
    ema = [c for c in callbacks if isinstance(c, EMAWeightAveraging)]
    assert len(ema) == 1
    train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["test/acc"] > 0.5
    # The checkpoint holds the average as its weights and the trained ones beside them.
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    key = "net.c1.0.weight"
    assert not torch.equal(ckpt["state_dict"][key], ckpt["current_model_state"][key])


RECIPES = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def _recipe_data(tmp_path: Path, recipe: str) -> list[str]:
    """Overrides that point a recipe's data at small files written here in its format
    (the recipes name no path for ImageNet folders or translation pairs)."""
    data = compose_config("train", tmp_path / "probe", [f"experiment={recipe}"]).data.name
    if data == "imagefolder":
        write_image_folder(tmp_path / "images", splits=("train", "val"), per_class=1)
        return [f"data.root={tmp_path / 'images'}"]
    if data == "parallel_tsv":
        pairs = tmp_path / "pairs.tsv"
        pairs.write_text("".join(f"ein {i} .\tone {i} .\n" for i in range(20)), encoding="utf-8")
        return [f"data.path={pairs}"]
    return []


REAL_DATA = {"mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "parallel_tsv"}


def test_recipes_for_real_data_state_what_the_published_setup_reaches(tmp_path):
    """A user with the data and a GPU knows what to expect: every recipe for a real dataset
    quotes a published figure, and those of torchvision's weights are torchvision's own."""
    checked = []
    for recipe in RECIPES:
        if compose_config("train", tmp_path / recipe, [f"experiment={recipe}"]).data.name not in REAL_DATA:
            continue
        text = (CONFIGS / "experiment" / f"{recipe}.yaml").read_text()
        header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
        assert re.search(r"\d\.\d+ ?(%|BLEU)|score \d+\.\d+ / \d+\.\d+", header), recipe
        for weights, top1, top5 in re.findall(r"(\w+_Weights\.\w+),? scores? ([\d.]+) / ([\d.]+)", header):
            enum, member = weights.split(".")
            metrics = getattr(getattr(torchvision.models, enum), member).meta["_metrics"]["ImageNet-1K"]
            assert (float(top1), float(top5)) == (metrics["acc@1"], metrics["acc@5"]), recipe
            checked.append(recipe)
    assert sorted(checked) == ["alexnet_imagenet", "resnet50_imagenet", "vgg16_imagenet", "vit_b_16_imagenet"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_builds_its_data_model_optimizer_schedule_and_callbacks(tmp_path, recipe):
    """Every option a recipe sets reaches the code that takes it: a misspelt, moved or
    removed option fails here, not when someone runs the recipe."""
    cfg = compose_config("train", tmp_path / "run", [f"experiment={recipe}", *_recipe_data(tmp_path, recipe)])
    datamodule = build_datamodule(**plain(cfg.data))
    module = build_task(cfg, datamodule)  # the network fitted to the data's classes or vocabularies
    optimizer = build_optimizer(module.named_parameters(), **plain(cfg.optim), param_lrs=module.parameter_lrs())
    if cfg.sched:
        assert build_scheduler(optimizer, total_steps=100, steps_per_epoch=10, **module.scheduler_options()) is not None
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == trainable  # each once, none left out
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(trainable)
    assert build_callbacks(cfg.callbacks, tmp_path / "run", has_logger=True, task=type(module))


def test_the_inverse_sqrt_schedule_takes_the_model_width(tmp_path):
    """sched.d_model: null is the model's own d_model (64 for transformer_small, 128 when
    the width is overridden), so a wider model gets its paper learning rate without a second
    override."""
    for width in (None, 128):
        overrides = ["experiment=transformer_small_reverse", *([f"model.d_model={width}"] if width else [])]
        cfg = compose_config("train", tmp_path / "run", overrides)
        module = build_task(cfg, build_datamodule(**plain(cfg.data)))
        assert module.scheduler_options()["d_model"] == (width or 64) == module.net.d_model


def test_recipes_carry_the_published_hyperparameters(tmp_path):
    resnet = compose_config("train", tmp_path / "a", ["experiment=resnet50_imagenet"])
    assert (resnet.optim.lr, resnet.optim.weight_decay, resnet.sched.step_size, resnet.trainer.max_epochs) == (0.1, 1e-4, 30, 90)
    assert resnet.data.batch_size * resnet.trainer.devices == 256
    vgg = compose_config("train", tmp_path / "b", ["experiment=vgg16_imagenet"])
    assert vgg.model.name == "vgg16" and vgg.optim.lr == 0.01 and vgg.sched.step_size == 30
    vit = compose_config("train", tmp_path / "c", ["experiment=vit_b_16_imagenet"])
    assert (vit.optim.name, vit.optim.lr, vit.optim.weight_decay, vit.task.label_smoothing) == ("adamw", 0.003, 0.3, 0.11)
    assert (vit.task.mixup_alpha, vit.task.cutmix_alpha, vit.data.auto_augment) == (0.2, 1.0, "randaugment")
    assert vit.callbacks.ema.decay == 0.99998 and vit.trainer.gradient_clip_val == 1.0
    cifar = compose_config("train", tmp_path / "d", ["experiment=resnet18_cifar10"])
    assert list(cifar.sched.milestones) == [91, 136] and cifar.model.small_input
