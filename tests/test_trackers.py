"""Experiment trackers: ``logger=mlflow`` and ``logger=wandb`` log a real run offline, read
back with each tracker's own tools (MLflow's client; W&B's record format), and a resumed
run continues its tracker run."""

from __future__ import annotations

import csv
import glob
import json
import struct
import time
import zlib
from pathlib import Path

import pytest

from helpers import QUIET, compose_config
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
