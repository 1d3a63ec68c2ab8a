"""The console scripts of the Hydra commands (``zoo-train``, ``zoo-eval``, ``zoo-predict``,
``zoo-translate``, ``zoo-export``).

Each entry point composes its config with Hydra and only then imports the command's module
(``zoo.cli.<command>``) and runs its ``run(cfg)``. ``--help``, ``--cfg job`` and a refused
override therefore answer without importing torch or Lightning, which take seconds.

Launch order of ``zoo-train``: Hydra composes the config; the ``ClaimRunFolder`` callback
(:mod:`zoo.cli.entry`) validates it and locks the run folder; only then does Hydra's job
runner write ``.hydra/`` and ``train.log`` and call the command. Errors of Hydra itself
(an unknown config option, an override it cannot parse, a config file it cannot read) are
one line like the command's own (:func:`reported`).
"""

from __future__ import annotations

import importlib
import logging
import string
import sys
from collections.abc import Callable
from typing import Any

import hydra
import hydra._internal.utils as hydra_utils
from hydra._internal.hydra import Hydra
from omegaconf import DictConfig, OmegaConf

from zoo.cli.config import check_config_files  # (importing zoo.cli.config registers the config schemas)
from zoo.cli.entry import one_line_errors, reports_user_errors
from zoo.errors import ConfigError
from zoo.files import config_dir, discard_unstarted_runs, release_run_folders

# A full disk or a file-size limit must not turn each log record into a printed traceback
# ("--- Logging error ---"): the write that failed is reported once, as one line.
logging.raiseExceptions = False

_hydra_run_and_report = hydra_utils.run_and_report


def reported(func: Callable[[], Any]) -> Any:
    """Hydra's ``run_and_report`` with the errors :func:`zoo.cli.entry.one_line_errors` knows
    (Hydra's own among them: an unknown option, an override it cannot parse) as one line, exit
    code 1; a bug keeps Hydra's own report (``HYDRA_FULL_ERROR=1``: every traceback)."""

    def run() -> Any:
        with one_line_errors():
            return func()

    return _hydra_run_and_report(run)


# Hydra reports its own errors through this module-level function (hydra-core 1.3; the
# version range in pyproject.toml keeps it): ours folds them to one line first.
hydra_utils.run_and_report = reported


def _help_page(self: Hydra, help_cfg: DictConfig, cfg: DictConfig, args_parser: Any, resolve: bool) -> str:
    """Hydra's ``--help`` and ``--hydra-help`` page, with only the fields its template names
    computed. Hydra fills all four, and listing the config groups copies its config store once
    per group: over a second, also for a page that shows no group (``zoo-predict --help``)."""
    template = string.Template(help_cfg.template)
    fields = {
        "FLAGS_HELP": lambda: self.format_args_help(args_parser),
        "HYDRA_CONFIG_GROUPS": lambda: self.format_config_groups(_is_hydra_group),
        "APP_CONFIG_GROUPS": lambda: self.format_config_groups(lambda group: not _is_hydra_group(group)),
        "CONFIG": lambda: OmegaConf.to_yaml(cfg, resolve=resolve),
    }
    return template.substitute({key: field() for key, field in fields.items() if key in template.get_identifiers()})


def _is_hydra_group(group: str) -> bool:
    return group == "hydra" or group.startswith("hydra/")


_hydra_get_help = Hydra.get_help
Hydra.get_help = _help_page  # (hydra-core 1.3, as above)


# Hydra composes a command's whole config twice: once only to read ``hydra.mode`` (a config
# file may ask for a multirun), then to run. No file the commands below can compose sets it
# (a test keeps it so), so their mode is the command line's, which Hydra reads itself (``-m``)
# and the second composition is saved: a tenth of a second of each prediction. A command line
# that reaches Hydra's own settings (``hydra.mode=``, ``hydra.searchpath=``) or another config
# folder or file (``--config-dir``, ``--config-name``, ``--config-path``) keeps Hydra's rule.
COMPOSED_ONCE = ("eval", "predict", "translate", "export")
_hydra_get_mode = Hydra.get_mode


def _mode_from_command_line(self: Hydra, config_name: str | None, overrides: list[str]) -> Any:
    elsewhere = any(a.startswith(("-c", "--config")) for a in sys.argv[1:])
    if elsewhere or any(o.lstrip("+~").startswith("hydra.") for o in overrides):
        return _hydra_get_mode(self, config_name, overrides)
    return None  # Hydra's answer when no config sets the mode: a run, or a multirun with -m


def _command(name: str) -> Callable[[], Any]:
    @hydra.main(version_base="1.3", config_path=config_dir(), config_name=name)
    @reports_user_errors
    def main(cfg: DictConfig) -> Any:
        missing = sorted(OmegaConf.missing_keys(cfg))  # refused before the command's imports
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: give "
                f"{'it' if len(missing) == 1 else 'them'} on the command line ({' '.join(k + '=...' for k in missing)})"
            )
        return importlib.import_module(f"zoo.cli.{name}").run(cfg)

    def launch() -> Any:
        Hydra.get_mode = _mode_from_command_line if name in COMPOSED_ONCE else _hydra_get_mode
        with one_line_errors():
            check_config_files(sys.argv[1:])  # a user's config folder is read by Hydra: checked before it is
        try:
            return main()
        except BaseException:  # a refused or failed run (SystemExit(1) included)
            discard_unstarted_runs()  # nothing saved: no orphan folder of logs is left
            raise
        finally:
            release_run_folders()  # also when Hydra's job runner failed between the claim and the run

    main.__name__ = main.__qualname__ = launch.__name__ = launch.__qualname__ = name
    return launch


train = _command("train")
eval = _command("eval")  # noqa: A001  (the console script zoo-eval)
predict = _command("predict")
translate = _command("translate")
export = _command("export")
