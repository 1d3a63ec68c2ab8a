import torch
import torch.nn.functional as F

from zoo.tasks import ImageClassifier

SGD = {"name": "sgd", "lr": 0.1}


def test_auxiliary_losses_are_added_with_their_weight():
    module = ImageClassifier(model={"name": "googlenet", "num_classes": 4, "small_input": True}, optim=SGD, aux_loss_weight=0.3)
    y = torch.tensor([0, 1, 2, 3])
    logits, aux2, aux1 = torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 4)
    loss, main = module._loss((logits, aux2, aux1), y)
    expected = F.cross_entropy(logits, y) + 0.3 * (F.cross_entropy(aux2, y) + F.cross_entropy(aux1, y))
    torch.testing.assert_close(loss, expected)
    assert main is logits


def test_label_smoothing_reaches_the_loss():
    module = ImageClassifier(model={"name": "mlp", "num_classes": 3, "image_size": 8}, optim=SGD, label_smoothing=0.2)
    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(module._loss(logits, y)[0], F.cross_entropy(logits, y, label_smoothing=0.2))


def test_hyperparameters_are_plain_values_that_rebuild_the_module():
    module = ImageClassifier(model={"name": "lenet5", "num_classes": 10}, optim=SGD, sched={"name": "none"})
    hparams = dict(module.hparams)
    assert hparams == {
        "model": {"name": "lenet5", "num_classes": 10}, "optim": SGD, "sched": {"name": "none"},
        "label_smoothing": 0.0, "aux_loss_weight": 0.3, "loss": "cross_entropy", "l1": 0.0, "stage_lrs": None,
        "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
    }  # fmt: skip
    clone = ImageClassifier(**hparams)
    clone.load_state_dict(module.state_dict())
    x = torch.randn(2, 1, 32, 32)
    module.eval(), clone.eval()
    assert torch.equal(module(x), clone(x))


def test_top5_accuracy_only_when_there_are_more_than_five_classes():
    few = ImageClassifier(model={"name": "mlp", "num_classes": 3, "image_size": 8}, optim=SGD)
    many = ImageClassifier(model={"name": "mlp", "num_classes": 10, "image_size": 8}, optim=SGD)
    assert set(few.val_metrics.keys()) == {"val/acc"}
    assert set(many.val_metrics.keys()) == {"val/acc", "val/acc_top5"}


def test_l1_penalty_is_added_to_the_training_loss_on_weights_only():
    model = {"name": "mlp", "num_classes": 3, "image_size": 4, "hidden_sizes": [5]}
    plain_module = ImageClassifier(model=model, optim=SGD)
    l1_module = ImageClassifier(model=model, optim=SGD, l1=0.01)
    l1_module.load_state_dict(plain_module.state_dict())
    for module in (plain_module, l1_module):
        module.log = lambda *args, **kwargs: None  # no trainer attached
    batch = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    weights = sum(p.abs().sum() for p in plain_module.net.parameters() if p.ndim > 1)
    torch.manual_seed(0)
    base = plain_module.training_step(batch, 0)
    torch.manual_seed(0)
    torch.testing.assert_close(l1_module.training_step(batch, 0), base + 0.01 * weights)
