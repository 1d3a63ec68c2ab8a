"""Composing and validating a command's config, before torch or Lightning is imported: one
place for every check that can refuse a run in well under a second.

- The typed schemas of the top of the configs (``train_schema``, ``eval_schema``), so that
  Hydra itself rejects an override of the wrong type (``trainer.max_epochs=ten``) or an
  unknown key. The groups whose options depend on the choice (``model``, ``data``,
  ``optim``, ...) are dictionaries; their keys are checked by the constructor they are
  passed to. The ``model`` node is open: ``model.<argument>=<value>`` sets any constructor
  argument without a ``+`` (an unknown one is refused by the constructor, in one line).
  Unions (``devices: 2`` or ``devices: [0, 1]``) are ``Any``, as OmegaConf has no unions.
- The config folders a command line names, refused when a YAML file expands past
  :data:`MAX_YAML_VALUES` through aliases (read before Hydra reads them).
- :func:`check_train_config`: values that cannot train (a zero batch size or epoch count,
  a seed out of range), refused before anything is built or written.
- :func:`plain`: a config node as the plain Python containers the builders take.
- :func:`fit_model_to_data`: a model config's data-dependent options filled from the data.

Standard library, PyYAML, Hydra and OmegaConf only.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035  (OmegaConf reads typing generics)

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from zoo.errors import ConfigError
from zoo.sanitize import printable

# Hydra reads an unquoted all-digit value as an integer, and Python refuses to convert one
# of more than 4,300 digits (a guard against quadratic-time conversions of untrusted input)
# with a traceback from inside Hydra's parser. A command line is bounded by the system's
# argument length (128 KiB per argument on Linux), so a larger limit costs nothing here.
MAX_INT_DIGITS = 200_000
if hasattr(sys, "set_int_max_str_digits") and 0 < sys.get_int_max_str_digits() < MAX_INT_DIGITS:
    sys.set_int_max_str_digits(MAX_INT_DIGITS)


@dataclass
class TrainerConf:
    """``lightning.Trainer`` arguments (see its documentation for their meaning)."""

    accelerator: str = "auto"
    strategy: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    precision: Any = "auto"  # resolved by zoo.perf.resolve_precision
    fast_dev_run: Any = False
    max_epochs: Optional[int] = None
    min_epochs: Optional[int] = None
    max_steps: int = -1
    max_time: Optional[str] = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    overfit_batches: Any = 0.0
    val_check_interval: Any = None
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: Optional[int] = None
    log_every_n_steps: Optional[int] = None
    enable_model_summary: Optional[bool] = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    gradient_clip_algorithm: Optional[str] = None
    deterministic: Any = None
    benchmark: Optional[bool] = None
    inference_mode: bool = True
    profiler: Optional[str] = None
    detect_anomaly: bool = False
    sync_batchnorm: bool = False


@dataclass
class PathsConf:
    """Where datasets are read from and runs are written (``configs/paths/``)."""

    data_dir: str = "data"
    output_dir: str = "outputs"
    multirun_dir: str = "multirun"


@dataclass
class TrainConf:
    paths: PathsConf = field(default_factory=PathsConf)
    model: Dict[str, Any] = field(default_factory=dict)
    data: Dict[str, Any] = field(default_factory=dict)
    optim: Dict[str, Any] = field(default_factory=dict)
    sched: Dict[str, Any] = field(default_factory=dict)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    logger: Optional[Dict[str, Any]] = None
    callbacks: Dict[str, Any] = field(default_factory=dict)
    task: Dict[str, Any] = field(default_factory=dict)
    finetune: Dict[str, Any] = field(default_factory=dict)
    perf: Dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    loss: str = "cross_entropy"
    ckpt_path: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    test_weights: str = "last"


@dataclass
class EvalConf:
    paths: PathsConf = field(default_factory=PathsConf)
    ckpt_path: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    weights: Optional[str] = None
    model: Optional[Dict[str, Any]] = None
    folder: Optional[str] = None
    image_size: Optional[int] = None
    resize_size: Optional[int] = None
    batch_size: int = 64
    num_workers: int = 2
    download: bool = False


def _open_model(schema: type) -> DictConfig:
    """``schema`` with its ``model`` node out of struct mode (Hydra puts the rest in it)."""
    node = OmegaConf.structured(schema)
    OmegaConf.set_struct(node._get_node("model"), False)  # also where it is None (zoo-eval)
    return node


def register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=_open_model(TrainConf))
    store.store(name="eval_schema", node=_open_model(EvalConf))


register_schemas()


# A YAML file whose anchors and aliases expand to more values than this is refused before
# Hydra reads it: 444 bytes of nested aliases expand to 387 million values ("billion laughs"),
# which OmegaConf would build one by one (over a minute, and the memory for them). The project's largest config has a few hundred.
MAX_YAML_VALUES = 100_000
_CONFIG_FOLDER_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp")


def yaml_values(path: Path) -> int:
    """How many values the YAML file ``path`` holds once its aliases are expanded, counted
    on the composed node graph (where an alias is a reference), without expanding anything."""
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            nodes = list(yaml.compose_all(file, Loader=yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {printable(' '.join(str(err).split()))}") from None
    sizes: dict[int, int] = {}

    def size(node: Any, open_: frozenset[int]) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_:
            raise ConfigError(f"config file {path} refers to itself through a YAML alias")
        inside = open_ | {id(node)}
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k, inside) + size(v, inside) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item, inside) for item in node.value)
        else:
            total = 1
        sizes[id(node)] = min(total, MAX_YAML_VALUES + 1)  # capped: the sum cannot grow huge
        return sizes[id(node)]

    return sum(size(node, frozenset()) for node in nodes)


def check_config_files(argv: list[str]) -> None:
    """Refuse a config folder given on the command line (``--config-dir``/``-cd``,
    ``--config-path``/``-cp``) that holds a YAML file expanding past :data:`MAX_YAML_VALUES`."""
    folders = []
    for i, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if flag in _CONFIG_FOLDER_FLAGS:
            folders.append(value if equals else (argv[i + 1] if i + 1 < len(argv) else ""))
    for folder in filter(None, folders):
        for path in sorted(Path(folder).rglob("*.yaml")) if Path(folder).is_dir() else []:
            if yaml_values(path) > MAX_YAML_VALUES:
                raise ConfigError(
                    f"config file {path} expands to over {MAX_YAML_VALUES:,} values through YAML aliases; refused"
                )


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
    if cfg.test_weights not in ("last", "best"):
        raise ConfigError(f"test_weights must be last or best, got {cfg.test_weights!r}")


def plain(node: Any) -> Any:
    """A resolved config node as plain Python containers (what checkpoints may hold)."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def fit_model_to_data(model_cfg: dict[str, Any], facts: dict[str, Any], data_name: str) -> dict[str, Any]:
    """Fill the model's ``null`` data-dependent options from ``facts``; refuse contradictions.

    Only options the model config has are filled (an MLP has ``image_size``, a ResNet not).
    """
    model_cfg = dict(model_cfg)
    for key, value in facts.items():
        if key not in model_cfg:
            continue
        if model_cfg[key] is None:
            model_cfg[key] = value
        elif model_cfg[key] != value:
            raise ConfigError(
                f"model.{key}={model_cfg[key]} but the data '{data_name}' has {key}={value}; "
                f"set model.{key}=null to take it from the data"
            )
    return model_cfg
