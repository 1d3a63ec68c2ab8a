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

from zoo.checkpoint import CheckpointError, load_lightning_checkpoint
from zoo.cli import schema  # noqa: F401  (registers the config schemas)
from zoo.cli.common import config_dir, config_errors, plain, quiet_known_warnings, reports_user_errors, write_metrics
from zoo.data import build_datamodule
from zoo.tasks import TASKS

log = logging.getLogger("zoo")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_known_warnings()
    ckpt = load_lightning_checkpoint(cfg.ckpt_path)
    data_hparams = ckpt.get("datamodule_hyper_parameters")
    if not data_hparams:
        raise CheckpointError(f"{cfg.ckpt_path} records no data settings; it was not written by zoo-train")
    data_cfg = {**data_hparams, **(plain(cfg.get("data")) or {})}
    with config_errors(f"data '{data_cfg.get('name')}'"):
        datamodule = build_datamodule(**data_cfg)
    if ckpt.get(type(datamodule).__qualname__):  # the data module's own state, e.g. vocabularies
        datamodule.load_state_dict(ckpt[type(datamodule).__qualname__])
    datamodule.setup("test")
    with config_errors(f"checkpoint {cfg.ckpt_path}"):
        module = TASKS.get(datamodule.task)(**ckpt["hyper_parameters"])
        module.load_state_dict(ckpt["state_dict"])
    with config_errors("trainer"):
        trainer = L.Trainer(**plain(cfg.trainer), logger=False, callbacks=[RichProgressBar(leave=True)])
    results = trainer.test(module, datamodule=datamodule)[0]
    write_metrics(run_dir / "metrics.json", results, checkpoint=str(Path(cfg.ckpt_path).resolve()), data=data_cfg["name"])
    log.info("run folder: %s", run_dir)
    return results


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
