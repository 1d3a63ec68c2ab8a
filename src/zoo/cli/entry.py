"""What every command line needs before it imports torch or Lightning: where the configs are,
how a user's mistake is reported (one line, exit 1), and checks of the values that would
otherwise fail deep inside a training run.

Standard library, Hydra and OmegaConf only: a command refuses a bad configuration in well
under a second, and ``--help`` answers as fast.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from zoo.errors import ConfigError, ZooError

# Hydra reads an unquoted all-digit value as an integer, and Python refuses to convert one
# of more than 4,300 digits (a guard against quadratic-time conversions of untrusted input)
# with a traceback from inside Hydra's parser. A command line is bounded by the system's
# argument length (128 KiB per argument on Linux), so a larger limit costs nothing here.
MAX_INT_DIGITS = 200_000
if hasattr(sys, "set_int_max_str_digits") and 0 < sys.get_int_max_str_digits() < MAX_INT_DIGITS:
    sys.set_int_max_str_digits(MAX_INT_DIGITS)

_WORKER_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$")


def config_dir() -> str:
    """The Hydra config folder: inside the installed package, else the repository's."""
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "configs"
    return str(packaged if packaged.is_dir() else here.parents[3] / "configs")


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
    return " ".join(text.split()) if "\n" in text else text


def reports_user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report a user's mistake as ``Error: <one line>`` and exit code 1.

    Mistakes are :class:`ZooError` and a mandatory value left unset (``???`` in a config).
    ``HYDRA_FULL_ERROR=1`` lets the traceback through.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except (ZooError, MissingMandatoryValue) as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if isinstance(err, MissingMandatoryValue):
                key = err.full_key or "a value"
                message = f"{key} is required: give it on the command line ({key}=...)"
            else:
                message = user_message(err)
            print(f"Error: {message}", file=sys.stderr)
            sys.exit(1)

    return wrapper


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(cfg: DictConfig, key: str, *, allowed: tuple[Any, ...] = (), minimum: int = 1, why: str = "") -> None:
    """``cfg.<key>`` (dotted) must be an integer >= ``minimum`` or one of ``allowed``."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return
        node = node[part]
    if node in allowed and (node is None or _is_int(node)):
        return
    if not _is_int(node) or node < minimum:
        also = f" or {' or '.join(map(str, allowed))}" if allowed else ""
        raise ConfigError(f"{key} must be an integer >= {minimum}{also}, got {node!r}{why}")


def check_train_config(cfg: DictConfig) -> None:
    """Refuse values that cannot train, before anything is imported, built or written."""
    _count(cfg, "data.batch_size")
    _count(cfg, "data.num_workers", minimum=0)
    epochs = cfg.trainer.get("max_epochs")
    if epochs == 0 and not isinstance(epochs, bool):
        raise ConfigError("trainer.max_epochs=0 trains nothing; give at least 1 (or -1 with trainer.max_steps=N)")
    _count(cfg, "trainer.max_epochs", allowed=(None, -1))
    if cfg.trainer.get("max_steps") == 0:
        raise ConfigError("trainer.max_steps=0 trains nothing; give at least 1 (or -1: no step limit)")
    _count(cfg, "trainer.max_steps", allowed=(-1,))
    if not _is_int(cfg.seed) or not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be an integer from 0 to 2**32 - 1, got {cfg.seed!r}")
