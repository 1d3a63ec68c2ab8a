#!/usr/bin/env python
"""How good are a network's features for digits 5-9, before any fine-tuning? A linear probe.

    python scripts/transfer_probe.py random outputs/transfer_digits/pretrain/checkpoints/best.ckpt

For each network (``random``: a freshly initialised one, seed 0; otherwise a weights file
that ``finetune.weights`` takes), the small-input ResNet-18 of
``configs/experiment/resnet18_digits_transfer.yaml`` computes globally average-pooled features at
the outputs of ``layer1``..``layer4`` (eval mode) for the experiment's 50 training images
of digits 5-9 and its 180 test images. A logistic regression per stage, on features
standardised with the training images' statistics, is fitted on the 50 and scored on the
180. Features that transfer score higher than the random network's.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.linear_model import LogisticRegression

from zoo.data.digits import DigitsDataModule
from zoo.models.pretrained import load_into, load_pretrained
from zoo.models import get_model


@torch.no_grad()
def stage_features(net: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Pooled (N, C) features after each stage between the stem and the head."""
    net.eval()
    names = [name for name, _ in net.stages()]
    modules = dict(net.stages())
    x, pooled = modules["stem"](images), []
    for name in names[1:-1]:
        x = modules[name](x)
        pooled.append(x.mean(dim=(2, 3)))
    return pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("networks", nargs="+", help="'random' or a weights file (.ckpt, .pth, .safetensors)")
    args = parser.parse_args()
    data = DigitsDataModule(image_size=8, classes=[5, 6, 7, 8, 9], train_per_class=10)  # the experiment's
    data.setup()
    (train_x, train_y), (test_x, test_y) = data.train_set.tensors, data.test_set.tensors
    print("| network | " + " | ".join(f"layer{i}" for i in range(1, 5)) + " |\n|---|---|---|---|---|")
    for network in args.networks:
        torch.manual_seed(0)
        net = get_model("resnet18", num_classes=5, small_input=True, in_channels=1)
        if network != "random":
            load_into(net, load_pretrained(network))
        scores = []
        for train, test in zip(stage_features(net, train_x), stage_features(net, test_x), strict=True):
            mean, std = train.mean(0), train.std(0) + 1e-6
            probe = LogisticRegression(max_iter=5000).fit(((train - mean) / std).numpy(), train_y.numpy())
            scores.append(100 * probe.score(((test - mean) / std).numpy(), test_y.numpy()))
        print(f"| {network} | " + " | ".join(f"{s:.1f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
