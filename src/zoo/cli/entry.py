"""How a command starts and reports, before it imports torch or Lightning: a user's
mistake as one line and exit 1 (an outside library's or the OS's too), and ``zoo-train``'s
Hydra callback that validates the config (:mod:`zoo.cli.config`) and locks the run folder
before Hydra writes into it.

Standard library, Hydra and OmegaConf only: a command refuses a bad configuration in well
under a second, and ``--help`` answers as fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from zoo.errors import ZooError
from zoo.cli.config import check_train_config
from zoo.files import atomic_write, claim_run_folder, claim_sweep_folder, release_run_folder
from zoo.sanitize import printable

_WORKER_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$")
# The libraries whose errors are the user's input or environment, not a bug of ours: the
# top-level module an exception class is defined in -> how the one line names it (Hydra's
# and OmegaConf's: "config", their multi-line messages folded by _folded).
_LIBRARIES = {
    "PIL": "image", "yaml": "YAML", "sqlalchemy": "MLflow store",
    "mlflow": "MLflow", "wandb": "W&B", "lightning": "Lightning", "lightning_fabric": "Lightning",
    "onnx": "ONNX", "onnxruntime": "ONNX Runtime", "safetensors": "safetensors",
}


def one_line(text: str) -> str:
    """``text`` on one line, control characters escaped."""
    return printable(" ".join(text.split()) if "\n" in text else text)


def user_message(err: BaseException) -> str:
    """The one line a user sees for ``err``.

    A data loader worker's error comes back as the same exception type with the worker's
    whole traceback as its message ("Caught DataError in DataLoader worker process 0.
    Original Traceback ..."): the line that matters is the last.
    """
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        match = _WORKER_ERROR.match(last)
        text = match.group(2) if match else last
    return one_line(text)


def _short(name: Any, keep: int = 200) -> str:
    name = str(name)
    return name if len(name) <= keep else f"{name[: keep // 2]}...{name[-keep // 2 :]}"


def outside_message(err: BaseException) -> str | None:
    """The one line for an error that the OS or a library raised (``None``: a bug of ours,
    which keeps its traceback). An OS error names its file; a library's error names the library."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return f"out of memory: {user_message(err) or 'an allocation failed'}"
    library = type(err).__module__.partition(".")[0]
    if isinstance(err, OSError) and library == "builtins":
        reason = err.strerror or user_message(err)
        if err.filename is None:
            return reason
        where = f"{_short(err.filename)} -> {_short(err.filename2)}" if err.filename2 else _short(err.filename)
        return f"{printable(where)}: {reason}"
    if library in ("hydra", "omegaconf"):
        return f"config: {_folded(str(err), err.__cause__)}"
    if library in _LIBRARIES:
        return f"{_LIBRARIES[library]}: {user_message(err) or type(err).__name__}"
    if err.__cause__ is not None:  # a wrapper (logging.config's ValueError around the OSError that matters)
        return outside_message(err.__cause__)
    return None


def _folded(text: str, cause: BaseException | None) -> str:
    """A Hydra or OmegaConf message on one line: a config group's available options become
    one comma-separated list, the config search path is dropped, an OmegaConf cause is added."""
    text = text.split("Config search path:")[0]
    if cause is not None and type(cause).__module__.startswith("omegaconf"):
        text += "\n" + str(cause)
    parts: list[str] = []
    for line in text.splitlines():
        if line.strip():
            listed = line.startswith("\t") and parts and parts[-1][-1:] not in ".:"
            parts.append((", " if listed else " ") + line.strip() if parts else line.strip())
    return one_line("".join(parts))


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a user's mistake, or an error from the OS or a library, into ``Error: <one line>``
    on stderr and exit code 1 (``HYDRA_FULL_ERROR=1``: the traceback instead). Ctrl-C outside
    training exits with 130 and one line."""
    try:
        yield
    except KeyboardInterrupt:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print("Error: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if isinstance(err, MissingMandatoryValue):
            key = err.full_key or "a value"
            message = f"{key} is required: give it on the command line ({key}=...)"
        elif isinstance(err, ZooError):
            message = user_message(err)
        else:
            message = outside_message(err)
            if message is None:
                raise  # a bug: the traceback is what helps
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(1)


def reports_user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Run ``task`` under :func:`one_line_errors`."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        with one_line_errors():
            return task(cfg)

    return wrapper


def continues_run(cfg: DictConfig, folder: str | Path) -> bool:
    """Whether ``cfg`` continues the run in ``folder``: ``resume=true``, or ``ckpt_path`` one of its files."""
    if cfg.get("resume"):
        return True
    ckpt = cfg.get("ckpt_path")
    return bool(ckpt) and Path(os.path.abspath(folder)) in Path(os.path.abspath(ckpt)).parents


def rank_zero() -> bool:
    """Whether this process is the first of a distributed run (or the only one)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


class ClaimRunFolder(Callback):
    """Hydra callback of ``zoo-train``: validate the config and lock the run folder before
    Hydra's job runner writes anything into it (``.hydra/``, ``train.log``).

    The launch order is therefore compose (Hydra), validate, lock, run: a refused run
    leaves the folder it was pointed at byte for byte as it was. A sweep's folder is
    claimed as a whole the same way (each job's folder is new inside it).
    """

    _record: str | None = None  # Hydra's .hydra/ folder name, written by on_job_start
    _resume: dict[str, Any] | None = None  # what a resume changed (zoo.cli.resume)

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        from zoo.cli.resume import resumed_config

        with one_line_errors():
            check_train_config(config)
            if rank_zero():  # DDP's other processes run inside rank 0's folder
                folder = config.hydra.run.dir
                resuming = continues_run(config, folder)
                claim_run_folder(folder, resume=resuming, overwrite=config.overwrite)
                self._record = config.hydra.output_subdir
                if resuming and self._record:  # the run's own config, checked against the command line
                    self._resume = resumed_config(config, config_name, Path(folder), self._record)
                    check_train_config(config)
                # Hydra writes .hydra/ in place, which a full disk can leave cut; we write it atomically.
                with open_dict(config.hydra):
                    config.hydra.output_subdir = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from zoo.cli.resume import write_resume_record

        record = self._record
        if record is None:
            return
        with one_line_errors():
            run_dir = Path(config.hydra.runtime.output_dir)
            if self._resume is not None:  # the record of the run's first launch stays as it was
                write_resume_record(run_dir, self._resume)
                return
            hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(config.hydra)})
            hydra_cfg.hydra.output_subdir = record
            task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
            atomic_write(run_dir / record / "config.yaml", OmegaConf.to_yaml(task_cfg))
            atomic_write(run_dir / record / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
            atomic_write(run_dir / record / "overrides.yaml", OmegaConf.to_yaml(config.hydra.overrides.task))

    def on_run_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if job_return is None or job_return.status == JobStatus.COMPLETED:  # a failed run: zoo.cli.launch decides
            release_run_folder(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with one_line_errors():
            check_train_config(config)
            claim_sweep_folder(config.hydra.sweep.dir, resume=config.resume, overwrite=config.overwrite)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_folder(config.hydra.sweep.dir)
