"""zoo-eval's test loop without Lightning gives what Lightning's ``trainer.test`` gives for the same module and data."""

import lightning as L
import pytest
import torch

from zoo.data import build_datamodule
from zoo.data.lightning import for_lightning
from zoo.errors import ConfigError
from zoo.tasks import ImageClassifier
from zoo.tasks.evaluation import batches_to_test, evaluate_network


@pytest.fixture(scope="module")
def digits():
    """The digits test split in uneven batches (360 images by 64: the last batch holds 40)."""
    torch.manual_seed(0)
    data = build_datamodule("digits", batch_size=64, image_size=8)
    data.setup("test")
    return data


def lightning_test(module, data, precision: str, limit) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", precision=precision, limit_test_batches=limit, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    return trainer.test(module, datamodule=for_lightning(data), verbose=False)[0]


@pytest.mark.parametrize(("precision", "limit"), [("32-true", None), ("bf16-mixed", None), ("32-true", 2), ("64-true", 0.5)])
def test_the_plain_loop_gives_lightnings_test_metrics(digits, precision, limit, one_thread):
    torch.manual_seed(1)
    model = {"name": "mlp", "num_classes": 10, "in_channels": 1, "image_size": 8, "dropout": 0.5}
    module = ImageClassifier(model=model, optim={"name": "sgd", "lr": 0.1}, label_smoothing=0.2)
    expected = lightning_test(module, digits, precision, limit)
    assert expected.keys() == {"test/loss", "test/acc", "test/acc_top5"}
    loader = digits.test_dataloader()
    count = batches_to_test(limit, len(loader))
    got = evaluate_network(module.net, "classification", loader, dict(module.hparams), torch.device("cpu"), precision, count)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert module.net.training is False  # dropout off: the test is deterministic


def test_each_precision_computes_in_its_own_numbers(digits, one_thread):
    """bf16 autocast gives a loss apart from float32's (so a loop that ignored ``precision``
    could not match Lightning above by chance); 64-true runs the network in float64 (whose
    loss rounds to float32's here)."""
    torch.manual_seed(1)
    net = ImageClassifier(model={"name": "mlp", "num_classes": 10, "in_channels": 1, "image_size": 8},
                          optim={"name": "sgd", "lr": 0.1}).net  # fmt: skip
    losses = {p: evaluate_network(net, "classification", digits.test_dataloader(), {}, torch.device("cpu"), p)["test/loss"]
              for p in ("32-true", "bf16-mixed")}  # fmt: skip
    assert abs(losses["bf16-mixed"] - losses["32-true"]) > 1e-5
    evaluate_network(net, "classification", digits.test_dataloader(), {}, torch.device("cpu"), "64-true")
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    with pytest.raises(ConfigError, match="trainer.precision=transformer-engine is not one zoo-eval runs"):
        evaluate_network(net, "classification", digits.test_dataloader(), {}, torch.device("cpu"), "transformer-engine")


@pytest.mark.parametrize(
    ("limit", "available", "count"),
    [(None, 6, 6), (2, 6, 2), (6, 6, 6), (9, 6, 6), (1.0, 6, 6), (0.5, 6, 3), (0.34, 6, 2), (0.2, 6, 1)],
)
def test_limit_test_batches_counts_as_lightning_does(limit, available, count):
    assert batches_to_test(limit, available) == count


@pytest.mark.parametrize(
    ("limit", "message"),
    [(-1, "a batch count or a fraction"), (True, "a batch count or a fraction"), ("2", "a batch count or a fraction"),
     (1.5, "a fraction above 1"), (0.1, "0.1 of 6 test batches is no batch"), (0, "tests no batch"),
     (0.0, "tests no batch")],
)  # fmt: skip
def test_limits_that_test_nothing_or_make_no_sense_are_refused(limit, message):
    with pytest.raises(ConfigError, match=message):
        batches_to_test(limit, 6)
