"""Scaling out runs on existing engines: the SLURM launcher config composes and carries the trainer's shape."""

from tests.helpers import CONFIGS

from hydra import compose, initialize_config_dir

from zoo.cli import config  # noqa: F401  (registers the config schemas)


def test_slurm_launcher_config_composes_with_the_trainer_shape():
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2",
                       "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.timeout_min == 1440
