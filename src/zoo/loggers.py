"""Loggers: a CSV logger whose history survives a resume, and the experiment trackers.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when a run starts in a folder that has
one, so a resumed run used to lose every row before the resume. Here a run resumed from a
checkpoint taken after ``k`` optimizer steps keeps the rows of steps ``0 .. k-1`` (what the
checkpointed run had logged) and drops the rest, which the resumed run logs again: the
file ends as an uninterrupted run's would (Lightning writes each row to disk as it is
logged, so the rows a checkpoint stands for are there when a kill comes). A full disk
or a file-size limit never leaves a row cut: rows are appended whole or not at all, and
the file is rewritten atomically when its header grows (:class:`WholeRowsWriter`).

``logger=mlflow`` and ``logger=wandb`` (optional extras ``zoo[mlflow]``, ``zoo[wandb]``)
are Lightning's ``MLFlowLogger`` and ``WandbLogger``, set up to work offline: see
:func:`mlflow_logger` and :func:`wandb_logger`. Both check their server or store when they
are built, before any training, and fail fast: MLflow refuses in one line (a run that
should be tracked is not started untracked), W&B falls back to offline with a warning
(its offline runs upload later with ``wandb sync``). At the end of a run both get the run's
files, ``config.yaml``, ``metrics.json`` and ``curves.png``, and with ``log_model: true``
the checkpoint the run ends with (:func:`log_run_artifacts`).
"""

from __future__ import annotations

import configparser
import contextlib
import csv
import hashlib
import importlib.util
import io
import logging
import netrc
import os
import re
import shutil
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from zoo.errors import ConfigError, config_errors
from zoo.files import append_whole, atomic_write

log = logging.getLogger("zoo")


class WholeRowsWriter(ExperimentWriter):
    """Lightning's CSV writer with ``metrics.csv`` whole after any failed write: new rows
    are appended in one write that is cut back if it fails, and a header that grows (a
    metric logged for the first time) rewrites the file atomically."""

    def _check_log_dir_exists(self) -> None:
        pass  # Lightning deletes metrics.csv here; ResumableCSVLogger decides what is kept

    def save(self) -> None:
        if not self.metrics:
            return
        keys = list(self.metrics_keys)
        try:
            self._save()
        except BaseException:
            self.metrics_keys = keys  # the file still has the old header; the rows wait for the next save
            raise
        self.metrics = []

    def _save(self) -> None:
        new_keys = self._record_new_keys()
        path = Path(self.metrics_file_path)
        text = io.StringIO()
        out = csv.DictWriter(text, fieldnames=self.metrics_keys)
        if new_keys or not path.is_file():
            with contextlib.suppress(FileNotFoundError), open(path, newline="") as file:
                out.writerows(list(csv.DictReader(file)))
            rows = text.getvalue()
            text = io.StringIO()
            out = csv.DictWriter(text, fieldnames=self.metrics_keys)
            out.writeheader()
            text.write(rows)
            out.writerows(self.metrics)
            atomic_write(path, text.getvalue())
        else:
            out.writerows(self.metrics)
            append_whole(path, text.getvalue())


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
        path = Path(self.log_dir) / "metrics.csv"
        kept: list[dict[str, str]] = []
        header: list[str] = []
        if self.resume_step is not None and path.is_file():
            with open(path, newline="") as file:
                reader = csv.DictReader(file)
                header = list(reader.fieldnames or [])
                kept = [row for row in reader if _step(row) is not None and _step(row) < self.resume_step]
        self._fs.makedirs(self.root_dir, exist_ok=True)
        writer = self._experiment = WholeRowsWriter(log_dir=self.log_dir)
        if kept:
            # Under the sorted header Lightning's writer keeps (it sorts its keys at every
            # save), so that the rows appended after the resume line up with it.
            header = sorted(header)
            text = io.StringIO()
            out = csv.DictWriter(text, fieldnames=header, extrasaction="ignore")
            out.writeheader()
            out.writerows(kept)
            atomic_write(path, text.getvalue())  # the history before the resume, replaced in one step
            writer.metrics_keys = header
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a fresh run's log starts empty (as Lightning's does)
        return writer


def _step(row: dict[str, Any]) -> int | None:
    try:
        return int(float(row.get("step") or "nan"))
    except (TypeError, ValueError, OverflowError):  # OverflowError: "inf"
        return None  # a damaged row: not kept


# Experiment trackers (optional extras): MLflow and Weights & Biases through Lightning's own
# loggers, set up so that a run works offline and a resumed run continues its tracker run.


def tracker_run_name(run_dir: Path) -> str:
    """The name a run folder ``<root>/<date>/<time>`` (or a sweep's ``<time>/<job>``) gets in a tracker."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def _require(module: str, logger: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"logger={logger} needs {module}, which is not installed: pip install 'zoo[{extra}]'")


PROBE_TIMEOUT_S = 5
"""How long the trackers' start-up checks wait for a server to connect, and then to answer."""


def _os_cause(err: BaseException) -> str | None:
    """The OS error at the bottom of ``err``'s chain (refused, unresolvable, timed out, a
    file's), if any: requests and urllib3 wrap the socket's error in three layers of text."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for error in reversed(chain):
        lines = str(error.strerror or error).strip().splitlines() if isinstance(error, OSError) else []
        if lines:
            return f"{lines[0]}: {error.filename}" if error.filename else lines[0]
    return None


def _cause(err: BaseException) -> str:
    """The reason behind ``err`` in one line: its OS error, else its own first line."""
    lines = str(err).strip().splitlines()
    return _os_cause(err) or (lines[0].split(". See http")[0] if lines else type(err).__name__)[:300]


def _redacted(uri: str) -> str:
    """``uri`` with a password in it replaced by ``***``: error messages end up in logs."""
    parts = urlsplit(uri)
    return uri.replace(f":{parts.password}@", ":***@") if parts.password else uri


def mlflow_logger(run_dir: Path, store_dir: Path, resume: bool, **options: Any) -> Any:
    """Lightning's ``MLFlowLogger`` for the run in ``run_dir``.

    Without a ``tracking_uri`` the runs go to a local SQLite store, ``<store_dir>/mlflow.db``
    (MLflow's recommended local backend; its ``./mlruns`` file store is deprecated), with
    artifacts under ``<store_dir>/mlartifacts``: ``mlflow ui --backend-store-uri
    sqlite:///<store_dir>/mlflow.db`` shows them. The run is tagged with its folder
    (``zoo.run_dir``); a resumed run continues the MLflow run of that folder.

    The store is checked here, before training: a server that does not answer within
    ``PROBE_TIMEOUT_S`` (MLflow alone retries for minutes), an SQLite file that is not an
    MLflow store (read-only: the file is never changed), a deleted experiment or any other
    error of MLflow's is a one-line ``ConfigError`` naming the URI or the file.
    """
    _require("mlflow", "mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    if options.get("tracking_uri") is None:
        store_dir.mkdir(parents=True, exist_ok=True)
        options["tracking_uri"] = f"sqlite:///{(store_dir / 'mlflow.db').resolve()}"
        options.setdefault("artifact_location", (store_dir / "mlartifacts").resolve().as_uri())
    uri = options["tracking_uri"]
    _check_sqlite_store(uri)
    options["tags"] = {"zoo.run_dir": str(run_dir.resolve()), **(options.get("tags") or {})}
    options.setdefault("experiment_name", "zoo")
    options["run_name"] = options.get("run_name") or tracker_run_name(run_dir)
    with _mlflow_errors(uri), _mlflow_requests_fail_fast():
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(options["experiment_name"])  # the run's first request
        if experiment is not None and experiment.lifecycle_stage == "deleted":  # MLflow cannot log to it, nor make another
            raise ConfigError(
                f"logger=mlflow: the experiment '{experiment.name}' of {_redacted(uri)} is deleted: restore it "
                f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or set logger.mlflow.experiment_name"
            )
        if experiment is None:  # made here: Lightning would make it with a WARNING that it was "not found"
            _create_experiment(client, options["experiment_name"], options.get("artifact_location"))
        if resume and options.get("run_id") is None and experiment is not None:
            options["run_id"] = _mlflow_run_of(client, experiment.experiment_id, options["tags"]["zoo.run_dir"])
        log_model = options.pop("log_model", False)
        with config_errors("logger.mlflow"):  # an option MLFlowLogger does not take
            logger = MLFlowLogger(**options, log_model=_lightning_log_model(log_model))
    logger.log_final_checkpoint = log_model is True
    return logger


def _lightning_log_model(log_model: Any) -> bool | str:
    """What Lightning's own ``log_model`` gets: ``all`` (each checkpoint as it is saved) is
    Lightning's; ``true`` is zoo's, :func:`log_run_artifacts` logging the one checkpoint the
    run ends with. Lightning's ``true`` logs, at the end of ``fit``, the checkpoints of the
    ModelCheckpoint that saved last (MLflow: ``last.ckpt`` but never ``best.ckpt``; W&B:
    every callback's, two versions), before the test has picked its checkpoint."""
    return "all" if log_model == "all" else False


def _create_experiment(client: Any, name: str, artifact_location: str | None) -> None:
    """Create the MLflow experiment ``name``; one that a run beside this one (a sweep's job)
    created meanwhile is kept."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _check_sqlite_store(uri: str) -> None:
    """Refuse an SQLite store file that is not MLflow's before MLflow opens it: MLflow adds
    its tables to any SQLite database it is given and fails with a traceback on a file that
    is not one. A missing or empty file is a new store, which MLflow sets up."""
    match = re.fullmatch(r"sqlite(\+\w+)?:///([^?]*)(\?.*)?", uri)
    if match is None or match[2] in ("", ":memory:"):
        return
    path = Path(match[2])
    if not path.exists():
        return
    advice = "it is left as it is: move it away, or set paths.output_dir or logger.mlflow.tracking_uri"
    if path.is_dir():
        raise ConfigError(f"logger=mlflow: {path} is a folder, not an MLflow store file; {advice}")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise ConfigError(f"logger=mlflow: cannot read {path} as an MLflow store ({err}); {advice}") from None
    if tables and not {"experiments", "alembic_version"} <= tables:  # none: empty, a new store
        raise ConfigError(
            f"logger=mlflow: {path} is an SQLite database but not an MLflow store "
            f"(its tables: {', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''}); {advice}"
        )


@contextlib.contextmanager
def _mlflow_requests_fail_fast() -> Iterator[None]:
    """MLflow's HTTP requests in this block try once and wait ``PROBE_TIMEOUT_S``, unless the
    user set MLflow's own variables. Only at start-up: during training, MLflow's retries
    (minutes) are what lets a long run live through a short outage of its server."""
    bounds = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT_S)}
    bounds = {name: value for name, value in bounds.items() if name not in os.environ}
    os.environ.update(bounds)
    try:
        yield
    finally:
        for name in bounds:
            os.environ.pop(name, None)


@contextlib.contextmanager
def _mlflow_errors(uri: str) -> Iterator[None]:
    """MLflow's, SQLAlchemy's and the network's errors as one-line ``ConfigError`` naming ``uri``."""
    from mlflow.exceptions import MlflowException

    errors: tuple[type[Exception], ...] = (MlflowException, OSError, sqlite3.Error, ImportError)  # ImportError: a database driver
    if importlib.util.find_spec("sqlalchemy") is not None:  # mlflow-skinny talks to a server without it
        from sqlalchemy.exc import SQLAlchemyError

        errors += (SQLAlchemyError,)
    try:
        yield
    except errors as err:
        if urlsplit(uri).scheme in ("http", "https") and (reason := _os_cause(err)):
            raise ConfigError(
                f"logger=mlflow: cannot reach the tracking server {_redacted(uri)} ({reason}); start it or fix "
                "logger.mlflow.tracking_uri (null: the local store <paths.output_dir>/mlflow.db)"
            ) from None
        raise ConfigError(f"logger=mlflow: tracking store {_redacted(uri)}: {_cause(err)}") from None


def _mlflow_run_of(client: Any, experiment_id: str, run_dir: str) -> str | None:
    """The id of the MLflow run that logged the run folder ``run_dir``, if there is one."""
    # MLflow's filter strings have no escapes: the value goes in the quotes it does not
    # contain; a path with both kinds is matched with LIKE ("_" for each '), then exactly.
    quote = next((q for q in ("'", '"') if q not in run_dir), None)
    if quote is not None:
        runs = client.search_runs([experiment_id], f"tags.`zoo.run_dir` = {quote}{run_dir}{quote}", max_results=1)
    else:
        pattern = run_dir.replace("'", "_")
        runs = client.search_runs([experiment_id], f"tags.`zoo.run_dir` LIKE '{pattern}'")
        runs = [run for run in runs if run.data.tags.get("zoo.run_dir") == run_dir]
    return runs[0].info.run_id if runs else None


def wandb_logger(run_dir: Path, **options: Any) -> Any:
    """Lightning's ``WandbLogger`` writing under ``<run_dir>/wandb``.

    ``offline`` (default: ``null``) is decided by the credentials: without ``WANDB_API_KEY``
    and without a ``wandb login`` the run is logged offline (``wandb sync <run>/wandb/...``
    uploads it later); ``WANDB_MODE`` in the environment has the last word. The W&B run id
    is derived from the run folder, so a resumed run continues the same W&B run.

    An online run first checks that the W&B server answers within ``PROBE_TIMEOUT_S``
    (W&B alone waits 90 s, then fails): if it does not, a run left to decide (``offline:
    null``) is logged offline with a warning that says how to upload it; one that asked to
    be online (``offline: false`` or ``WANDB_MODE=online``) is a one-line ``ConfigError``.

    ``log_model: true`` logs the checkpoint the run ends with (:func:`log_run_artifacts`),
    online or offline: an offline run keeps it in W&B's staging folder (``WANDB_DATA_DIR``,
    by default ``~/.local/share/wandb``) for ``wandb sync`` to upload. ``log_model: all``
    is Lightning's (every checkpoint as it is saved), which refuses an offline run.
    """
    _require("wandb", "wandb", "wandb")
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    log_model = str(options.get("log_model")).lower()  # as the config writes it: true, all
    base_url = _wandb_base_url()
    asked = options.get("offline")
    if asked is None:
        options["offline"] = not mode and not _wandb_credentials(base_url)
    if not options["offline"] and mode not in ("offline", "dryrun", "disabled"):
        problem = _unreachable(base_url)
        if problem is not None:
            reason = f"cannot reach the W&B server {_redacted(base_url)} ({problem})"
            if asked is False or mode:
                raise ConfigError(
                    f"logger=wandb: {reason}; log offline with logger.wandb.offline=true and upload later with wandb sync"
                )
            if options.get("log_model") == "all":
                raise ConfigError(
                    f"logger=wandb: {reason}, and log_model={log_model} needs it: checkpoints cannot be uploaded offline"
                )
            sync = run_dir / "wandb" / "offline-run-*"
            log.warning("logger=wandb: %s: logging offline; upload later with: wandb sync %s", reason, sync)
            options["offline"] = True
    if options["offline"] and options.get("log_model") == "all":  # Lightning's own refusal is a traceback
        raise ConfigError(
            f"logger=wandb: log_model={log_model} uploads checkpoints, which an offline run cannot "
            "(no WANDB_API_KEY or wandb login, or offline=true): log in, or set logger.wandb.log_model=false"
        )
    options.setdefault("project", "zoo")
    options["name"] = options.get("name") or tracker_run_name(run_dir)
    options["id"] = options.get("id") or hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
    options.setdefault("resume", "allow")
    model_option = options.pop("log_model", False)
    logger = WandbLogger(save_dir=str(run_dir), **options, log_model=_lightning_log_model(model_option))
    logger.log_final_checkpoint = model_option is True
    return logger


def _wandb_base_url() -> str:
    """The W&B server a run would log to: ``WANDB_BASE_URL``, else the host ``wandb login
    --host`` saved, else W&B's default. Read here, not through W&B's settings singleton:
    that keeps the mode it reads first, and Lightning switches a run to offline later."""
    if url := os.environ.get("WANDB_BASE_URL"):
        return url
    import wandb

    saved = configparser.ConfigParser()
    with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
        saved.read(Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb") / "settings")
    return saved.get("default", "base_url", fallback=None) or wandb.Settings().base_url


def _unreachable(url: str) -> str | None:
    """Why ``url`` cannot be reached in ``PROBE_TIMEOUT_S``; ``None``: it answered (any HTTP status)."""
    try:
        parts = urlsplit(url)  # without user:password@, which urllib would take for part of the host
        with urllib.request.urlopen(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl(), timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:  # an answer, if not a welcome one: the server is there
        return None
    except (OSError, ValueError) as err:
        return _cause(err)


def _wandb_credentials(base_url: str) -> bool:
    """Whether W&B would find a login for ``base_url``: ``WANDB_API_KEY``, or an entry in the
    netrc file ``NETRC`` names, else ``~/.netrc``, for the server's ``host[:port]`` (as ``wandb
    login`` writes it) or W&B's own ``api.wandb.ai``. The file is named explicitly, as W&B
    reads it: Python's own default would refuse a ``~/.netrc`` that others can read."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        logins = netrc.netrc(Path(os.environ.get("NETRC") or "~/.netrc").expanduser())
        hosts = {urlsplit(base_url).netloc.rpartition("@")[2], "api.wandb.ai"}
    except (OSError, ValueError, netrc.NetrcParseError):  # ValueError: a URL urlsplit cannot read
        return False
    return any(logins.authenticators(host) is not None for host in hosts)


RUN_FILES = ("config.yaml", "metrics.json", "curves.png")
"""The files of a run folder that :func:`log_run_artifacts` gives the trackers (those that exist)."""


def log_run_artifacts(loggers: list, run_dir: Path, checkpoint: str | os.PathLike | None) -> None:
    """Give each MLflow and W&B logger in ``loggers`` the run's files: ``RUN_FILES`` from
    ``run_dir`` and, where the logger was built with ``log_model: true``, ``checkpoint``.

    MLflow: artifacts of the run, the files at its root and the checkpoint under
    ``checkpoints/``. W&B: run files under ``zoo/`` (W&B keeps a ``config.yaml`` of its own
    at the root), copied into the run's folder so that an offline run holds them for ``wandb
    sync``; the checkpoint as the run's ``model-<run id>`` artifact (file ``model.ckpt``,
    alias ``latest``, as Lightning names it). A file that cannot be logged is one warning
    naming the tracker and the file: the run and its folder are kept. Call it on rank zero,
    after the files are written and before :func:`finish_trackers`.
    """
    files = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
    checkpoint = Path(checkpoint) if checkpoint else None
    for logger in loggers:
        kind = type(logger).__name__
        upload = {"MLFlowLogger": _mlflow_upload, "WandbLogger": _wandb_upload}.get(kind)
        if upload is None:
            continue
        tracker = "mlflow" if kind == "MLFlowLogger" else "wandb"
        wanted = [(path, False) for path in files]
        if getattr(logger, "log_final_checkpoint", False):
            if checkpoint is not None and checkpoint.is_file():
                wanted.append((checkpoint, True))
            else:
                log.warning("logger=%s: log_model=true, but the run has no checkpoint to log (%s)", tracker, checkpoint)
        for path, is_checkpoint in wanted:
            try:
                upload(logger, path, is_checkpoint)
            except Exception as err:  # the tracker's, the network's or the disk's: the run itself is done
                log.warning("logger=%s: could not log %s (%s); it stays in %s", tracker, path.name, _cause(err), path.parent)


def _mlflow_upload(logger: Any, path: Path, is_checkpoint: bool) -> None:
    logger.experiment.log_artifact(logger.run_id, str(path), "checkpoints" if is_checkpoint else None)


def _wandb_upload(logger: Any, path: Path, is_checkpoint: bool) -> None:
    import wandb

    run = logger.experiment
    if is_checkpoint:
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata={"original_filename": path.name})
        artifact.add_file(str(path), name="model.ckpt")  # copied to W&B's staging folder: a resume may replace the file
        run.log_artifact(artifact, aliases=["latest"])
        return
    # A copy, not wandb.save's symlink: the offline run folder then holds the file as it was.
    copy = Path(run.dir) / "zoo" / path.name
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, copy)
    run.save(str(copy), base_path=run.dir, policy="now")


def finish_trackers(loggers: list) -> None:
    """End the W&B run of a finished training run. Lightning leaves it open until the
    process exits, so a second run in the same process (the jobs of a Hydra sweep) would
    log into the first one's W&B run."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()
