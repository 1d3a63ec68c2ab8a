"""Loggers: a CSV logger whose history survives a resume, and the experiment trackers.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when a run starts in a folder that has
one, so a resumed run used to lose every row before the resume. Here a run resumed from a
checkpoint taken after ``k`` optimizer steps keeps the rows of steps ``0 .. k-1`` (what the
checkpointed run had logged) and drops the rest, which the resumed run logs again: the
file ends as an uninterrupted run's would (Lightning writes each row to disk as it is
logged, so the rows a checkpoint stands for are there when a kill comes).

``logger=mlflow`` and ``logger=wandb`` (optional extras ``zoo[mlflow]``, ``zoo[wandb]``)
are Lightning's ``MLFlowLogger`` and ``WandbLogger``, set up to work offline: see
:func:`mlflow_logger` and :func:`wandb_logger`.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger

from zoo.errors import ConfigError


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that keeps the rows before ``resume_step`` (``None``: a fresh run)."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = os.path.join(self.log_dir, "metrics.csv")
        kept: list[dict[str, str]] = []
        header: list[str] = []
        if self.resume_step is not None and os.path.isfile(path):
            with open(path, newline="") as file:
                reader = csv.DictReader(file)
                header = list(reader.fieldnames or [])
                kept = [row for row in reader if row.get("step") and int(float(row["step"])) < self.resume_step]
        writer = super().experiment  # a fresh writer: Lightning removes the old file here
        if kept:
            with open(path, "w", newline="") as file:
                out = csv.DictWriter(file, fieldnames=header)
                out.writeheader()
                out.writerows(kept)
            writer.metrics_keys = sorted(header)  # new rows append under the same header
        return writer


# Experiment trackers (optional extras): MLflow and Weights & Biases through Lightning's own
# loggers, set up so that a run works offline and a resumed run continues its tracker run.


def tracker_run_name(run_dir: Path) -> str:
    """The name a run folder ``<root>/<date>/<time>`` (or a sweep's ``<time>/<job>``) gets in a tracker."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def _require(module: str, logger: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"logger={logger} needs {module}, which is not installed: pip install 'zoo[{extra}]'")


def mlflow_logger(run_dir: Path, store_dir: Path, resume: bool, **options: Any) -> Any:
    """Lightning's ``MLFlowLogger`` for the run in ``run_dir``.

    Without a ``tracking_uri`` the runs go to a local SQLite store, ``<store_dir>/mlflow.db``
    (MLflow's recommended local backend; its ``./mlruns`` file store is deprecated), with
    artifacts under ``<store_dir>/mlartifacts``: ``mlflow ui --backend-store-uri
    sqlite:///<store_dir>/mlflow.db`` shows them. The run is tagged with its folder
    (``zoo.run_dir``); a resumed run continues the MLflow run of that folder.
    """
    _require("mlflow", "mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    if options.get("tracking_uri") is None:
        store_dir.mkdir(parents=True, exist_ok=True)
        options["tracking_uri"] = f"sqlite:///{(store_dir / 'mlflow.db').resolve()}"
        options.setdefault("artifact_location", (store_dir / "mlartifacts").resolve().as_uri())
    options["tags"] = {"zoo.run_dir": str(run_dir.resolve()), **(options.get("tags") or {})}
    options.setdefault("experiment_name", "zoo")
    options["run_name"] = options.get("run_name") or tracker_run_name(run_dir)
    if resume and options.get("run_id") is None:
        options["run_id"] = _mlflow_run_of(options["tracking_uri"], options["experiment_name"], options["tags"]["zoo.run_dir"])
    return MLFlowLogger(**options)


def _mlflow_run_of(tracking_uri: str, experiment_name: str, run_dir: str) -> str | None:
    """The id of the MLflow run that logged the run folder ``run_dir``, if there is one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    quoted = run_dir.replace("'", "\\'")
    runs = client.search_runs([experiment.experiment_id], f"tags.`zoo.run_dir` = '{quoted}'", max_results=1)
    return runs[0].info.run_id if runs else None


def wandb_logger(run_dir: Path, **options: Any) -> Any:
    """Lightning's ``WandbLogger`` writing under ``<run_dir>/wandb``.

    ``offline`` (default: ``null``) is decided by the credentials: without ``WANDB_API_KEY``
    and without a ``wandb login`` the run is logged offline (``wandb sync <run>/wandb/...``
    uploads it later); ``WANDB_MODE`` in the environment has the last word. The W&B run id
    is derived from the run folder, so a resumed run continues the same W&B run.
    """
    _require("wandb", "wandb", "wandb")
    from lightning.pytorch.loggers import WandbLogger

    if options.get("offline") is None:
        options["offline"] = "WANDB_MODE" not in os.environ and not _wandb_credentials()
    options.setdefault("project", "zoo")
    options["name"] = options.get("name") or tracker_run_name(run_dir)
    options["id"] = options.get("id") or hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
    options.setdefault("resume", "allow")
    return WandbLogger(save_dir=str(run_dir), **options)


def _wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def finish_trackers(loggers: list) -> None:
    """End the W&B run of a finished training run. Lightning leaves it open until the
    process exits, so a second run in the same process (the jobs of a Hydra sweep) would
    log into the first one's W&B run."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()
