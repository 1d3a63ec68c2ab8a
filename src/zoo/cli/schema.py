"""Typed schemas for the top of the Hydra configs, so that Hydra itself rejects an
override of the wrong type (``trainer.max_epochs=ten``) or an unknown key, with its own
message, before anything runs.

The groups whose options depend on the choice (``model``, ``data``, ``optim``, ...) are
dictionaries here; their keys are checked by the constructor they are passed to. The
``model`` node is open: a model config holds only what differs from its constructor's
defaults, and ``model.<argument>=<value>`` sets any other argument without a ``+``
(an unknown one is refused by the model's constructor, in one line).
Unions (``devices: 2`` or ``devices: [0, 1]``) are typed ``Any``, as OmegaConf has no
union types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035  (OmegaConf reads typing generics)

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


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
