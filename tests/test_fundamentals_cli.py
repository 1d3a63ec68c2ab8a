"""zoo-train with the reference optimizer, loss and activation of zoo.reference / zoo.reference.optim."""

import json

import pytest
import torch

from zoo.cli.train import train
from zoo.errors import UnknownNameError
from zoo.reference.activations import ReLU
from zoo.reference.losses import CrossEntropyLoss
from zoo.reference.optim import Adam
from zoo.tasks import ImageClassifier

from tests.helpers import QUIET, compose_config


def test_mlp_trains_on_digits_with_reference_adam_loss_and_activation(tmp_path, monkeypatch, one_thread):
    overrides = [
        "model=mlp", "optim=adam_ref", "task.loss=cross_entropy_ref", "model.activation=relu_ref",
        "trainer.max_epochs=2", *QUIET,
    ]  # fmt: skip
    cfg = compose_config("train", tmp_path, overrides)
    assert cfg.task.loss == "cross_entropy_ref" and cfg.optim.name == "adam_ref"

    built = {}
    configure = ImageClassifier.configure_optimizers

    def spy(self):  # record what the task really trains with
        out = configure(self)
        optimizer = out["optimizer"] if isinstance(out, dict) else out
        built.update(criterion=self.criterion, net=self.net, optimizer=optimizer)
        return out

    monkeypatch.setattr(ImageClassifier, "configure_optimizers", spy)
    accuracy = train(cfg)

    assert isinstance(built["criterion"], CrossEntropyLoss) and isinstance(built["optimizer"], Adam)
    assert any(isinstance(m, ReLU) for m in built["net"].modules())
    assert accuracy > 0.5  # the best validation accuracy; chance is 0.1
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["test"]["test/acc"] > 0.5
    hparams = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["loss"] == "cross_entropy_ref"  # checkpoints rebuild the same loss


@pytest.mark.parametrize(
    "overrides",
    [["model=mlp", "optim=sgd_ref", "task.loss=mse_onehot", "model.activation=sigmoid_ref"],
     ["model=lenet5", "optim=momentum_ref", "task.loss=hinge_ref", "model.activation=tanh_ref"],
     ["model=mlp", "optim=rmsprop_ref", "task.loss=multi_margin", "model.activation=gelu_tanh_ref"],
     ["model=mlp", "optim=momentum_ref", "optim.lr_in_velocity=true", "model.activation=leaky_relu_ref"],
     ["model=mlp", "optim=adam_ref", "optim.eps_inside_sqrt=true", "model.activation=gelu_ref",
      "task.label_smoothing=0.1"]],
)  # fmt: skip
def test_every_reference_config_runs(tmp_path, one_thread, overrides):
    cfg = compose_config("train", tmp_path, [*overrides, "trainer.fast_dev_run=true", *QUIET])
    assert 0.0 <= train(cfg) <= 1.0
    assert (tmp_path / "metrics.json").is_file()


def test_unknown_or_unfitting_loss_is_refused_with_the_choices():
    model = {"name": "mlp", "num_classes": 10, "in_channels": 1, "image_size": 8}
    with pytest.raises(UnknownNameError, match="Unknown loss 'hinge'. Did you mean: hinge_ref"):
        ImageClassifier(model=model, optim={"name": "sgd_ref", "lr": 0.1}, loss="hinge")
    with pytest.raises(ValueError, match="no label smoothing"):
        ImageClassifier(model=model, optim={"name": "sgd_ref", "lr": 0.1}, loss="mse_onehot", label_smoothing=0.1)


def test_top_level_loss_override_reaches_the_task(tmp_path):
    from zoo.cli.config import plain

    cfg = compose_config("train", tmp_path, ["loss=hinge_ref"])
    assert plain(cfg.task)["loss"] == "hinge_ref"
    cfg = compose_config("train", tmp_path, ["task.loss=mse_onehot"])
    assert plain(cfg.task)["loss"] == "mse_onehot"
