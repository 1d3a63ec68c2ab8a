"""Two processes (DDP over gloo, CPU) train to the same weights as one process at the same global batch."""

import torch

from zoo.cli.train import train

from tests.helpers import QUIET, compose_config, run_cli

# No dropout, batch norm or augmentation: with those, per-process randomness and batch
# statistics legitimately differ from one process. drop_last keeps every global batch full.
COMMON = [
    "model=mlp", "model.dropout=0", "model.norm=null", "data.max_shift=0", "data.drop_last=true",
    "trainer.max_epochs=1", "~logger", *QUIET,
]  # fmt: skip


def test_two_processes_match_one_process_at_the_same_global_batch(tmp_path):
    train(compose_config("train", tmp_path / "one", [*COMMON, "trainer=cpu", "data.batch_size=64"]))  # in this process
    two = run_cli(
        "zoo-train", *COMMON, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "data.batch_size=32", f"hydra.run.dir={tmp_path / 'two'}",
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in two.stderr + two.stdout
    a = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 1257 // 64
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-5)
