"""Experiment trackers: ``logger=mlflow`` and ``logger=wandb`` log a real run offline, read
back with each tracker's own tools (MLflow's client; W&B's record format), and a resumed
run continues its tracker run."""

from __future__ import annotations

import csv
import glob
import json
import logging
import struct
import time
import zlib
from pathlib import Path

import pytest

from tests.helpers import QUIET, compose_config
from zoo.cli.train import train
from zoo.errors import ConfigError

RUN = ["model=mlp", "sched=step", "sched.step_size=1", "trainer.max_epochs=2", *QUIET]


def csv_column(run_dir: Path, name: str) -> dict[int, float]:
    """``{step: value}`` of one metric in the run's ``csv/metrics.csv``."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return {int(row["step"]): float(row[name]) for row in csv.DictReader(file) if row.get(name)}


def test_mlflow_gets_the_config_and_every_metric_and_a_resume_continues_the_run(tmp_path):
    from mlflow.tracking import MlflowClient

    run_dir, store = tmp_path / "run", tmp_path / "outputs"
    train(compose_config("train", run_dir, [*RUN, "logger=[csv,mlflow]", f"paths.output_dir={store}"]))
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("zoo").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["zoo.run_dir"] == str(run_dir.resolve())
    assert run.data.params["model/name"] == "mlp" and run.data.params["sched/name"] == "step"
    assert "data/batch_size" in run.data.params and "name" not in run.data.params  # the run config only
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/acc")}
    assert history == pytest.approx(csv_column(run_dir, "val/acc"))
    test_acc = json.loads((run_dir / "metrics.json").read_text())["test"]["test/acc"]
    assert run.data.metrics["test/acc"] == pytest.approx(test_acc)

    # One more epoch in the same folder: the same MLflow run gets the new epoch.
    train(compose_config("train", run_dir, [*RUN, "logger=[csv,mlflow]", f"paths.output_dir={store}",
                                           "trainer.max_epochs=3", "resume=true"]))  # fmt: skip
    (resumed,) = client.search_runs([run.info.experiment_id])
    assert resumed.info.run_id == run.info.run_id
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert max(csv_column(run_dir, "val/acc")) in steps and len(set(steps)) == 3


def wandb_records(path: str) -> list:
    """The records of a W&B run file (``run-<id>.wandb``), decoded with W&B's own protobuf
    schema. The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks,
    each ``crc32 (4) | length (2) | type (1) | data`` (full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        if kind == 0 and length == 0:
            break
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == checksum
        pending += chunk
        pos += 7 + length
        if kind in (1, 4):  # full or last: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_logs_offline_without_credentials(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no wandb login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run_dir = tmp_path / "run"
    train(compose_config("train", run_dir, [*RUN, "logger=[csv,wandb]"]))
    (run_file,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    deadline = time.monotonic() + 60  # W&B's writer is a process of its own: the file ends with its exit record
    while (records := wandb_records(run_file))[-1:] == [] or records[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, [r.WhichOneof("record_type") for r in records]
        time.sleep(0.2)
    config, logged = {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if "val/acc" in items:
                logged[items["trainer/global_step"]] = items["val/acc"]
    assert config["model"]["name"] == "mlp" and config["sched"]["name"] == "step", sorted(config)
    assert logged == pytest.approx(csv_column(run_dir, "val/acc"))


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_missing_tracker_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, tracker):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else find_spec(name, *a))
    with pytest.raises(ConfigError, match=rf"logger={tracker} needs {tracker}, which is not installed: pip install 'zoo\[{tracker}\]'"):
        train(compose_config("train", tmp_path, [*RUN, f"logger={tracker}"]))


# The run's files at the end of a run (zoo.loggers.log_run_artifacts), read back with each
# tracker's own tools: MLflow's client, and the offline W&B run's folder and record file.

RUN_FILES = ("config.yaml", "metrics.json", "curves.png")


def write_run_files(run_dir: Path) -> dict[str, bytes]:
    """Small stand-ins for a finished run's files, ``checkpoints/last.ckpt`` among them, as ``{path: bytes}``."""
    contents = {"config.yaml": b"model:\n  name: mlp\n  num_classes: 10\n", "metrics.json": b'{"test": {"test/acc": 0.5}}\n',
                "curves.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "checkpoints/last.ckpt": bytes(range(255, -1, -1)) * 8}  # fmt: skip
    for name, data in contents.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(data)
    return contents


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> Path:
    """One MLflow store for this file's tests: setting up a new SQLite store takes seconds."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.mark.parametrize("log_model", [True, False])
def test_mlflow_keeps_the_run_files_and_with_log_model_the_checkpoint(tmp_path, mlflow_store, log_model):
    from mlflow.tracking import MlflowClient

    from zoo.loggers import log_run_artifacts, mlflow_logger

    run_dir = tmp_path / f"run-{log_model}"
    logger = mlflow_logger(run_dir, mlflow_store, resume=False, log_model=log_model)
    written = write_run_files(run_dir)
    log_run_artifacts([logger], run_dir, run_dir / "checkpoints" / "last.ckpt")

    client = MlflowClient(f"sqlite:///{mlflow_store / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(logger.run_id)}
    logged |= {a.path for a in client.list_artifacts(logger.run_id, "checkpoints")}
    expected = {*RUN_FILES, "checkpoints", "checkpoints/last.ckpt"} if log_model else set(RUN_FILES)
    assert logged == expected
    for path in expected - {"checkpoints"}:
        local = client.download_artifacts(logger.run_id, path, str(tmp_path))
        assert Path(local).read_bytes() == written[path], path


def test_mlflow_creates_its_experiment_without_a_warning(tmp_path, mlflow_store, caplog):
    from mlflow.tracking import MlflowClient

    from zoo.loggers import mlflow_logger

    with caplog.at_level(logging.WARNING):
        logger = mlflow_logger(tmp_path / "run", mlflow_store, resume=False, experiment_name="new-one")
        run_id = logger.run_id  # Lightning starts the run (and would create the experiment) here
    assert caplog.messages == []
    client = MlflowClient(f"sqlite:///{mlflow_store / 'mlflow.db'}")
    assert client.get_run(run_id).info.experiment_id == client.get_experiment_by_name("new-one").experiment_id


def test_mlflow_an_experiment_made_meanwhile_is_kept(mlflow_store):
    from mlflow.tracking import MlflowClient

    from zoo.loggers import _create_experiment

    client = MlflowClient(f"sqlite:///{mlflow_store / 'mlflow.db'}")
    _create_experiment(client, "twice", None)
    _create_experiment(client, "twice", None)  # a sweep's job beside this one was first
    assert client.get_experiment_by_name("twice").lifecycle_stage == "active"


def test_a_file_the_tracker_cannot_take_is_one_warning_and_the_run_goes_on(tmp_path, mlflow_store, caplog):
    from zoo.loggers import log_run_artifacts, mlflow_logger

    run_dir, blocked = tmp_path / "run", tmp_path / "mlartifacts"
    blocked.write_text("a file where MLflow keeps its artifacts")
    logger = mlflow_logger(run_dir, mlflow_store, resume=False, log_model=True,
                           experiment_name="blocked", artifact_location=blocked.as_uri())  # fmt: skip
    write_run_files(run_dir)
    (run_dir / "curves.png").unlink()  # a run without a CSV log has no curves: nothing to log, nothing to warn
    with caplog.at_level(logging.WARNING):
        log_run_artifacts([logger], run_dir, run_dir / "checkpoints" / "best.ckpt")
    assert caplog.messages == [
        f"logger=mlflow: log_model=true, but the run has no checkpoint to log ({run_dir / 'checkpoints' / 'best.ckpt'})",
        f"logger=mlflow: could not log config.yaml (Not a directory: {blocked / logger.run_id}); it stays in {run_dir}",
        f"logger=mlflow: could not log metrics.json (Not a directory: {blocked / logger.run_id}); it stays in {run_dir}",
    ]


def finished_wandb_records(run_dir: Path) -> tuple[Path, list]:
    """The offline W&B run folder under ``run_dir`` and its records, once W&B's writer has ended the file."""
    (run_file,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    deadline = time.monotonic() + 60  # W&B's writer is a process of its own: the file ends with its exit record
    while (records := wandb_records(run_file))[-1:] == [] or records[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, [r.WhichOneof("record_type") for r in records]
        time.sleep(0.2)
    return Path(run_file).parent, records


@pytest.mark.parametrize("log_model", [True, False])
def test_wandb_offline_keeps_the_run_files_and_with_log_model_the_checkpoint(tmp_path, monkeypatch, log_model):
    from zoo.loggers import finish_trackers, log_run_artifacts, wandb_logger

    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no wandb login, so offline
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where an offline artifact waits for wandb sync
    run_dir = tmp_path / "run"
    logger = wandb_logger(run_dir, log_model=log_model)
    written = write_run_files(run_dir)
    log_run_artifacts([logger], run_dir, run_dir / "checkpoints" / "last.ckpt")
    run_id = logger.experiment.id
    finish_trackers([logger])

    folder, records = finished_wandb_records(run_dir)
    saved = {file.path for r in records if r.WhichOneof("record_type") == "files" for file in r.files.files}
    assert {f"zoo/{name}" for name in RUN_FILES} <= saved  # what wandb sync uploads as the run's files
    for name in RUN_FILES:  # copies: the offline run folder holds the files as they were (wandb.save would symlink)
        copy = folder / "files" / "zoo" / name
        assert copy.read_bytes() == written[name] and not copy.is_symlink(), name
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    if not log_model:
        assert artifacts == []
        return
    (artifact,) = artifacts
    assert (artifact.name, artifact.type, list(artifact.aliases)) == (f"model-{run_id}", "model", ["latest"])
    (content,) = artifact.manifest.contents
    assert content.path == "model.ckpt" and content.size == len(written["checkpoints/last.ckpt"])
    assert Path(content.local_path).read_bytes() == written["checkpoints/last.ckpt"]  # the staged copy sync uploads
    assert Path(content.local_path).is_relative_to(tmp_path / "wandb-data")
