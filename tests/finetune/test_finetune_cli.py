"""Fine-tuning through zoo-train: short real runs, and bad weights refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.checkpoint import load_lightning_checkpoint
from zoo.cli.config import plain
from zoo.cli.train import train
from zoo.finetune import FinetuneConfig, adapt_data_config
from zoo.models.pretrained import load_pretrained
from zoo.models.weights import WeightsError
from zoo.models import get_model

from tests.helpers import QUIET, compose_config, run_main

SHORT = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "data.batch_size=8", "optim=adamw"]  # fmt: skip
LENET = {"activation": "relu", "pool": "max", "c3_table": "full", "norm": "batch"}  # configs/model/lenet5.yaml


def _pretrained(net: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Save ``net`` with batch-norm statistics that training would visibly move."""
    generator = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1, generator=generator)
            m.running_var.uniform_(0.5, 2, generator=generator)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(state, path)
    return state


def _trained(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_lightning_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()}


def test_freeze_keeps_the_backbone_and_its_batch_norm_statistics_bit_identical(tmp_path, one_thread):
    net = get_model("resnet18", num_classes=10, in_channels=1, small_input=True)
    before = _pretrained(net, tmp_path / "resnet18.pth")
    run = tmp_path / "run"
    overrides = ["model=resnet18", "model.small_input=true", "data.image_size=8", "finetune=freeze",
                 f"finetune.weights={tmp_path / 'resnet18.pth'}", *SHORT, *QUIET]  # fmt: skip
    train(compose_config("train", run, overrides))

    after = _trained(run)
    backbone = [k for k in before if not k.startswith("fc.")]
    assert {"layer1.0.bn1.running_mean", "layer4.1.bn2.num_batches_tracked"} <= set(backbone)
    for key in backbone:
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["fc.weight"], before["fc.weight"])  # the head learned
    record = json.loads((run / "metrics.json").read_text())
    assert record["trainable_params"] == net.fc.weight.numel() + net.fc.bias.numel()

    # The checkpoint records its preprocessing; fine-tuning from it feeds data the same way.
    pretrained = load_pretrained(str(run / "checkpoints" / "last.ckpt"))
    facts = pretrained.preprocessing
    assert pretrained.model_name == "resnet18" and facts.image_size == 8 and len(facts.mean) == len(facts.std) == 1
    data_cfg = {"name": "digits", "image_size": None, "channels": 1, "mean": None, "std": None}
    used = adapt_data_config(data_cfg, {"name": "resnet18"}, FinetuneConfig.from_dict({"weights": "x"}), pretrained)
    assert (used["image_size"], used["mean"], used["std"]) == (8, list(facts.mean), list(facts.std))


def test_gradual_unfreezes_stages_from_the_head_backwards_at_lower_lr(tmp_path, one_thread):
    before = _pretrained(get_model("lenet5", num_classes=10, **LENET), tmp_path / "lenet5.pth")
    run = tmp_path / "run"
    overrides = ["finetune=gradual", f"finetune.weights={tmp_path / 'lenet5.pth'}", "finetune.unfreeze_epochs=[1,2]",
                 *SHORT, "trainer.max_epochs=3", *QUIET]  # fmt: skip
    train(compose_config("train", run, overrides))

    after = _trained(run)
    changed = {k.split(".")[0] for k in before if not torch.equal(after[k], before[k])}
    assert changed == {"classifier", "f6", "c5"}  # head, then f6 at epoch 1, c5 at epoch 2; c1 and c3 frozen
    ckpt = load_lightning_checkpoint(run / "checkpoints" / "last.ckpt")
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert sorted(g["max_lr"] for g in groups) == [1e-5] * 4 + [1e-3] * 2  # one-cycle peaks: head 1e-3, unfrozen 1e-5
    params = dict(get_model("lenet5", num_classes=10, **LENET).named_parameters())
    trained = sum(p.numel() for k, p in params.items() if k.split(".")[0] in changed)
    assert json.loads((run / "metrics.json").read_text())["trainable_params"] == trained


@pytest.fixture
def weights_files(tmp_path) -> dict[str, Path]:
    torch.save(get_model("lenet5", **LENET).state_dict(), tmp_path / "lenet5.pth")
    blob = (tmp_path / "lenet5.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(blob[: len(blob) // 3])
    torch.save({"weights": [1, 2, 3]}, tmp_path / "not_a_state_dict.pth")
    torch.save(get_model("mlp").state_dict(), tmp_path / "mlp.pth")
    return {
        "missing": tmp_path / "missing.pth",
        "truncated": tmp_path / "truncated.pth",
        "not a state_dict": tmp_path / "not_a_state_dict.pth",
        "another architecture": tmp_path / "mlp.pth",
    }


@pytest.mark.parametrize(
    "case, message",
    [("missing", "not found"), ("truncated", "truncated or corrupt"),
     ("not a state_dict", "is not a state_dict"), ("another architecture", "missing keys")],
)  # fmt: skip
def test_bad_weights_stop_the_run_before_it_writes_anything(weights_files, tmp_path, case, message):
    run = tmp_path / "run"
    cfg = compose_config("train", run, ["finetune=freeze", f"finetune.weights={weights_files[case]}", *SHORT, *QUIET])
    with pytest.raises(WeightsError, match=message) as err:
        train(cfg)
    assert str(weights_files[case]) in str(err.value)
    assert not any(run.iterdir())  # no config.yaml, checkpoints, logs or metrics


def test_the_command_line_reports_bad_weights_in_one_line_and_exits_1(tmp_path):
    run = tmp_path / "run"  # a folder holding a run is refused before the weights: tests/test_hostile_inputs.py
    missing = tmp_path / "resnet18.pth"
    result = run_main(
        "zoo-train", "model=resnet18", "finetune=partial", f"finetune.weights={missing}", f"hydra.run.dir={run}", *QUIET
    )
    assert result.returncode == 1
    assert f"Error: cannot load pretrained weights: checkpoint not found: {missing}" in result.stderr
    assert "Expected a state_dict (.pth/.pt), a .safetensors file, a zoo checkpoint (.ckpt)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists() and not (run / "metrics.json").exists()


@pytest.mark.parametrize(
    "mode, rates",
    [("none", None), ("freeze", {"head": 1e-3}), ("partial", {"backbone": 1e-5, "head": 1e-3}),
     ("full", {"backbone": 1e-6, "head": 1e-3}), ("gradual", {"head": 1e-3})],
)  # fmt: skip
def test_each_finetune_config_composes_with_the_lectures_rates(tmp_path, mode, rates):
    cfg = compose_config("train", tmp_path, [f"finetune={mode}", "finetune.weights=w.pth"])
    config = FinetuneConfig.from_dict(plain(cfg.finetune))
    assert config.mode == mode and config.stage_lrs() == rates
    if mode == "gradual":
        assert config.lr_backbone == 1e-5 and config.unfreeze_epochs == (1, 2, 3, 4)
    assert compose_config("train", tmp_path, []).finetune.mode == "none"  # the default


def test_eval_and_predict_work_on_a_fine_tuned_checkpoint_with_its_new_classes(tmp_path, one_thread):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    _pretrained(get_model("lenet5", num_classes=10, **LENET), tmp_path / "lenet5.pth")
    run = tmp_path / "run"
    overrides = ["finetune=full", f"finetune.weights={tmp_path / 'lenet5.pth'}", "finetune.reset_head=true",
                 "data.classes=[7,8,9]", *SHORT, *QUIET]  # fmt: skip
    train(compose_config("train", run, overrides))
    ckpt = json.loads((run / "metrics.json").read_text())["checkpoint"]

    evaluated = run_main(
        "zoo-eval", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", "trainer.limit_test_batches=1"
    )  # the batch the training run tested on
    assert evaluated.returncode == 0, evaluated.stderr
    evaluated_acc = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]["test/acc"]
    trained_acc = json.loads((run / "metrics.json").read_text())["test"]["test/acc"]  # the tested checkpoint's
    assert evaluated_acc == pytest.approx(trained_acc, abs=1e-6)

    digit = load_digits()
    eight = int(np.flatnonzero(digit.target == 8)[0])
    Image.fromarray(np.round(digit.images[eight] * 255 / 16).astype(np.uint8)).save(tmp_path / "eight.png")
    predicted = run_main("zoo-predict", f"ckpt_path={ckpt}", f"inputs={tmp_path / 'eight.png'}", "top_k=5")
    assert predicted.returncode == 0, predicted.stderr
    names = [part.split()[0] for part in predicted.stdout.split(": ", 1)[1].split(", ")]
    assert sorted(names) == ["7", "8", "9"]  # the fine-tuned head's classes, named as digits, not 0..2
