"""What a run writes besides checkpoints and logs (zoo.cli.outputs)."""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from zoo.cli.outputs import ran_summary, what_ran, write_metrics


def test_metrics_are_written_as_indented_json_of_floats_with_the_extra_keys(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, {"test/acc": torch.tensor(0.5), "test/n": 3}, weights="last", epoch=2)
    assert path.read_text() == (
        '{\n  "test": {\n    "test/acc": 0.5,\n    "test/n": 3.0\n  },\n  "weights": "last",\n  "epoch": 2\n}\n'
    )
    assert type(json.loads(path.read_text())["test"]["test/n"]) is float


class _Trainer:
    precision = "bf16-mixed"


class _Module:
    hparams = {"model": {"name": "lenet5", "num_classes": 10, "in_channels": 1}}


def test_the_config_as_it_ran_has_the_datas_inferred_options_the_fitted_model_and_the_chosen_precision():
    cfg = OmegaConf.create({"model": {"name": "lenet5", "num_classes": None}, "data": {"name": "digits", "mean": None},
                            "trainer": {"precision": "auto"}, "seed": 3})  # fmt: skip
    data = {"name": "digits", "image_size": 32, "mean": [0.3], "std": [0.4], "channels": 1, "batch_size": 256}
    ran = what_ran(cfg, data, _Module(), _Trainer())
    assert ran == {"model": {"name": "lenet5", "num_classes": 10, "in_channels": 1}, "data": data,
                   "trainer": {"precision": "bf16-mixed"}, "seed": 3}  # fmt: skip
    assert cfg.model.num_classes is None and cfg.trainer.precision == "auto"  # the composed config is left as it was
    assert ran_summary(ran) == {"precision": "bf16-mixed", "data": {"image_size": 32, "mean": [0.3], "std": [0.4], "channels": 1}}
