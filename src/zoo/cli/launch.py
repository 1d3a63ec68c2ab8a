"""The console scripts of the Hydra commands (``zoo-train``, ``zoo-eval``, ``zoo-predict``,
``zoo-translate``, ``zoo-export``).

Each entry point composes its config with Hydra and only then imports the command's module
(``zoo.cli.<command>``) and runs its ``run(cfg)``. ``--help``, ``--cfg job`` and a refused
override therefore answer without importing torch or Lightning, which take seconds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from zoo.cli import schema  # noqa: F401  (registers the config schemas)
from zoo.cli.entry import config_dir, reports_user_errors
from zoo.errors import ConfigError


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

    main.__name__ = main.__qualname__ = name
    return main


train = _command("train")
eval = _command("eval")  # noqa: A001  (the console script zoo-eval)
predict = _command("predict")
translate = _command("translate")
export = _command("export")
