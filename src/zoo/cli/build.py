"""Building a run's objects from its validated config, each once: the model and data fitted
to each other, the task, the callbacks, the loggers and the trainer (precision and speed-ups
chosen for the network), with the warnings known to help nobody quieted."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import callbacks as cb
from lightning.pytorch import loggers as pl_loggers
from omegaconf import DictConfig, OmegaConf

from zoo.callbacks import EpochLog, ExactResume, ModelSummaryWithMACs, StopOnNonFiniteLoss
from zoo.checkpoint_io import AtomicCheckpointIO
from zoo.cli.config import fit_model_to_data, plain
from zoo.cli.entry import rank_zero
from zoo.data import DataModule
from zoo.errors import ConfigError, config_errors
from zoo.finetune import FinetuneConfig, finetune_callbacks
from zoo.loggers import ResumableCSVLogger, mlflow_logger, wandb_logger
from zoo.models import MODELS, build_on_meta
from zoo.perf import accelerator_type, choose_precision, require_cuda, speed_up
from zoo.tasks import TASKS

log = logging.getLogger("zoo")


def quiet_known_warnings() -> None:
    """Silence warnings that are expected for this project's setups and help nobody."""
    # The bundled digits live in memory: worker processes would only add start-up cost.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    # A resumed run's CSV logger keeps the rows before the checkpoint (zoo.loggers), whatever Lightning says.
    warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")
    # Step logs are written every log_every_n_steps steps counted across epochs, and the
    # epoch means at each epoch's end (zoo.tasks.base): short epochs lose nothing.
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    # Lightning 2.6 calls torch's deprecated LeafSpec check on every batch transfer.
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\).*is deprecated.*")
    # debug=overfit trains on the same few batches each epoch: unshuffled is what was asked for.
    warnings.filterwarnings("ignore", ".*You requested to overfit but enabled train dataloader shuffling.*")
    # Mixed precision keeps the weights in float32, so the 32 bits the summary falls back to are right.
    warnings.filterwarnings("ignore", r"Precision .*mixed is not supported by the model summary.*")
    # `import lightning` gives its logger a console handler of its own; under Hydra's logging
    # (console and train.log) every Lightning line then printed twice.
    if logging.getLogger().hasHandlers():
        lightning_logger = logging.getLogger("lightning")
        for handler in [h for h in lightning_logger.handlers if type(h) is logging.StreamHandler]:
            lightning_logger.removeHandler(handler)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):  # where it logs
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoProductTips) for f in logger.filters):
            logger.addFilter(_NoProductTips())


class _NoProductTips(logging.Filter):
    """Drop Lightning's advertisements for other products ("💡 Tip: ... try installing ...")
    and its note that our model summary replaces its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("💡 Tip", "Trainer already configured with model summary"))


def fit_data_to_model(data_cfg: dict[str, Any], model_name: str) -> dict[str, Any]:
    """A ``null`` (inferred) ``data.image_size`` takes the size the model's architecture
    is fixed to (LeNet-5: 32) where it has one; otherwise the data module's default stays."""
    if "image_size" not in data_cfg or data_cfg["image_size"] is not None:
        return data_cfg
    fixed = getattr(type(build_on_meta(MODELS.get(model_name))), "fixed_image_size", None)  # the class's, not an instance's
    return {**data_cfg, "image_size": fixed} if fixed else data_cfg


def build_task(cfg: DictConfig, datamodule: DataModule, **task_options: Any) -> L.LightningModule:
    """The task module for ``cfg.task`` with a network fitted to the data; ``task_options``
    are further task arguments (fine-tuning's ``stage_lrs``)."""
    task_cfg, data_name = {**plain(cfg.task), **task_options}, cfg.data.name
    task_name = task_cfg.pop("name")
    if datamodule.task != task_name:
        raise ConfigError(
            f"data '{data_name}' is for the {datamodule.task} task, but task={task_name}; "
            f"choose a {task_name} dataset or task={datamodule.task} with a matching model"
        )
    model_cfg = fit_model_to_data(plain(cfg.model), datamodule.model_facts(), data_name)
    with config_errors(f"model '{model_cfg.get('name')}'"):
        module = TASKS.get(task_name)(model=model_cfg, optim=plain(cfg.optim), sched=plain(cfg.sched), **task_cfg)
    datamodule.check_model(module.net, model_cfg)
    return module


def build_callbacks(cfg: DictConfig, run_dir: Path, has_logger: bool, task: type[L.LightningModule]) -> list[L.Callback]:
    """Checkpoints (best by the task's validation metric unless set, and last), early
    stopping, progress bar and LR monitor, as ``cfg`` (the ``callbacks`` group) asks."""
    callbacks: list[L.Callback] = []
    if cfg.get("checkpoint"):
        c = cfg.checkpoint
        monitor = c.get("monitor") or task.monitor
        mode = c.get("mode") or (task.monitor_mode if monitor == task.monitor else "max")
        callbacks.append(
            cb.ModelCheckpoint(
                dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode,
                save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False,
            )
        )  # fmt: skip
        if c.get("save_last"):
            # The latest state, overwritten in place (atomically: temporary file + rename)
            # at every validation and, with every_n_train_steps, also mid-epoch.
            callbacks.append(
                cb.ModelCheckpoint(
                    dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                    every_n_train_steps=c.get("every_n_train_steps"), enable_version_counter=False,
                )
            )  # fmt: skip
        callbacks.append(ExactResume())
    if cfg.get("early_stopping"):
        callbacks.append(cb.EarlyStopping(**plain(cfg.early_stopping)))
    if cfg.get("ema"):
        # An exponential moving average of the weights (Polyak averaging), validated,
        # tested and checkpointed in place of the trained weights: Lightning's callback.
        callbacks.append(cb.EMAWeightAveraging(**plain(cfg.ema)))
    bar = cfg.get("progress_bar", "auto")
    if bar == "auto":  # a bar on a terminal; in a file or a pipe, the epoch lines below instead
        bar = "tqdm" if sys.stdout.isatty() else "none"
    if bar == "rich":
        callbacks.append(cb.RichProgressBar(refresh_rate=cfg.get("refresh_rate", 1), leave=True))
    elif bar == "tqdm":
        callbacks.append(cb.TQDMProgressBar(refresh_rate=cfg.get("refresh_rate", 1)))
    elif bar not in (None, "none"):
        raise ConfigError(f"callbacks.progress_bar must be auto, rich, tqdm or none, got {bar!r}")
    if cfg.get("epoch_log", True):
        callbacks.append(EpochLog())
    if cfg.get("lr_monitor") and has_logger:
        callbacks.append(cb.LearningRateMonitor(logging_interval="step"))
    if cfg.get("stop_on_nonfinite_loss", True):
        callbacks.append(StopOnNonFiniteLoss())
    return callbacks


def build_loggers(cfg: DictConfig | None, run_dir: Path, resume_step: int | None = None, store_dir: Path | None = None) -> list:
    """The loggers ``cfg`` (the ``logger`` group) names: ``csv`` (``<run>/csv/metrics.csv``),
    ``tensorboard`` (``<run>/tensorboard``), ``mlflow`` (by default a local store
    ``<store_dir>/mlflow.db``) and ``wandb`` (``<run>/wandb``, offline without credentials).
    A run resumed after ``resume_step`` optimizer steps keeps the CSV rows and TensorBoard
    events of the steps before (dropping the later ones) and continues its MLflow / W&B run."""
    loggers = []
    for name, options in (plain(cfg) or {}).items():
        options = dict(options or {})
        if name == "csv":
            loggers.append(ResumableCSVLogger(save_dir=run_dir, name="csv", version="", resume_step=resume_step, **options))
        elif name == "tensorboard":
            if resume_step is not None:  # TensorBoard hides what the killed run logged from this step on
                options.setdefault("purge_step", resume_step)
            loggers.append(pl_loggers.TensorBoardLogger(save_dir=run_dir, name="tensorboard", version="", **options))
        elif name == "mlflow":
            loggers.append(mlflow_logger(run_dir, store_dir or run_dir.parent, resume=resume_step is not None, **options))
        elif name == "wandb":
            loggers.append(wandb_logger(run_dir, **options))
        else:
            raise ConfigError(f"unknown logger '{name}'; available: csv, tensorboard, mlflow, wandb")
    return loggers


def trainer_options(trainer_cfg: DictConfig, net: Any) -> dict[str, Any]:
    """``cfg.trainer`` as Trainer arguments, its ``precision: auto`` resolved for ``net`` (zoo.perf)."""
    return _trainer_options(trainer_cfg, net)[0]


def _trainer_options(trainer_cfg: DictConfig, net: Any) -> tuple[dict[str, Any], str]:
    """:func:`trainer_options` and why its precision was chosen (:func:`zoo.perf.choose_precision`)."""
    options = plain(trainer_cfg)
    if options.get("accelerator") in ("gpu", "cuda"):
        require_cuda(f"trainer.accelerator={options['accelerator']} (trainer=gpu)")
    with config_errors("trainer"):
        options["precision"], why = choose_precision(options.get("precision", "auto"), options.get("accelerator", "auto"), net)
    return options, why


def build_trainer(
    cfg: DictConfig, run_dir: Path, module: L.LightningModule, resume_step: int | None = None,
    extra_callbacks: list[L.Callback] = (), finetune: FinetuneConfig | None = None,
) -> L.Trainer:
    """The Trainer for training the task ``module`` (built by :func:`build_task`) as ``cfg``
    says, its speed switches (``cfg.perf``) applied to ``module.net``. ``finetune`` is the
    run's parsed fine-tuning config (its callbacks; ``None``: no fine-tuning);
    ``extra_callbacks`` are the command's own (zoo-train's signal handling)."""
    net = module.net
    options, why = _trainer_options(cfg.trainer, net)
    if rank_zero():  # what runs, where, before anything else about the run
        device = accelerator_type(options.get("accelerator", "auto"))
        log.info("device %s, precision %s (%s), %d threads, run folder %s",
                 device, options["precision"], why, torch.get_num_threads(), run_dir)  # fmt: skip
    perf = plain(cfg.get("perf")) or {}
    with config_errors("perf"):
        applied = speed_up(net, options["precision"], perf.get("channels_last", "auto"), perf.get("compile"), options.get("accelerator", "auto"))
    log.info("speed: precision %s, channels_last %s, compile %s", *applied.values())
    loggers = build_loggers(cfg.get("logger"), run_dir, resume_step, Path(OmegaConf.select(cfg, "paths.output_dir", default="outputs")))
    callbacks = build_callbacks(cfg.callbacks, run_dir, has_logger=bool(loggers), task=type(module))
    if finetune is not None:
        callbacks += finetune_callbacks(finetune, plain(cfg.optim))
    callbacks += list(extra_callbacks)
    if options.get("enable_model_summary") is not False:  # Lightning keeps a given summary callback even when off
        callbacks.append(ModelSummaryWithMACs())
    with config_errors("trainer"):
        return L.Trainer(
            **options, callbacks=callbacks, logger=loggers or False, default_root_dir=run_dir,
            enable_progress_bar=any(isinstance(c, cb.ProgressBar) for c in callbacks),  # none: no default bar either
            plugins=[AtomicCheckpointIO()],  # atomic saves beside the file; loads through zoo.checkpoint
        )  # fmt: skip
