"""zoo-eval of a weights file on an ImageNet-style folder: acc@1/acc@5 as torchvision computes them."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from zoo.cli.eval import eval_device, evaluate
from zoo.errors import ConfigError
from zoo.models.weights import WeightsError

from tests.helpers import compose_config, informative_weights, write_image_folder

CLASSES = ("n01", "n02", "n03", "n04", "n05", "n06", "n07")  # more than five: acc@5 can miss


def torchvision_accuracy(model, folder) -> tuple[float, float]:
    """acc@1 and acc@5 with torchvision's own eval preset (resize 256, crop 224, ImageNet stats)."""
    preset = v2.Compose([
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize(256, antialias=True), v2.CenterCrop(224),
        v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])  # fmt: skip
    data = torchvision.datasets.ImageFolder(str(folder), transform=preset, loader=lambda p: Image.open(p).convert("RGB"))
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor(data.targets)
    with torch.no_grad():
        top5 = model.eval()(x).topk(5, dim=1).indices
    return (top5[:, 0] == y).float().mean().item(), (top5 == y[:, None]).any(dim=1).float().mean().item()


def test_weights_on_an_image_folder_give_torchvisions_acc1_and_acc5(tmp_path):
    write_image_folder(tmp_path / "imagenet", splits=("val",), classes=CLASSES, per_class=3)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=len(CLASSES))
    informative_weights(reference, torch.randn(8, 3, 64, 64))
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    acc1, acc5 = torchvision_accuracy(reference, tmp_path / "imagenet" / "val")
    assert 0 < acc5 < 1 and acc1 < acc5  # the check can tell acc@1 from acc@5

    cfg = compose_config("eval", tmp_path / "run", [
        "model=resnet18", f"weights={tmp_path / 'resnet18.pth'}", f"folder={tmp_path / 'imagenet' / 'val'}",
        "num_workers=0", "batch_size=8", "trainer.precision=32-true",
    ])  # fmt: skip
    results = evaluate(cfg)
    assert results["test/acc"] == pytest.approx(acc1, abs=1e-6)
    assert results["test/acc_top5"] == pytest.approx(acc5, abs=1e-6)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["test"]["test/acc_top5"] == pytest.approx(acc5, abs=1e-6)


def test_weights_for_another_class_count_or_no_source_are_refused(tmp_path):
    write_image_folder(tmp_path / "images", splits=("val",), classes=CLASSES[:3], per_class=1)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "r18.pth")
    cfg = compose_config("eval", tmp_path / "run", [
        "model=resnet18", f"weights={tmp_path / 'r18.pth'}", f"folder={tmp_path / 'images' / 'val'}", "num_workers=0",
    ])  # fmt: skip
    with pytest.raises(WeightsError, match="r18.pth does not fit resnet18 with the 3 classes"):
        evaluate(cfg)
    with pytest.raises(ConfigError, match="either ckpt_path"):
        evaluate(compose_config("eval", tmp_path / "run2", []))


@pytest.mark.parametrize(
    ("trainer", "message"),
    [({"devices": 2}, "tests on one device; trainer.devices=2"), ({"devices": -1}, "tests on one device"),
     ({"devices": [0, 1]}, "tests on one device"), ({"num_nodes": 2}, "trainer.num_nodes=2 ask for more"),
     ({"accelerator": "mps"}, "accelerator must be auto, cpu, gpu or cuda; got mps")],
)  # fmt: skip
def test_trainer_settings_the_test_loop_cannot_honour_are_refused(trainer, message):
    with pytest.raises(ConfigError, match=message):
        eval_device({"accelerator": "cpu", **trainer})


def test_the_test_runs_on_the_device_the_trainer_names(monkeypatch):
    assert eval_device({"accelerator": "cpu", "devices": 1, "num_nodes": 1}) == torch.device("cpu")
    assert eval_device({"accelerator": "auto", "devices": "auto"}) == torch.device("cpu")  # no CUDA here
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu needs a CUDA GPU"):
        eval_device({"accelerator": "gpu"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert eval_device({"accelerator": "gpu", "devices": [1]}) == torch.device("cuda", 1)
    assert eval_device({"accelerator": "auto", "devices": 1}) == torch.device("cuda", 0)
