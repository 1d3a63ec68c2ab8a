"""Errors that are the user's to fix: the command line prints their message, not a traceback."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator


class ZooError(Exception):
    """Base class for errors caused by input or configuration, not by a bug."""


class ConfigError(ZooError, ValueError):
    """A configuration value is missing, inconsistent or of the wrong kind."""


class UnknownNameError(ConfigError):
    """A name (model, dataset, optimizer, ...) is not among the registered choices."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        close = difflib.get_close_matches(name, self.choices, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(
            f"Unknown {kind} '{name}'.{hint} Available: {', '.join(self.choices)}"
        )


class DataError(ZooError):
    """A dataset is missing, empty or corrupt; the message names the path."""


@contextlib.contextmanager
def config_errors(what: str) -> Iterator[None]:
    """Report a constructor's ``TypeError``/``ValueError`` as a config error about ``what``."""
    try:
        yield
    except ZooError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what}: {err}") from None
