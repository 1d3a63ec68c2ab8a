"""A resumed run trains with its own config.

``zoo-train hydra.run.dir=<run> resume=true`` re-composes the run's config from the
overrides its first launch recorded (``<run>/.hydra/overrides.yaml``) plus the command
line's, and compares the result with the config the run was composed with
(``<run>/.hydra/config.yaml``). Only :data:`MAY_CHANGE` may differ; any other difference
is refused in one line naming each key with the run's value and the new one, before
anything in the run folder is written. Repeating an original override (``finetune=freeze``)
is therefore harmless, and leaving it out is what the run means.

Standard library, Hydra and OmegaConf only, like :mod:`zoo.cli.entry`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from zoo.errors import ConfigError
from zoo.sanitize import printable

# What a resume may change: how long it trains, what it logs to and which callbacks run,
# where files go, and how many devices run it. Everything else (model, data, optimizer,
# schedule, fine-tuning, seed) is what the checkpoint was trained with.
MAY_CHANGE = (
    "trainer.max_epochs", "trainer.max_steps", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "logger", "callbacks", "paths",
)  # fmt: skip
# Given per command, never taken from the run's first launch.
_PER_LAUNCH = ("resume", "overwrite", "ckpt_path")
_MAX_RECORD_BYTES = 1_000_000  # a run's .hydra/ files are a few KiB
_SHOWN = 6  # differences named in the refusal


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in (*MAY_CHANGE, *_PER_LAUNCH))


def _read_record(path: Path) -> Any:
    """A YAML file of the run's ``.hydra/`` record, read safely (plain YAML, no tags, bounded)."""
    from zoo.cli.config import MAX_YAML_VALUES, yaml_values

    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_RECORD_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    if len(data) > _MAX_RECORD_BYTES:
        raise ConfigError(f"{path} is over {_MAX_RECORD_BYTES:,} bytes; not a record zoo-train wrote")
    if yaml_values(path) > MAX_YAML_VALUES:
        raise ConfigError(f"{path} expands to over {MAX_YAML_VALUES:,} values through YAML aliases; refused")
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` for a nested mapping (an empty mapping is a leaf)."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def _show(value: Any) -> str:
    return printable(yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip())


ABSENT = object()


def differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` where the two configs differ (absent: ``ABSENT``)."""
    old, new = _flat(old), _flat(new)
    return {
        key: (old.get(key, ABSENT), new.get(key, ABSENT))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, ABSENT) != new.get(key, ABSENT)
    }


def _described(key: str, was: Any, now: Any) -> str:
    was_text = "(absent)" if was is ABSENT else _show(was)
    now_text = "(absent)" if now is ABSENT else _show(now)
    return f"{key} {was_text} -> {now_text}"


def _key(override: Any) -> str:
    return override.get_key_element().lstrip("~+")


def resumed_config(config: DictConfig, config_name: str | None, folder: Path, record: str) -> dict[str, Any] | None:
    """Replace ``config``'s task keys (in place) by the run's own config, re-composed with the
    command line's overrides; refuse any difference outside :data:`MAY_CHANGE`.

    ``folder`` is the run folder, ``record`` the name of its Hydra record (``.hydra``).
    Returns ``{"overrides": [...], "changed": {key: [old, new]}}`` (what this resume changed),
    or ``None`` where the folder holds no record to resume from (a fresh folder).
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    saved_config_path = folder / record / "config.yaml"
    if not saved_config_path.is_file():
        return None
    saved_config = _read_record(saved_config_path)
    overrides_path = folder / record / "overrides.yaml"
    saved = _read_record(overrides_path) if overrides_path.is_file() else []
    if not isinstance(saved_config, dict) or not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise ConfigError(f"{folder / record} does not hold the config and overrides zoo-train records; cannot resume from it")

    parser = OverridesParser.create()
    given = list(config.hydra.overrides.task)
    given_keys = {_key(o) for o in parser.parse_overrides(given)}
    kept = [s for s, o in zip(saved, parser.parse_overrides(saved)) if _key(o) not in given_keys and _key(o) not in _PER_LAUNCH]
    overrides = [*kept, *given]
    hydra = GlobalHydra.instance().hydra
    composed = hydra.compose_config(config_name, [*overrides, *config.hydra.overrides.hydra], run_mode=RunMode.RUN)
    task_keys = [k for k in composed if k != "hydra"]
    task = yaml.safe_load(OmegaConf.to_yaml(OmegaConf.masked_copy(composed, task_keys)))

    changed = differences(saved_config, task)
    refused = {k: v for k, v in changed.items() if not _may_change(k)}
    if refused:
        # A group's choice first (model.name mlp -> lenet5 says more than the options it brings).
        keys = sorted(refused, key=lambda k: (not k.endswith((".name", ".mode")), k))
        shown = "; ".join(_described(k, *refused[k]) for k in keys[:_SHOWN])
        more = f" and {len(refused) - _SHOWN} more" if len(refused) > _SHOWN else ""
        raise ConfigError(
            f"resume: the command line changes what run {folder} trained with: {shown}{more}; a resume may only "
            f"change {', '.join(MAY_CHANGE)} (give another hydra.run.dir for a new run)"
        )
    with read_write(config), open_dict(config):
        for key in [k for k in config if k != "hydra"]:
            if key not in composed:
                del config[key]
        for key in task_keys:
            config[key] = composed[key]
        config.hydra.overrides.task = overrides
    kept_changes = {k: [None if v is ABSENT else v for v in pair] for k, pair in changed.items() if not k.startswith(_PER_LAUNCH)}
    return {"overrides": given, "changed": kept_changes}


def write_resume_record(folder: Path, resume: dict[str, Any]) -> Path:
    """``<run>/config.resume-<n>.yaml``: the n-th resume's command line and the keys it
    changed (``[run's value, this resume's]``); ``config.yaml`` keeps the run's first config."""
    from zoo.files import atomic_write

    n = 1 + sum(1 for _ in folder.glob("config.resume-*.yaml"))
    while (folder / f"config.resume-{n}.yaml").exists():
        n += 1
    path = folder / f"config.resume-{n}.yaml"
    body = {"resumed": datetime.now().isoformat(timespec="seconds"), **resume}
    atomic_write(path, yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return path
