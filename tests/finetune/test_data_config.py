"""Explicit data settings win over the ones pretrained weights would infer
(:func:`zoo.finetune.data_config.adapt_data_config`), and :func:`data_options_used` says what ran."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from zoo.checkpoint import load_lightning_checkpoint
from zoo.cli.build import fit_model_to_data
from zoo.cli.train import train
from zoo.data import build_datamodule
from zoo.errors import ConfigError
from zoo.finetune import FinetuneConfig, adapt_data_config, data_options_used
from zoo.models import get_model
from zoo.models.pretrained import Pretrained, load_into, load_pretrained
from zoo.models.weights import Preprocessing, WeightsError, find_weights
from zoo.models.resnet import ResNet

from tests.helpers import QUIET, compose_config

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# What load_pretrained reads from ResNet18_Weights.IMAGENET1K_V1.transforms().
RESNET18 = Pretrained(
    "ResNet18_Weights.IMAGENET1K_V1 (/hub/checkpoints/resnet18-f37072fd.pth)",
    {"conv1.weight": torch.zeros(64, 3, 7, 7)},
    Preprocessing(224, tuple(IMAGENET_MEAN), tuple(IMAGENET_STD), 256),
    label="ResNet18_Weights.IMAGENET1K_V1",
)
FROM_WEIGHTS = FinetuneConfig.from_dict({"weights": "ResNet18_Weights.IMAGENET1K_V1"})
FOLDER = {"name": "imagefolder", "root": "images", "image_size": None, "resize_size": None, "mean": None, "std": None}
DIGITS = {"name": "digits", "image_size": None, "channels": 1, "mean": None, "std": None}
RESNET = {"name": "resnet18"}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_explicit_image_size_is_used_with_one_warning_and_a_null_one_is_the_weights(caplog):
    with caplog.at_level(logging.INFO):
        used = adapt_data_config({**FOLDER, "image_size": 112}, RESNET, FROM_WEIGHTS, RESNET18)
    assert used == {**FOLDER, "image_size": 112, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # resize: 112 / 0.875
    assert _warnings(caplog) == [
        "data.image_size=112 is used; the weights ResNet18_Weights.IMAGENET1K_V1 were trained at 224 "
        "(resize 256, crop 224): set data.image_size=null to use theirs"
    ]
    caplog.clear()
    inferred = adapt_data_config(FOLDER, RESNET, FROM_WEIGHTS, RESNET18)
    assert inferred == {**FOLDER, "image_size": 224, "resize_size": 256, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    same = adapt_data_config({**FOLDER, "image_size": 224}, RESNET, FROM_WEIGHTS, RESNET18)  # theirs, set explicitly
    assert same == inferred and _warnings(caplog) == []


def test_explicit_mean_and_std_are_used_with_a_warning_each_where_they_differ(caplog):
    mine = {**FOLDER, "mean": [0.5, 0.5, 0.5], "std": [0.25]}
    used = adapt_data_config(mine, RESNET, FROM_WEIGHTS, RESNET18)
    assert (used["mean"], used["std"], used["image_size"]) == ([0.5, 0.5, 0.5], [0.25], 224)
    assert _warnings(caplog) == [
        "data.mean=[0.5, 0.5, 0.5] is used; the weights ResNet18_Weights.IMAGENET1K_V1 were trained with mean "
        "[0.485, 0.456, 0.406]: set data.mean=null to use theirs",
        "data.std=[0.25] is used; the weights ResNet18_Weights.IMAGENET1K_V1 were trained with std "
        "[0.229, 0.224, 0.225]: set data.std=null to use theirs",
    ]
    caplog.clear()
    # Equal values are no conflict: the weights' own, and for gray data their mean (what null gives).
    adapt_data_config({**FOLDER, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, RESNET, FROM_WEIGHTS, RESNET18)
    gray = adapt_data_config({**DIGITS, "mean": [0.449], "std": [0.226]}, RESNET, FROM_WEIGHTS, RESNET18)
    assert (gray["mean"], gray["std"], gray["image_size"]) == ([0.449], [0.226], 224)
    assert _warnings(caplog) == []
    adapt_data_config({**DIGITS, "mean": [0.45]}, RESNET, FROM_WEIGHTS, RESNET18)
    assert _warnings(caplog) == [
        "data.mean=[0.45] is used; the weights ResNet18_Weights.IMAGENET1K_V1 were trained with mean "
        f"[{sum(IMAGENET_MEAN) / 3}]: set data.mean=null to use theirs"
    ]


def test_preprocessing_data_leaves_every_option_as_set(caplog):
    own = FinetuneConfig.from_dict({"weights": "x", "preprocessing": "data"})
    for data_cfg in (FOLDER, {**FOLDER, "image_size": 112, "mean": [0.5] * 3}):
        assert adapt_data_config(data_cfg, RESNET, own, RESNET18) == data_cfg
    assert _warnings(caplog) == []


def test_a_vits_model_image_size_sizes_null_data_and_an_explicit_other_data_size_is_refused(caplog):
    vit = {"name": "vit_tiny", "image_size": 48}
    assert adapt_data_config(DIGITS, vit, FROM_WEIGHTS, RESNET18)["image_size"] == 48
    assert adapt_data_config(FOLDER, vit, FROM_WEIGHTS, RESNET18)["resize_size"] is None  # 48 / 0.875, not 256
    assert adapt_data_config({**DIGITS, "image_size": 48}, vit, FROM_WEIGHTS, RESNET18)["image_size"] == 48
    assert _warnings(caplog) == []  # a size other than the weights' is what model.image_size asks for
    used = adapt_data_config({**DIGITS, "image_size": 32}, vit, FROM_WEIGHTS, RESNET18)
    assert used["image_size"] == 32 and _warnings(caplog) == []
    with pytest.raises(ConfigError, match="^model.image_size=48 but the data 'digits' has image_size=32; set model"):
        fit_model_to_data(vit, {"image_size": used["image_size"]}, "digits")  # where zoo-train refuses it


def test_adapt_channels_repeat_still_gives_three_channels_and_the_weights_statistics(caplog):
    repeat = FinetuneConfig.from_dict({"weights": "x", "adapt_channels": "repeat"})
    used = adapt_data_config({**DIGITS, "image_size": 64}, RESNET, repeat, RESNET18)
    assert used == {**DIGITS, "image_size": 64, "channels": 3, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    assert len(_warnings(caplog)) == 1 and "data.image_size=64 is used" in _warnings(caplog)[0]


def test_data_options_used_fill_what_was_inferred_and_only_that():
    digits = build_datamodule(**DIGITS)
    digits.setup("fit")
    used = data_options_used(DIGITS, digits)
    assert used["image_size"] == 32 and used["channels"] == 1  # the module's default, as before null
    assert used["mean"] == [digits.mean[0]] and 0.2 < used["mean"][0] < 0.4  # the training set's
    assert data_options_used({**DIGITS, "image_size": 8, "mean": [0.5]}, digits)["image_size"] == 8  # as set
    folder = build_datamodule(**FOLDER)  # reads no file before setup
    assert data_options_used(FOLDER, folder) == {
        **FOLDER, "image_size": 224, "resize_size": 256, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
    }  # fmt: skip
    cifar = {"name": "cifar10", "image_size": None}  # no mean/std options: none added (config.yaml must rebuild)
    assert data_options_used(cifar, build_datamodule(**cifar)) == {"name": "cifar10", "image_size": 32}


@pytest.fixture(scope="module")
def run_at_112(tmp_path_factory) -> tuple[Path, list[tuple[int, ...]], list[str]]:
    """``zoo-train model=resnet18 finetune=freeze finetune.weights=ResNet18_Weights.IMAGENET1K_V1
    data.image_size=112`` (digits, one short step), in-process, with a ResNet-18 file in
    torchvision's format under its cache name: the run folder, the input shapes the
    network saw and the warnings logged."""
    tmp_path = tmp_path_factory.mktemp("run_at_112")
    seen: list[tuple[int, ...]] = []
    warned: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warned.append(record.getMessage())
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape)) if isinstance(module, ResNet) else None
    )
    overrides = ["model=resnet18", "finetune=freeze", "finetune.weights=ResNet18_Weights.IMAGENET1K_V1",
                 "data.image_size=112", "data.batch_size=2", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "sched=none",
                 "trainer.precision=32-true", "logger=csv", *QUIET]  # fmt: skip
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
        path = find_weights("ResNet18_Weights.IMAGENET1K_V1", None).file()  # torchvision's own file name and format
        path.parent.mkdir(parents=True)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
        logging.getLogger("zoo").addHandler(handler)
        torch.set_num_threads(1)
        try:
            train(compose_config("train", tmp_path / "run", overrides))
        finally:
            torch.set_num_threads(threads)
            logging.getLogger("zoo").removeHandler(handler)
            hook.remove()
    return tmp_path / "run", seen, warned


def test_zoo_train_with_torchvision_weights_and_data_image_size_112_trains_at_112(run_at_112):
    run, seen, warned = run_at_112
    assert seen and set(seen) == {(2, 1, 112, 112)}  # training, validation and test batches
    assert [m for m in warned if "data.image_size" in m] == [
        "data.image_size=112 is used; the weights ResNet18_Weights.IMAGENET1K_V1 were trained at 224 "
        "(resize 256, crop 224): set data.image_size=null to use theirs"
    ]
    ckpt = load_lightning_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["DigitsDataModule"]["image_size"] == 112
    assert ckpt["DigitsDataModule"]["mean"] == pytest.approx([sum(IMAGENET_MEAN) / 3])  # gray: their mean


def test_config_yaml_and_metrics_json_record_the_data_options_that_ran(run_at_112):
    run, _, _ = run_at_112
    recorded = OmegaConf.load(run / "config.yaml").data
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ran"]["precision"] == OmegaConf.load(run / "config.yaml").trainer.precision == "32-true"
    for options in (OmegaConf.to_container(recorded), metrics["ran"]["data"]):
        assert options is not None and (options["image_size"], options["channels"]) == (112, 1)
        assert options["mean"] == pytest.approx([sum(IMAGENET_MEAN) / 3])  # null in the config: the weights' ran
        assert options["std"] == pytest.approx([sum(IMAGENET_STD) / 3])


def test_a_null_image_size_takes_the_size_the_architecture_is_fixed_to_and_only_that():
    from zoo.cli.build import fit_data_to_model

    assert fit_data_to_model({"image_size": None}, "lenet5") == {"image_size": 32}  # LeNet-5 takes 32 px only
    assert fit_data_to_model({"image_size": 8}, "lenet5") == {"image_size": 8}  # as set (refused later, in one line)
    assert fit_data_to_model({"image_size": None}, "resnet18") == {"image_size": None}  # any size: the data's default
    assert fit_data_to_model({"image_size": None}, "mlp") == {"image_size": None}  # sized by the data, not fixed
    assert fit_data_to_model({"name": "dates"}, "seq2seq_gru") == {"name": "dates"}  # no image size at all


GRAY_IMAGENET = {"mean": [sum(IMAGENET_MEAN) / 3], "std": [sum(IMAGENET_STD) / 3]}
REPEAT = FinetuneConfig.from_dict({"weights": "x", "adapt_channels": "repeat"})
LENET = {"name": "lenet5", "in_channels": None}


def test_data_without_a_resize_option_gets_none_and_weights_without_a_size_fill_the_rest(caplog):
    assert adapt_data_config(DIGITS, RESNET, FROM_WEIGHTS, RESNET18) == {**DIGITS, "image_size": 224, **GRAY_IMAGENET}
    # A checkpoint whose data recorded its statistics but no image size: those, and the size stays the data's.
    stats_only = Pretrained("run.ckpt", {}, Preprocessing(None, (0.3,), (0.2,)))
    assert adapt_data_config(DIGITS, LENET, FROM_WEIGHTS, stats_only) == {**DIGITS, "mean": [0.3], "std": [0.2]}
    assert _warnings(caplog) == []


def test_the_image_size_warning_names_no_resize_for_weights_that_have_none(caplog):
    trained = Pretrained("/runs/a/last.ckpt", {}, Preprocessing(32, (0.3,), (0.2,)))
    used = adapt_data_config({**DIGITS, "image_size": 28}, LENET, FROM_WEIGHTS, trained)
    assert used == {**DIGITS, "image_size": 28, "mean": [0.3], "std": [0.2]}
    assert _warnings(caplog) == [
        "data.image_size=28 is used; the weights /runs/a/last.ckpt were trained at 32: "
        "set data.image_size=null to use theirs"
    ]


def test_one_value_for_every_channel_and_float32_digits_are_the_weights_own_statistics(caplog):
    halves = Pretrained("w.pth", {}, Preprocessing(224, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    used = adapt_data_config({**FOLDER, "mean": [0.5], "std": [0.25]}, RESNET, FROM_WEIGHTS, halves)
    assert (used["mean"], used["std"]) == ([0.5], [0.25]) and _warnings(caplog) == []
    # Statistics a float32 computation recorded, written out with the digits it prints.
    digits = Pretrained("run.ckpt", {}, Preprocessing(32, (0.13066047430038452,), (0.30810779333114624,)))
    adapt_data_config({**DIGITS, "mean": [0.13066047], "std": [0.3081078]}, LENET, FROM_WEIGHTS, digits)
    assert _warnings(caplog) == []
    adapt_data_config({**FOLDER, "mean": [0.5, 0.5], "std": [0.25, 0.25, 0.25]}, RESNET, FROM_WEIGHTS, halves)
    assert _warnings(caplog) == [  # two values for three channels: not theirs
        "data.mean=[0.5, 0.5] is used; the weights w.pth were trained with mean [0.5, 0.5, 0.5]: "
        "set data.mean=null to use theirs"
    ]


def test_adapt_channels_repeat_takes_the_first_convs_input_channels_from_its_weights(caplog):
    rgb = Pretrained("rgb.pth", {"c1.0.weight": torch.zeros(6, 3, 5, 5)})  # LeNet-5: 5x5 kernels
    assert adapt_data_config(DIGITS, LENET, REPEAT, rgb) == {**DIGITS, "channels": 3}
    assert adapt_data_config({**DIGITS, "channels": 3}, LENET, REPEAT, rgb) == {**DIGITS, "channels": 3}
    gray = Pretrained("gray.pth", {"conv1.weight": torch.zeros(64, 1, 3, 3)})  # 3x3 kernels: the side is no count
    small = {"name": "resnet18", "small_input": True}
    assert adapt_data_config({**DIGITS, "channels": 3}, small, REPEAT, gray) == {**DIGITS, "channels": 1}
    # No 4-d kernel under the first conv's key (another architecture's weights; load_into refuses them) and
    # no first conv at all (an MLP): the channels as set.
    other = Pretrained("other.pth", {"c1.0.weight": torch.zeros(6, 3)})
    assert adapt_data_config(DIGITS, LENET, REPEAT, other) == DIGITS
    assert adapt_data_config(DIGITS, {"name": "mlp"}, REPEAT, rgb) == DIGITS
    assert _warnings(caplog) == []


def test_repeat_feeds_three_gray_copies_to_the_unchanged_rgb_network(tmp_path, one_thread):
    from zoo.data import build_datamodule

    rgb = get_model("resnet18", num_classes=10, in_channels=3, small_input=True)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    pretrained = load_pretrained(str(tmp_path / "rgb.pth"))
    config = FinetuneConfig.from_dict({"weights": str(tmp_path / "rgb.pth"), "adapt_channels": "repeat"})
    data_cfg = {"name": "digits", "image_size": 8, "channels": 1, "mean": None, "std": None}
    model_cfg = {"name": "resnet18", "in_channels": None, "small_input": True}
    data_cfg = adapt_data_config(data_cfg, model_cfg, config, pretrained)
    assert data_cfg["channels"] == 3
    dm = build_datamodule(**data_cfg)
    dm.setup()
    images = dm.train_set.tensors[0]
    assert dm.in_channels == 3 and images.shape[1] == 3
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    net = get_model("resnet18", num_classes=10, in_channels=dm.in_channels, small_input=True)
    load_into(net, pretrained, adapt_channels="repeat")
    assert torch.equal(net.conv1.weight, rgb.conv1.weight)  # loaded as is

    gray = get_model("resnet18", num_classes=10, in_channels=1, small_input=True)
    with pytest.raises(WeightsError, match="adapt_channels=repeat needs a data module with a 'channels' option"):
        load_into(gray, pretrained, adapt_channels="repeat")


def test_pretrained_preprocessing_fills_the_datas_inferred_options_unless_asked_not_to():
    pretrained = Pretrained("run.ckpt", {}, preprocessing=Preprocessing(16, (0.2,), (0.4,)))
    data_cfg = {"name": "digits", "image_size": None, "channels": 1, "mean": None, "std": None}  # configs/data/digits
    model_cfg = {"name": "lenet5"}
    used = adapt_data_config(data_cfg, model_cfg, FinetuneConfig.from_dict({"weights": "run.ckpt"}), pretrained)
    assert (used["image_size"], used["mean"], used["std"]) == (16, [0.2], [0.4])
    own = FinetuneConfig.from_dict({"weights": "run.ckpt", "preprocessing": "data"})
    kept = adapt_data_config(data_cfg, model_cfg, own, pretrained)
    assert kept == data_cfg
    # ImageNet statistics for a one-channel copy of the data: their mean.
    imagenet = Pretrained("x", {}, preprocessing=Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    gray = adapt_data_config(data_cfg, model_cfg, FinetuneConfig.from_dict({"weights": "x"}), imagenet)
    assert gray["mean"] == pytest.approx([0.449]) and gray["image_size"] == 224


def test_the_weights_interpolation_fills_a_null_one_and_an_explicit_one_is_kept():
    folder = {**FOLDER, "interpolation": None}  # configs/data/imagefolder.yaml
    bicubic = Pretrained("w.pth", {}, Preprocessing(384, tuple(IMAGENET_MEAN), tuple(IMAGENET_STD), 384, "bicubic"))
    vit = {"name": "vit_b_16"}
    assert adapt_data_config(folder, vit, FROM_WEIGHTS, bicubic)["interpolation"] == "bicubic"
    assert adapt_data_config(folder, vit, FROM_WEIGHTS, RESNET18)["interpolation"] == "bilinear"
    assert adapt_data_config({**folder, "interpolation": "nearest"}, vit, FROM_WEIGHTS, bicubic)["interpolation"] == "nearest"
    own = FinetuneConfig.from_dict({"weights": "w.pth", "preprocessing": "data"})
    assert adapt_data_config(folder, vit, own, bicubic)["interpolation"] is None  # the data's own: bilinear
    assert "interpolation" not in adapt_data_config(DIGITS, {"name": "lenet5"}, FROM_WEIGHTS, bicubic)  # no such option

