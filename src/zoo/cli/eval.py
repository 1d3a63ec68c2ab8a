"""``zoo-eval ckpt_path=...``: test a training checkpoint again on its own data split.

The data settings stored in the checkpoint rebuild the same split; ``+data.<key>=...``
overrides them (e.g. ``+data.root=/elsewhere``). Writes ``metrics.json`` to the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig

from zoo.cli import schema  # noqa: F401  (registers the config schemas)
from zoo.cli.common import (
    config_dir, config_errors, plain, quiet_known_warnings, reports_user_errors, trainer_options, write_metrics,
)  # fmt: skip

from zoo.inference import load_trained

log = logging.getLogger("zoo")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_known_warnings()
    trained = load_trained(cfg.ckpt_path, **(plain(cfg.get("data")) or {}))
    module, datamodule = trained.module, trained.datamodule
    datamodule.setup("test")
    with config_errors("trainer"):
        # precision auto: the training run's rule, so its test metrics are reproduced
        trainer = L.Trainer(**trainer_options(cfg.trainer, module.net), logger=False, callbacks=[RichProgressBar(leave=True)])
    results = trainer.test(module, datamodule=datamodule)[0]
    write_metrics(
        run_dir / "metrics.json", results, checkpoint=str(Path(cfg.ckpt_path).resolve()), data=datamodule.hparams["name"]
    )
    log.info("run folder: %s", run_dir)
    return results


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
