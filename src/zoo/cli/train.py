"""``zoo-train``: the config validated (:mod:`zoo.cli.config`), the run folder claimed, data +
task + trainer built (:mod:`zoo.cli.build`), fit, test, the run folder written
(:mod:`zoo.cli.outputs`).

The run folder (``hydra.run.dir``) and what it holds: "What a run writes" in README.md.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from zoo.cli.entry import continues_run, rank_zero
from zoo.cli.config import check_train_config
from zoo.files import atomic_write, claim_run_folder, holds, release_run_folder, remove_stale_temporaries

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger("zoo")


def resume_from(cfg: DictConfig, run_dir: Path) -> str | None:
    """``ckpt_path`` if given; with ``resume=true``, the run folder's ``last.ckpt`` if there is one."""
    if cfg.ckpt_path or not cfg.resume:
        return cfg.ckpt_path
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    log.info("resume=true but %s does not exist yet: starting from scratch", last)
    return None


def tested_checkpoint(test_weights: str, trainer: L.Trainer) -> str | None:
    """The checkpoint file whose weights ``trainer.test`` should use; ``None``: the weights in memory.

    ``last``: the weights training ended with (``last.ckpt`` when it is written); ``best``:
    the checkpoint with the best validation score (``best.ckpt``).
    """
    want_last = test_weights == "last"
    for callback in trainer.checkpoint_callbacks:
        if (callback.monitor is None) == want_last and callback.best_model_path:
            return callback.best_model_path
    return None


def resumes(trainer: L.Trainer) -> int:
    """How many times the run was resumed (0 for a run that never stopped)."""
    from zoo.callbacks import ExactResume

    return next((c.resumes for c in trainer.callbacks if isinstance(c, ExactResume)), 0)


def train(cfg: DictConfig) -> float:
    """Train and test as ``cfg`` says; returns the best validation score (the sweep objective).

    The run folder is claimed first (see :func:`zoo.files.claim_run_folder`) and released at
    the end; when launched by ``zoo-train``, both happen around this call (zoo.cli.launch),
    the claim before Hydra writes into the folder.
    SIGTERM or Ctrl-C during training saves ``last.ckpt``, writes ``metrics.json`` with
    ``"status": "interrupted"`` and exits with 128 + the signal's number.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    check_train_config(cfg)
    if not rank_zero():
        return _train(cfg, run_dir)  # DDP's other processes: rank 0 holds the folder
    if holds(run_dir):  # zoo-train claimed it before Hydra wrote into it, and lets it go at the end
        return _train_in(cfg, run_dir)
    claim_run_folder(run_dir, resume=continues_run(cfg, run_dir), overwrite=cfg.overwrite)
    try:
        return _train_in(cfg, run_dir)
    finally:
        release_run_folder(run_dir)


def _train_in(cfg: DictConfig, run_dir: Path) -> float:
    remove_stale_temporaries(run_dir / "checkpoints")  # left by a writer that was killed
    return _train(cfg, run_dir)


def _interrupted(err: Interrupted, run_dir: Path, cfg: DictConfig, **info) -> NoReturn:
    """Record an interrupted run in metrics.json, say how to resume it, exit with 128 + the signal."""
    from zoo.checkpoint import load_training_state
    from zoo.cli.outputs import write_metrics

    last = run_dir / "checkpoints" / "last.ckpt"
    step = err.step
    if step is None and last.is_file():
        step = int(load_training_state(last)["global_step"])
    write_metrics(run_dir / "metrics.json", {}, status="interrupted", signal=signal.Signals(err.signum).name,
                  step=step, checkpoint=str(last) if last.is_file() else None, **info)  # fmt: skip
    name = signal.Signals(err.signum).name
    if last.is_file():
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("resume=", "overwrite="))]
        again = shlex.join(["zoo-train", *overrides, f"hydra.run.dir={run_dir}", "resume=true"])  # pastes into a shell
        log.warning("%s: stopped at step %s, saved in %s; resume with: %s", name, step, last, again)
    else:
        log.warning("%s: stopped before any checkpoint was saved; nothing to resume", name)
    sys.exit(128 + err.signum)


def _train(cfg: DictConfig, run_dir: Path) -> float:
    # A checkpoint to resume from is read and checked first (torch only, before Lightning and
    # the data): a missing, corrupt, unsafe or foreign file stops the run in one line, before
    # anything is written. Its fit to the model is checked once the model is built.
    ckpt_path = resume_from(cfg, run_dir)
    if ckpt_path:
        from zoo.checkpoint import load_training_state

        resumed = load_training_state(ckpt_path)

    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from zoo.callbacks import Interrupted, StopOnSignal
    from zoo.checkpoint import check_resumable
    from zoo.cli.build import build_task, build_trainer, fit_data_to_model, quiet_known_warnings
    from zoo.cli.config import plain
    from zoo.cli.outputs import ran_summary, what_ran, write_metrics
    from zoo.data import build_datamodule
    from zoo.data.lightning import for_lightning
    from zoo.errors import config_errors
    from zoo.finetune import FinetuneConfig, adapt_data_config, apply_finetuning, data_options_used
    from zoo.loggers import finish_trackers, log_run_artifacts
    from zoo.models.pretrained import load_pretrained
    from zoo.plotting import plot_curves

    started = time.monotonic()
    quiet_known_warnings()
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    finetune = FinetuneConfig.from_dict(plain(cfg.get("finetune")))
    # Weights are read first: a missing, unsafe or foreign file stops the run before anything is written.
    pretrained = load_pretrained(finetune.weights, finetune.download, cfg.model.name) if finetune.weights else None

    data_cfg = fit_data_to_model(adapt_data_config(plain(cfg.data), plain(cfg.model), finetune, pretrained), cfg.model.name)
    with config_errors(f"data '{data_cfg.get('name')}'"):
        datamodule = build_datamodule(**data_cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    lightning_data = for_lightning(datamodule)  # what the Trainer takes

    module = build_task(cfg, datamodule, **finetune.task_options())
    apply_finetuning(module.net, finetune, pretrained)

    resume_step = None
    if ckpt_path:
        check_resumable(resumed, module, ckpt_path)
        resume_step = int(resumed["global_step"])
        del resumed  # Lightning reads the file again, through AtomicCheckpointIO
    stop = StopOnSignal()
    trainer = build_trainer(cfg, run_dir, module, resume_step, extra_callbacks=[stop], finetune=finetune)
    try:
        # Under DDP every process runs this function. A resumed run keeps its first config.yaml
        # (what a resume changed: config.resume-<n>.yaml, zoo.cli.resume).
        ran = what_ran(cfg, data_options_used(data_cfg, datamodule), module, trainer)
        if trainer.is_global_zero and (resume_step is None or not (run_dir / "config.yaml").exists()):
            atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(ran))
        if resume_step is None:  # a resumed run's loggers hold its config already (MLflow params cannot change)
            for logger in trainer.loggers:
                logger.log_hyperparams(ran)
        with stop.handling():
            try:
                trainer.fit(module, datamodule=lightning_data, ckpt_path=ckpt_path, weights_only=True)
            except SIGTERMException:  # Lightning's own stop, raised between our checks
                raise Interrupted(signal.SIGTERM, None) from None
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)  # after any unfreezing

        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint else ""
        score = checkpoint.best_model_score if best else trainer.callback_metrics.get(module.monitor)
        tested = tested_checkpoint(cfg.test_weights, trainer)
        with stop.handling():
            # verbose=False: Lightning's results table would repeat the test line logged below
            results = trainer.test(module, datamodule=lightning_data, ckpt_path=tested, weights_only=True, verbose=False)[0]
        if trainer.is_global_zero:
            write_metrics(
                run_dir / "metrics.json", results, model=cfg.model.name, data=data_cfg["name"], ran=ran_summary(ran),
                status="finished", test_weights=cfg.test_weights, checkpoint=tested, epochs=trainer.current_epoch, seed=cfg.seed,
                trainable_params=trainable, seconds=round(time.monotonic() - started, 1), resumes=resumes(trainer),
                best_val={"monitor": checkpoint.monitor if best else module.monitor, "mode": module.monitor_mode,
                          "score": float(score) if score is not None else None},
            )  # fmt: skip
            metrics_csv = run_dir / "csv" / "metrics.csv"
            if metrics_csv.is_file():
                plot_curves(metrics_csv, run_dir / "curves.png")
            log_run_artifacts(trainer.loggers, run_dir, Path(tested) if tested else run_dir / "checkpoints" / "last.ckpt")
            summary = ", ".join(f"{name} {value:.4f}" for name, value in sorted(results.items()))
            log.info("%s (%s weights)", summary, cfg.test_weights)
    except Interrupted as err:
        if trainer.is_global_zero:
            _interrupted(err, run_dir, cfg, model=cfg.model.name, data=data_cfg["name"], seed=cfg.seed,
                         seconds=round(time.monotonic() - started, 1))  # fmt: skip
        raise
    finally:
        finish_trackers(trainer.loggers)
    log.info("run folder: %s", run_dir)
    return float(score) if score is not None else float("nan")


def run(cfg: DictConfig) -> float:
    """What ``zoo-train`` runs once Hydra has composed ``cfg`` (see :mod:`zoo.cli.launch`)."""
    return train(cfg)


if __name__ == "__main__":
    from zoo.cli.launch import train as main

    main()
